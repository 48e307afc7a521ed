"""Every tus header with hostile values: the exact status and message, never a 500, and nothing
stored by a refused request."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import Api, error_of
from tests.tus_helpers import PATCH_TYPE, auth, meta, uploads

B64 = base64.b64encode
OTHER = "0f6ad2c4-5d1e-4b7a-9c3e-2a8b7d6e1f00"  # an id no upload has: fixed, so test ids are stable

# (headers beyond the token, status, message)
CREATION: list[tuple[dict[str, str], int, str]] = [
    (
        {"Tus-Resumable": "", "Upload-Length": "1"},
        412,
        "tus version '' is not supported: send Tus-Resumable: 1.0.0",
    ),
    (
        {"Tus-Resumable": "0.2.2", "Upload-Length": "1"},
        412,
        "tus version '0.2.2' is not supported: send Tus-Resumable: 1.0.0",
    ),
    (
        {"Upload-Length": "-1"},
        400,
        "Upload-Length must be a non-negative integer of at most 19 digits",
    ),
    (
        {"Upload-Length": "1e3"},
        400,
        "Upload-Length must be a non-negative integer of at most 19 digits",
    ),
    (
        {"Upload-Length": "99999999999999999999"},
        400,
        "Upload-Length must be a non-negative integer of at most 19 digits",
    ),
    (
        {"Upload-Length": ""},
        400,
        "Upload-Length must be a non-negative integer of at most 19 digits",
    ),
    (
        {"Upload-Length": str((64 << 20) + 1)},
        413,
        "Upload-Length is over the largest upload, 67108864 bytes",
    ),
    ({}, 400, "Upload-Length header missing (or send Upload-Defer-Length: 1)"),
    (
        {"Upload-Length": "5", "Upload-Defer-Length": "1"},
        400,
        "send Upload-Length or Upload-Defer-Length, not both",
    ),
    ({"Upload-Defer-Length": "2"}, 400, "Upload-Defer-Length must be 1"),
    (
        {"Upload-Length": "5", "Upload-Metadata": "filename !!!"},
        400,
        "Upload-Metadata value of 'filename' is not valid base64",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": "filename " + B64(b"\xff\xfe").decode()},
        400,
        "Upload-Metadata value of 'filename' is not UTF-8 text",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": "filetype " + B64(b"\xc3(").decode()},
        400,
        "Upload-Metadata value of 'filetype' is not UTF-8 text",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": "x eA==,x eA=="},
        400,
        "Upload-Metadata names key 'x' twice",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": "a b c"},
        400,
        "Upload-Metadata must be comma-separated 'key base64value' pairs",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": ",,"},
        400,
        "Upload-Metadata must be comma-separated 'key base64value' pairs",
    ),
    ({"Upload-Length": "5", "Upload-Metadata": "other " + B64(b"\xff").decode() + ",k"}, 201, ""),
    (
        {"Upload-Length": "5", "Upload-Metadata": meta(filename="a\x00b")},
        400,
        "the Upload-Metadata filename must not contain control characters",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": meta(filename="x" * 1100)},
        400,
        "the Upload-Metadata filename is longer than 1024 characters",
    ),
    (
        {"Upload-Length": "5", "Upload-Metadata": meta(filetype="not a type")},
        400,
        "the Upload-Metadata filetype must be a media type such as image/png, got 'not a type'",
    ),
    ({"Upload-Concat": "whole"}, 400, "Upload-Concat must be 'partial' or 'final;<upload URLs>'"),
    ({"Upload-Concat": "final;"}, 400, "a final upload names at least one partial upload"),
    (
        {"Upload-Concat": "final;/elsewhere/" + OTHER},
        400,
        "Upload-Concat names an upload that is not of this company",
    ),
    (
        {"Upload-Concat": f"final;{uploads('globex')}/{OTHER}"},
        400,
        "Upload-Concat names an upload that is not of this company",
    ),
    ({"Upload-Concat": f"final;{uploads()}/not-a-uuid"}, 400, "file id must be a UUID"),
    (
        {"Upload-Concat": f"final;{uploads()}/{OTHER} {uploads()}/{OTHER}"},
        400,
        "Upload-Concat names one partial upload twice",
    ),
    (
        {"Upload-Concat": f"final;{uploads()}/{OTHER}", "Upload-Length": "3"},
        400,
        "a final upload takes its length from its partial uploads",
    ),
    (
        {"Upload-Concat": f"final;{uploads()}/{OTHER}"},
        400,
        "Upload-Concat names an upload that is not a partial upload",
    ),
]


def _ids(cases: list[tuple[dict[str, str], int, str]]) -> list[str]:
    return [" ".join(f"{k}={v[:24]!r}" for k, v in c[0].items()) or "none" for c in cases]


@pytest.mark.parametrize(("headers", "status", "message"), CREATION, ids=_ids(CREATION))
async def test_creation_headers(
    api: Api, headers: dict[str, str], status: int, message: str
) -> None:
    resp = await api.client.post(uploads(), headers=auth(**headers))
    if status == 201:
        assert resp.status == 201
        return
    assert await error_of(resp) == (status, message)
    assert resp.headers["Tus-Resumable"] == "1.0.0"


async def test_creation_without_tus_resumable_is_412(api: Api) -> None:
    headers = auth(**{"Upload-Length": "1"})
    del headers["Tus-Resumable"]
    resp = await api.client.post(uploads(), headers=headers)
    assert await error_of(resp) == (
        412,
        "Tus-Resumable header missing: this endpoint speaks tus 1.0.0",
    )
    assert resp.headers["Tus-Version"] == "1.0.0"


async def test_final_upload_of_an_incomplete_partial_is_400(api: Api) -> None:
    resp = await api.client.post(
        uploads(), headers=auth(**{"Upload-Concat": "partial", "Upload-Length": "9"})
    )
    url = resp.headers["Location"]
    resp = await api.client.post(uploads(), headers=auth(**{"Upload-Concat": f"final;{url}"}))
    assert await error_of(resp) == (
        400,
        "Upload-Concat names a partial upload that is not complete",
    )


CHECKSUMS: list[tuple[str, int, str]] = [
    (
        "md4 AAAA",
        400,
        "checksum algorithm 'md4' is not supported: use one of sha1, sha256, sha512, md5",
    ),
    ("sha1", 400, "Upload-Checksum must be '<algorithm> <base64 digest>'"),
    ("sha1 !!!!", 400, "Upload-Checksum digest is not valid base64"),
    ("sha1 AAAA", 400, "Upload-Checksum digest has the wrong length for sha1"),
    (
        "sha1 " + B64(b"\x00" * 20).decode(),
        460,
        "the bytes do not match the sha1 checksum sent: nothing of this request was kept;"
        " send them again",
    ),
]


@pytest.mark.parametrize(("value", "status", "message"), CHECKSUMS)
async def test_checksum_header(api: Api, value: str, status: int, message: str) -> None:
    resp = await api.client.post(uploads(), headers=auth(**{"Upload-Length": "4"}))
    url = resp.headers["Location"]
    resp = await api.client.patch(
        url,
        data=b"abcd",
        headers=auth(**PATCH_TYPE, **{"Upload-Offset": "0", "Upload-Checksum": value}),
    )
    assert await error_of(resp) == (status, message)
    head = await api.client.head(url, headers=auth())
    assert head.headers["Upload-Offset"] == "0"


async def test_creation_with_upload_checksum_mismatch_stores_nothing(api: Api) -> None:
    resp = await api.client.post(
        uploads(),
        data=b"abcd",
        headers=auth(
            **PATCH_TYPE,
            **{"Upload-Length": "4", "Upload-Checksum": "sha1 " + B64(b"\x01" * 20).decode()},
        ),
    )
    assert resp.status == 460


PATCHES: list[tuple[dict[str, str], bytes, int, str]] = [
    (
        {"Upload-Offset": "0"},
        b"ab",
        415,
        "send the upload's bytes as Content-Type: application/offset+octet-stream",
    ),
    (
        {**PATCH_TYPE},
        b"ab",
        400,
        "Upload-Offset header missing: send the offset the bytes start at",
    ),
    (
        {**PATCH_TYPE, "Upload-Offset": "-1"},
        b"ab",
        400,
        "Upload-Offset must be a non-negative integer of at most 19 digits",
    ),
    (
        {**PATCH_TYPE, "Upload-Offset": "0x0"},
        b"ab",
        400,
        "Upload-Offset must be a non-negative integer of at most 19 digits",
    ),
    (
        {**PATCH_TYPE, "Upload-Offset": "3"},
        b"ab",
        409,
        "Upload-Offset 3 does not match the upload's offset 0",
    ),
    (
        {**PATCH_TYPE, "Upload-Offset": "0"},
        b"x" * 11,
        413,
        "the body would take the upload past its Upload-Length of 10 bytes",
    ),
    (
        {**PATCH_TYPE, "Upload-Offset": "0", "Upload-Length": "11"},
        b"ab",
        400,
        "Upload-Length 11 differs from the upload's length 10",
    ),
    (
        {**PATCH_TYPE, "Upload-Offset": "0", "Tus-Resumable": "2.0.0"},
        b"ab",
        412,
        "tus version '2.0.0' is not supported: send Tus-Resumable: 1.0.0",
    ),
]


@pytest.mark.parametrize(("headers", "data", "status", "message"), PATCHES)
async def test_patch_headers(
    api: Api, headers: dict[str, str], data: bytes, status: int, message: str
) -> None:
    resp = await api.client.post(uploads(), headers=auth(**{"Upload-Length": "10"}))
    url = resp.headers["Location"]
    resp = await api.client.patch(url, data=data, headers=auth(**headers))
    assert await error_of(resp) == (status, message)
    head = await api.client.head(url, headers=auth())
    assert head.headers["Upload-Offset"] == "0"


async def test_patch_targets(api: Api) -> None:
    body = {**PATCH_TYPE, "Upload-Offset": "0"}
    resp = await api.client.patch(f"{uploads()}/not-a-uuid", data=b"a", headers=auth(**body))
    assert await error_of(resp) == (400, "file id must be a UUID")
    resp = await api.client.patch(f"{uploads()}/{OTHER}", data=b"a", headers=auth(**body))
    assert await error_of(resp) == (404, "no such upload in this company")
    resp = await api.client.patch(
        f"{uploads()}/{OTHER}", data=b"a", headers={**PATCH_TYPE, "Tus-Resumable": "1.0.0"}
    )
    status, _ = await error_of(resp)
    assert status == 401


async def test_deferred_length_below_the_offset_is_400(api: Api) -> None:
    resp = await api.client.post(uploads(), headers=auth(**{"Upload-Defer-Length": "1"}))
    url = resp.headers["Location"]
    ok = await api.client.patch(
        url, data=b"abcd", headers=auth(**PATCH_TYPE, **{"Upload-Offset": "0"})
    )
    assert ok.status == 204
    resp = await api.client.patch(
        url, data=b"", headers=auth(**PATCH_TYPE, **{"Upload-Offset": "4", "Upload-Length": "2"})
    )
    assert await error_of(resp) == (
        400,
        "Upload-Length 2 is less than the bytes already uploaded, 4",
    )


@pytest.mark.parametrize("method", ["HEAD", "DELETE"])
async def test_head_and_delete_need_tus_resumable(api: Api, method: str) -> None:
    resp = await api.client.post(uploads(), headers=auth(**{"Upload-Length": "10"}))
    url = resp.headers["Location"]
    headers = auth()
    del headers["Tus-Resumable"]
    resp = await api.client.request(method, url, headers=headers)
    assert resp.status == 412
    assert resp.headers["Tus-Version"] == "1.0.0"


async def test_a_deferred_upload_stops_at_tus_max_size(
    make_api: AppFactory, settings: Settings
) -> None:
    api = await make_api(settings_=replace(settings, max_upload_bytes=1000))
    resp = await api.client.post(uploads(), headers=auth(**{"Upload-Defer-Length": "1"}))
    url = resp.headers["Location"]
    ok = await api.client.patch(
        url, data=b"x" * 600, headers=auth(**PATCH_TYPE, **{"Upload-Offset": "0"})
    )
    assert ok.status == 204
    resp = await api.client.patch(
        url, data=b"y" * 600, headers=auth(**PATCH_TYPE, **{"Upload-Offset": "600"})
    )
    assert await error_of(resp) == (
        413,
        "the body would take the upload past Tus-Max-Size, 1000 bytes",
    )

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"z" * 100

    resp = await api.client.patch(
        url, data=chunked(), headers=auth(**PATCH_TYPE, **{"Upload-Offset": "600"})
    )
    assert await error_of(resp) == (
        413,
        "the body is longer than the 400 bytes the upload has room for",
    )
    head = await api.client.head(url, headers=auth())
    assert head.headers["Upload-Offset"] == "600"
