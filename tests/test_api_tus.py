"""tus 1.0.0 over the files store, in process: core, creation, defer-length, termination,
expiration, concatenation, checksum, and tus uploads as ordinary files."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace

from filesvc import jobqueue
from filesvc.appkeys import DATABASE
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import Api
from tests.tus_helpers import PATCH_TYPE, auth, meta, uploads


async def _create(api: Api, length: int | None, **headers: str) -> str:
    extra = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    resp = await api.client.post(uploads(), headers=auth(**extra, **headers))
    assert resp.status == 201, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith(uploads() + "/")
    return location


async def _patch(api: Api, url: str, offset: int, data: bytes, **headers: str) -> int:
    resp = await api.client.patch(
        url, data=data, headers=auth(**PATCH_TYPE, **{"Upload-Offset": str(offset)}, **headers)
    )
    assert resp.headers["Tus-Resumable"] == "1.0.0"
    return resp.status


async def _offset(api: Api, url: str) -> int:
    resp = await api.client.head(url, headers=auth())
    assert resp.status == 200
    return int(resp.headers["Upload-Offset"])


async def test_options_advertises_the_protocol(api: Api) -> None:
    resp = await api.client.options(uploads())
    assert resp.status == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert set(resp.headers["Tus-Extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "concatenation",
        "checksum",
    }
    assert int(resp.headers["Tus-Max-Size"]) == 64 << 20
    assert "sha1" in resp.headers["Tus-Checksum-Algorithm"].split(",")


async def test_upload_in_patches_is_an_ordinary_file(api: Api) -> None:
    data = bytes(range(256)) * 4000
    url = await _create(
        api,
        len(data),
        **{"Upload-Metadata": meta(filename="a.bin", filetype="application/x-test", other="x")},
    )
    file_id = url.rsplit("/", 1)[1]
    resp = await api.meta(file_id)
    body = await resp.json()
    assert body["resource"]["metadata"]["name"] == "a.bin"
    assert body["resource"]["metadata"]["mime"] == "application/x-test"
    assert body["resource"]["upload_data"]["complete"] is False
    head = await api.client.head(url, headers=auth())
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Cache-Control"] == "no-store"
    assert "Upload-Expires" in head.headers
    step = 300_000
    for start in range(0, len(data), step):
        assert await _patch(api, url, start, data[start : start + step]) == 204
        assert await _offset(api, url) == min(start + step, len(data))
    body = await (await api.meta(file_id)).json()
    assert body["resource"]["upload_data"]["uploaded_size"] == len(data)
    assert body["resource"]["upload_data"]["complete"] is True
    assert await api.content(file_id) == data


async def test_offset_mismatch_is_409_and_stores_nothing(api: Api) -> None:
    url = await _create(api, 10)
    assert await _patch(api, url, 0, b"12345") == 204
    assert await _patch(api, url, 0, b"12345") == 409
    assert await _patch(api, url, 7, b"678") == 409
    assert await _offset(api, url) == 5


async def test_chunked_patch_stores_exactly_the_bytes_sent(api: Api) -> None:
    # No Content-Length: the body comes in HTTP chunks of many sizes, whose ends the server's
    # reader marks with empty pieces; none of them may end the upload early or add a byte.
    data = os.urandom(3 * (1 << 20) + 5)
    sizes = [1, 250_000, 65_537, 3, 1 << 20]

    async def body() -> AsyncIterator[bytes]:
        pos = k = 0
        while pos < len(data):
            n = sizes[k % len(sizes)]
            yield data[pos : pos + n]
            pos, k = pos + n, k + 1

    url = await _create(api, len(data))
    resp = await api.client.patch(
        url, data=body(), headers=auth(**PATCH_TYPE, **{"Upload-Offset": "0"})
    )
    assert resp.status == 204, await resp.text()
    assert resp.headers["Upload-Offset"] == str(len(data))
    assert await api.content(url.rsplit("/", 1)[1]) == data


async def test_creation_with_upload_completes_in_one_request(api: Api) -> None:
    resp = await api.client.post(
        uploads(), data=b"hello", headers=auth(**PATCH_TYPE, **{"Upload-Length": "5"})
    )
    assert resp.status == 201
    assert resp.headers["Upload-Offset"] == "5"
    file_id = resp.headers["Location"].rsplit("/", 1)[1]
    assert await api.content(file_id) == b"hello"


async def test_deferred_length_arrives_with_a_patch(api: Api) -> None:
    url = await _create(api, None)
    head = await api.client.head(url, headers=auth())
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers
    assert await _patch(api, url, 0, b"abc") == 204
    assert await _patch(api, url, 3, b"def", **{"Upload-Length": "6"}) == 204
    head = await api.client.head(url, headers=auth())
    assert head.headers["Upload-Length"] == "6"
    assert await api.content(url.rsplit("/", 1)[1]) == b"abcdef"


async def test_empty_upload_is_complete_at_creation(api: Api) -> None:
    url = await _create(api, 0)
    assert await api.content(url.rsplit("/", 1)[1]) == b""


async def test_termination_deletes_the_file(api: Api) -> None:
    url = await _create(api, 10)
    resp = await api.client.delete(url, headers=auth())
    assert resp.status == 204
    assert (await api.client.head(url, headers=auth())).status == 404
    assert (await api.meta(url.rsplit("/", 1)[1])).status == 404


async def test_checksum_verified_and_mismatch_keeps_nothing(api: Api) -> None:
    url = await _create(api, 8)
    good = base64.b64encode(hashlib.sha1(b"abcd", usedforsecurity=False).digest()).decode()
    bad = base64.b64encode(hashlib.sha1(b"zzzz", usedforsecurity=False).digest()).decode()
    assert await _patch(api, url, 0, b"abcd", **{"Upload-Checksum": f"sha1 {good}"}) == 204
    resp = await api.client.patch(
        url,
        data=b"efgh",
        headers=auth(**PATCH_TYPE, **{"Upload-Offset": "4", "Upload-Checksum": f"sha1 {bad}"}),
    )
    assert resp.status == 460
    assert (await resp.json())["error"] == "Checksum Mismatch"
    assert await _offset(api, url) == 4


async def test_concatenation_joins_partials_without_copying(api: Api) -> None:
    parts = [b"A" * 70_000, b"B" * 5, b"C" * 1234]
    urls = []
    for part in parts:
        url = await _create(api, len(part), **{"Upload-Concat": "partial"})
        assert await _patch(api, url, 0, part) == 204
        urls.append(url)
    app = api.client.app
    assert app is not None
    async with app[DATABASE].read() as tx:
        # a complete partial upload is only a part: no thumbnail job is queued for it
        assert [await jobqueue.generation(tx, u.rsplit("/", 1)[1]) for u in urls] == [None] * 3
    resp = await api.client.post(
        uploads(),
        headers=auth(
            **{
                "Upload-Concat": "final;" + " ".join(urls),
                "Upload-Metadata": meta(filename="joined.txt"),
            }
        ),
    )
    assert resp.status == 201, await resp.text()
    final = resp.headers["Location"]
    head = await api.client.head(final, headers=auth())
    assert head.headers["Upload-Concat"].startswith("final;")
    assert head.headers["Upload-Length"] == str(sum(map(len, parts)))
    file_id = final.rsplit("/", 1)[1]
    assert await api.content(file_id) == b"".join(parts)
    body = await (await api.meta(file_id)).json()
    assert body["resource"]["metadata"]["name"] == "joined.txt"
    # the partial uploads are consumed by the final one
    assert (await api.client.head(urls[0], headers=auth())).status == 404
    assert await _patch(api, final, int(head.headers["Upload-Offset"]), b"x") == 403


async def test_another_company_cannot_see_the_upload(api: Api) -> None:
    url = await _create(api, 10)
    other = url.replace("/companies/acme/", "/companies/globex/")
    resp = await api.client.head(other, headers=auth("globex"))
    assert resp.status == 404
    resp = await api.client.head(url, headers=auth("globex"))
    assert resp.status == 403


async def test_expired_upload_is_gone(make_api: AppFactory, settings: Settings) -> None:
    api = await make_api(settings_=replace(settings, tus_expiry=0.0))
    url = await _create(api, 10)
    resp = await api.client.head(url, headers=auth())
    assert resp.status == 410


async def test_cors_for_an_allowed_origin_only(make_api: AppFactory, settings: Settings) -> None:
    api = await make_api(settings_=replace(settings, cors_origins=("https://app.example",)))
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "PATCH"}
    resp = await api.client.options(uploads(), headers=pre)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
    assert "Upload-Offset" in resp.headers["Access-Control-Allow-Headers"]
    resp = await api.client.post(
        uploads(), headers={**auth(**{"Upload-Length": "1"}), "Origin": "https://app.example"}
    )
    assert "Upload-Offset" in resp.headers["Access-Control-Expose-Headers"]
    assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    resp = await api.client.options(uploads(), headers={**pre, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_no_origin_is_allowed_by_default(api: Api) -> None:
    resp = await api.client.options(
        uploads(),
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert resp.headers["Tus-Resumable"] == "1.0.0"


async def test_tus_bytes_count_in_the_upload_metrics(api: Api) -> None:
    before = await (await api.client.get("/metrics")).text()
    await api.client.post(
        uploads(), data=b"m" * 10, headers=auth(**PATCH_TYPE, **{"Upload-Length": "10"})
    )
    after = await (await api.client.get("/metrics")).text()

    def upload_bytes(text: str) -> float:
        lines = [x for x in text.splitlines() if x.startswith("filesvc_upload_bytes_total ")]
        return float(lines[0].split()[1]) if lines else 0.0

    assert upload_bytes(after) - upload_bytes(before) == 10
