"""Download rules: headers, ranges, conditional requests, incomplete files, many chunks."""

from __future__ import annotations

import os

import pytest

from tests.helpers import Api, error_of


async def chunked(api: Api, parts: list[bytes], name: str = "f.bin") -> str:
    res = await api.create(
        {"filename": name, "total_chunks": str(len(parts)), "total_size": str(sum(map(len, parts)))}
    )
    for k, part in enumerate(parts, 1):
        assert (await api.chunk(res["id"], part, {"chunk_number": str(k)})).status == 200
    return str(res["id"])


async def test_headers(api: Api) -> None:
    res = await api.upload(b"%PDF-1.4 fake", params={"filename": 'Relevé 2026 "final".pdf'})
    resp = await api.download(res["id"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Content-Length"] == "13"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Disposition"] == (
        'attachment; filename="Relev_ 2026 _final_.pdf"; '
        "filename*=UTF-8''Relev%C3%A9%202026%20%22final%22.pdf"
    )
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert "xxh3" not in etag


async def test_etag_changes_with_content_and_304(api: Api) -> None:
    a = await api.upload(b"one")
    b = await api.upload(b"two")
    ea = (await api.download(a["id"])).headers["ETag"]
    eb = (await api.download(b["id"])).headers["ETag"]
    assert ea != eb
    resp = await api.download(a["id"], **{"If-None-Match": ea})
    assert resp.status == 304 and await resp.read() == b"" and resp.headers["ETag"] == ea
    resp = await api.download(a["id"], **{"If-None-Match": f'"nope", {ea}'})
    assert resp.status == 304
    resp = await api.download(a["id"], **{"If-None-Match": eb})
    assert resp.status == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=99990-", 99990, 100000),
        ("bytes=-5", 99995, 100000),
        ("bytes=99990-200000", 99990, 100000),
        ("bytes=-200000", 0, 100000),
    ],
)
async def test_single_ranges(api: Api, header: str, start: int, end: int) -> None:
    data = os.urandom(100_000)
    fid = await chunked(api, [data[:33_333], data[33_333:66_000], data[66_000:]])
    resp = await api.download(fid, Range=header)
    assert resp.status == 206
    assert await resp.read() == data[start:end]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/100000"
    assert resp.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=100000-", "bytes=500000-600000", "bytes=-0"])
async def test_unsatisfiable_range_is_416(api: Api, header: str) -> None:
    fid = await chunked(api, [os.urandom(100_000)])
    status, message = await error_of(await api.download(fid, Range=header))
    assert status == 416 and message == "the range is outside the file's 100000 bytes"


@pytest.mark.parametrize(
    "header", ["bytes=5-2", "items=0-5", "bytes=0-1,5-6", "bytes=x-y", "garbage"]
)
async def test_malformed_or_multi_range_answers_whole_file(api: Api, header: str) -> None:
    res = await api.upload(b"0123456789")
    resp = await api.download(res["id"], Range=header)
    assert resp.status == 200 and await resp.read() == b"0123456789"


async def test_if_range_with_stale_etag_sends_everything(api: Api) -> None:
    res = await api.upload(b"0123456789")
    etag = (await api.download(res["id"])).headers["ETag"]
    resp = await api.download(res["id"], Range="bytes=2-3", **{"If-Range": etag})
    assert resp.status == 206 and await resp.read() == b"23"
    resp = await api.download(res["id"], Range="bytes=2-3", **{"If-Range": '"stale"'})
    assert resp.status == 200 and await resp.read() == b"0123456789"


async def test_head(api: Api) -> None:
    res = await api.upload(b"headless", filename="h.txt")
    resp = await api.client.head(f"{api.files()}/{res['id']}/download", headers=api.headers())
    assert resp.status == 200 and resp.headers["Content-Length"] == "8"
    assert await resp.read() == b""


async def test_incomplete_download_is_409(api: Api) -> None:
    res = await api.create({"filename": "x", "total_chunks": "2"})
    await api.chunk(res["id"], b"half", {"chunk_number": "1"})
    assert await error_of(await api.download(res["id"])) == (
        409,
        "the upload of this file is not complete yet",
    )


async def test_many_chunks_stream_in_order(api: Api) -> None:
    parts = [os.urandom(1000 + 37 * i) for i in range(60)]
    fid = await chunked(api, parts)
    assert await api.content(fid) == b"".join(parts)


async def test_no_name_gives_plain_attachment(api: Api) -> None:
    res = await api.create({"total_chunks": "1"})
    await api.chunk(res["id"], b"x", {"chunk_number": "1"})
    resp = await api.download(res["id"])
    assert resp.headers["Content-Disposition"] == "attachment"
