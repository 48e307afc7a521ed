"""Every input a client controls, broken or hostile, with the exact status and message."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
from aiohttp import web

from blobstore.local_staging import LocalStaging
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import PREFIX, Api, error_of


async def created(api: Api, **params: str) -> str:
    return str((await api.create({"filename": "x", **params}))["id"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"total_chunks": "abc"},
            "query parameter 'total_chunks' must be a whole number, got 'abc'",
        ),
        ({"total_chunks": "0"}, "query parameter 'total_chunks' must be at least 1, got 0"),
        ({"totalChunks": "-3"}, "query parameter 'totalChunks' must be a whole number, got '-3'"),
        (
            {"total_chunks": "1.5"},
            "query parameter 'total_chunks' must be a whole number, got '1.5'",
        ),
        ({"total_chunks": "100001"}, "total chunks must be at most 100000"),
        ({"total_size": "-1"}, "query parameter 'total_size' must be a whole number, got '-1'"),
        ({"total_size": "1e9"}, "query parameter 'total_size' must be a whole number, got '1e9'"),
        (
            {"resumableTotalSize": ""},
            "query parameter 'resumableTotalSize' must be a whole number, got ''",
        ),
        (
            {"total_size": "9" * 40},
            "query parameter 'total_size' must be a whole number, got '" + "9" * 40 + "'",
        ),
        ({"chunk_number": "0"}, "query parameter 'chunk_number' must be at least 1, got 0"),
        (
            {"chunk_number": "4", "total_chunks": "3"},
            "chunk number 4 is out of range: the file has 3 chunks",
        ),
        (
            {"thumbnail_sync": "maybe"},
            "query parameter 'thumbnail_sync' must be 1, 0, true or false",
        ),
        (
            {"filename": "evil\r\nX-Injected: 1"},
            "query parameter 'filename' must not contain control characters",
        ),
        (
            {"filename": "nul\x00.txt"},
            "query parameter 'filename' must not contain control characters",
        ),
        ({"filename": "a" * 1025}, "query parameter 'filename' is longer than 1024 characters"),
        (
            {"type": "not a mime"},
            "query parameter 'type' must be a media type such as image/png, got 'not a mime'",
        ),
        (
            {"resumableType": "text/html\r\nX: y"},
            "query parameter 'resumableType' must be a media type such as image/png, got 'text/html\\r\\nX: y'",
        ),
    ],
)
async def test_bad_query_parameters_are_400(api: Api, params: dict[str, str], message: str) -> None:
    resp = await api.client.post(api.files(), params=params, headers=api.headers())
    assert await error_of(resp) == (400, message)


async def test_chunk_number_beyond_stored_total_is_400(api: Api) -> None:
    fid = await created(api, total_chunks="2")
    resp = await api.chunk(fid, b"x", {"chunk_number": "3"})
    assert await error_of(resp) == (400, "chunk number 3 is out of range: the file has 2 chunks")
    resp = await api.chunk(fid, b"x", {"chunk_number": "1", "total_chunks": "5"})
    assert await error_of(resp) == (400, "total chunks 5 does not match the file's 2")
    resp = await api.chunk(fid, b"x", {"chunk_number": "1", "total_size": "5"})
    assert resp.status == 200
    resp = await api.chunk(fid, b"x", {"chunk_number": "2", "total_size": "6"})
    assert await error_of(resp) == (400, "total size 6 does not match the file's 5 bytes")


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-uuid",
        "..%2F..%2Fetc%2Fpasswd",
        "0" * 40,
        "%00",
        "12345678-1234-1234-1234-12345678901g",
    ],
)
async def test_malformed_file_ids_are_400(api: Api, bad_id: str) -> None:
    for method, suffix in [("GET", ""), ("POST", ""), ("DELETE", ""), ("GET", "/download")]:
        resp = await api.client.request(
            method, f"{PREFIX}/companies/acme/files/{bad_id}{suffix}", headers=api.headers()
        )
        if resp.status == 404:  # the router did not match at all: still the envelope
            assert (await error_of(resp))[0] == 404
            continue
        assert await error_of(resp) == (400, "file id must be a UUID"), (method, suffix)


async def test_unknown_file_is_404(api: Api) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method, suffix in [
        ("GET", ""),
        ("DELETE", ""),
        ("GET", "/download"),
        ("GET", "/thumbnails/0"),
    ]:
        resp = await api.client.request(
            method, f"{api.files()}/{missing}{suffix}", headers=api.headers()
        )
        assert await error_of(resp) == (404, "no such file in this company"), (method, suffix)
    resp = await api.chunk(missing, b"x", {})
    assert await error_of(resp) == (404, "no such file in this company")


async def test_bad_thumbnail_index(api: Api) -> None:
    res = await api.upload(b"x")
    for index, expected in [("abc", 400), ("-1", 400), ("9999999", 400), ("3", 404)]:
        resp = await api.client.get(
            f"{api.files()}/{res['id']}/thumbnails/{index}", headers=api.headers()
        )
        assert resp.status == expected, index
        await error_of(resp)


def raw_multipart(body: bytes, boundary: str = "XyZ") -> tuple[bytes, dict[str, str]]:
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def post_raw(
    api: Api, body: bytes, headers: dict[str, str], fid: str | None = None
) -> tuple[int, str]:
    url = api.files() if fid is None else f"{api.files()}/{fid}"
    resp = await api.client.post(url, data=body, headers=api.headers(**headers))
    return await error_of(resp)


async def test_multipart_without_boundary(api: Api) -> None:
    assert await post_raw(api, b"--x\r\n", {"Content-Type": "multipart/form-data"}) == (
        400,
        "malformed multipart body: missing or invalid boundary",
    )


async def test_truncated_multipart_stores_nothing(api: Api, settings: Settings) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"A" * 100_000
    )
    status, message = await post_raw(api, *raw_multipart(body))
    assert status == 400
    assert message == "malformed multipart body: the body ended before the closing boundary"
    assert await count_files(api) == 0


async def test_multipart_without_file_part(api: Api) -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ--\r\n'
    assert await post_raw(api, *raw_multipart(body)) == (
        400,
        "the multipart body has no file part (send it as part 'file')",
    )


async def test_multipart_with_huge_form_fields_is_refused(api: Api) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
        + b"n" * 100_000
        + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nA\r\n--XyZ--\r\n'
    )
    assert await post_raw(api, *raw_multipart(body)) == (
        400,
        "form fields before the file part are too large",
    )


async def test_multipart_fields_before_file_and_utf8_filename(api: Api) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="upload"; filename="r\xc3\xa9sum\xc3\xa9.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\ncontent\r\n--XyZ--\r\n"
    )
    resp = await api.client.post(
        api.files(), data=body, headers=api.headers(**raw_multipart(body)[1])
    )
    assert resp.status == 200, await resp.text()
    res = (await resp.json())["resource"]
    assert res["metadata"]["name"] == "résumé.txt" and res["metadata"]["mime"] == "text/plain"
    assert await api.content(res["id"]) == b"content"


async def test_part_filename_with_control_characters(api: Api) -> None:
    raw = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a\x07b"\r\n\r\nA\r\n--XyZ--\r\n'
    assert await post_raw(api, *raw_multipart(raw)) == (
        400,
        "malformed multipart body: the body is not valid multipart/form-data",
    )
    encoded = (
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''a%0D%0Ab\r\n"
        b"\r\nA\r\n--XyZ--\r\n"
    )
    assert await post_raw(api, *raw_multipart(encoded)) == (
        400,
        "the file part's filename must not contain control characters",
    )


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/json", "image/png", "application/x-www-form-urlencoded"]
)
async def test_wrong_body_kind_is_415(api: Api, ctype: str) -> None:
    assert await post_raw(api, b"some bytes", {"Content-Type": ctype}) == (
        415,
        "send the file as multipart/form-data (part 'file') or as application/octet-stream",
    )
    fid = await created(api)
    assert (await post_raw(api, b"some bytes", {"Content-Type": ctype}, fid))[0] == 415


async def test_chunk_without_body_is_400(api: Api) -> None:
    fid = await created(api)
    # No Content-Type at all (aiohttp's client would add application/octet-stream by itself,
    # which is an explicit empty chunk).
    resp = await api.client.post(
        f"{api.files()}/{fid}", headers=api.headers(), skip_auto_headers=["Content-Type"]
    )
    assert await error_of(resp) == (
        400,
        "the chunk's bytes are missing: send them as part 'file' or raw body",
    )


async def test_over_the_size_limit_is_413_while_streaming(
    make_api: AppFactory, settings: Settings
) -> None:
    small = Settings(
        data_dir=settings.data_dir, jwt_secret=settings.jwt_secret, max_upload_bytes=100_000
    )
    api = await make_api(settings_=small)

    async def chunked_body() -> (
        object
    ):  # no Content-Length: only counting while streaming catches it
        for _ in range(10):
            yield b"z" * 50_000

    resp = await api.client.post(
        api.files(),
        data=chunked_body(),
        params={"filename": "big"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert await error_of(resp) == (413, "the upload is larger than the limit of 100000 bytes")
    resp = await api.client.post(
        api.files(),
        data=b"z" * 300_000,
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert await error_of(resp) == (413, "the upload is larger than the limit of 100000 bytes")
    assert await count_files(api) == 0


async def count_files(api: Api) -> int:
    from filesvc import repo
    from filesvc.appkeys import DATABASE

    app = api.client.app
    assert app is not None
    async with app[DATABASE].read() as tx:
        return await repo.count(tx)


@pytest.mark.local_blobs
async def test_disk_full_is_507_and_leaves_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    def full(self: LocalStaging, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStaging, "_write_all", full)
    resp = await api.client.post(
        api.files(),
        data=io.BytesIO(os.urandom(3 << 20)),
        params={"filename": "f"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert await error_of(resp) == (
        507,
        "the file store is full: nothing was saved; retry once space is freed",
    )
    assert await count_files(api) == 0
    tmp = settings.data_dir / "blobs" / "tmp"
    assert [p for p in await _listdir(tmp)] == []


@pytest.mark.blob_files
@pytest.mark.local_blobs
async def test_storage_failure_is_never_200(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: LocalStaging, data: bytes) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(LocalStaging, "_write_all", broken)
    resp = await api.client.post(
        api.files(),
        data=b"abc",
        params={"filename": "f"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    status, message = await error_of(resp)
    assert (status, message) == (500, "the file store failed: nothing was saved; retry later")
    assert "/" not in message.replace("/", "", 0) or "tmp" not in message


async def _listdir(path: Path) -> list[str]:
    import asyncio

    return await asyncio.to_thread(lambda: sorted(os.listdir(path)))


async def test_unknown_routes_and_methods_use_the_envelope(api: Api) -> None:
    resp = await api.client.get("/nope")
    assert await error_of(resp) == (404, "no route matches this path")
    resp = await api.client.put(api.files(), headers=api.headers())
    assert await error_of(resp) == (405, "this method is not allowed on this path")
    assert "POST" in resp.headers["Allow"]


async def test_internal_errors_hide_details(make_api: AppFactory) -> None:
    api = await make_api()
    app = api.client.app
    assert app is not None

    async def explode(request: web.Request) -> web.Response:
        raise RuntimeError("secret path /var/lib/filesvc/data and key hunter2")

    app.router._frozen = False  # the test adds one route to a running app
    app.router.add_get("/boom", explode)
    resp = await api.client.get("/boom")
    status, message = await error_of(resp)
    assert (status, message) == (500, "internal error; it has been logged")
    text = await resp.text()
    assert "hunter2" not in text and "/var/lib" not in text and "Traceback" not in text


async def test_too_many_uploads_at_once_are_shed_with_503(
    make_api: AppFactory, settings: Settings
) -> None:
    import asyncio
    from collections.abc import AsyncIterator

    import aiohttp

    small = Settings(
        data_dir=settings.data_dir, jwt_secret=settings.jwt_secret, max_concurrent_uploads=2
    )
    api = await make_api(settings_=small)
    release = asyncio.Event()
    started = [asyncio.Event(), asyncio.Event()]

    async def held(i: int) -> AsyncIterator[bytes]:
        yield b"first half "
        started[i].set()
        await release.wait()
        yield b"second half"

    async def post(data: AsyncIterator[bytes]) -> aiohttp.ClientResponse:
        return await api.client.post(
            api.files(),
            data=data,
            params={"filename": "x"},
            headers=api.headers(**{"Content-Type": "application/octet-stream"}),
        )

    slow = [asyncio.ensure_future(post(held(i))) for i in range(2)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 5)
    resp = await api.client.post(
        api.files(),
        data=b"third",
        params={"filename": "x"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert await error_of(resp) == (503, "the server is busy with other uploads; retry in a moment")
    assert resp.headers["Retry-After"] == "1"
    # Creating without a body takes no slot.
    assert (
        await api.client.post(api.files(), params={"filename": "y"}, headers=api.headers())
    ).status == 200
    release.set()
    for fut in slow:
        assert (await fut).status == 200
    assert await api.upload(b"after") is not None
