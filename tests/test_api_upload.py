"""Upload flows of docs/api.md: single request, chunked in any order and in parallel, resume."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from blobstore.memory import MemoryBackend
from tests.conftest import AppFactory
from tests.helpers import PREFIX, Api, error_of, multipart


async def test_single_request_upload_then_download(api: Api) -> None:
    data = os.urandom(300_000)
    res = await api.upload(data, filename="report.pdf")
    assert res["metadata"] == {
        "name": "report.pdf",
        "mime": "application/pdf",
        "thumbnails_status": res["metadata"]["thumbnails_status"],
        "thumbnails_error": None,
    }
    assert res["metadata"]["thumbnails_status"] in ("waiting", "done")
    assert res["upload_data"]["size"] == len(data) and res["upload_data"]["chunks"] == 1
    assert res["company_id"] == "acme" and res["user_id"] == "alice"
    assert res["application_id"] is None and res["thumbnails"] == []
    assert isinstance(res["created_at"], int) and res["created_at"] > 1_700_000_000_000
    assert await api.content(res["id"]) == data


async def test_memory_backend_serves_the_same_api(make_api: AppFactory) -> None:
    api = await make_api(backend=MemoryBackend())
    data = os.urandom(70_000)
    res = await api.upload(data)
    assert await api.content(res["id"]) == data
    resp = await api.download(res["id"], Range="bytes=10-19")
    assert resp.status == 206 and await resp.read() == data[10:20]


async def test_raw_body_create_and_empty_file(api: Api) -> None:
    resp = await api.client.post(
        api.files(),
        data=b"",
        params={"filename": "empty.txt"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert resp.status == 200
    res = (await resp.json())["resource"]
    # No body at all: the file is created, not uploaded.
    assert res["upload_data"]["complete"] is False
    resp = await api.chunk(res["id"], b"", {"chunk_number": "1"})
    assert resp.status == 200  # an explicit empty octet-stream is an empty chunk
    assert (await resp.json())["resource"]["upload_data"]["complete"] is True
    full = await api.upload(b"", filename="zero.bin")
    assert full["upload_data"]["complete"] is True and await api.content(full["id"]) == b""


async def test_create_without_body_stores_name_type_size_chunks(api: Api) -> None:
    res = await api.create(
        {"filename": "a.txt", "type": "text/plain", "total_size": "10", "total_chunks": "2"}
    )
    assert res["metadata"]["name"] == "a.txt" and res["metadata"]["mime"] == "text/plain"
    assert res["upload_data"]["size"] == 10 and res["upload_data"]["chunks"] == 2
    assert res["upload_data"]["complete"] is False
    got = await api.meta(res["id"])
    assert (await got.json())["resource"]["metadata"]["name"] == "a.txt"


@pytest.mark.parametrize(
    "params",
    [
        {"resumableFilename": "x.bin", "resumableTotalChunks": "3", "resumableTotalSize": "9"},
        {"filename": "x.bin", "total_chunks": "3", "total_size": "9"},
        {"filename": "x.bin", "totalChunks": "3", "totalSize": "9"},
        {"filename": "x.bin", "totalChunks": "3", "total_Size": "9"},
    ],
)
async def test_every_parameter_spelling(api: Api, params: dict[str, str]) -> None:
    res = await api.create(params)
    assert res["upload_data"]["chunks"] == 3 and res["upload_data"]["size"] == 9
    number_key = {
        "resumableFilename": "resumableChunkNumber",
        "filename": "chunk_number",
    }[next(iter(params))]
    if "totalChunks" in params:
        number_key = "chunkNumber"
    for k, part in ((2, b"bbb"), (3, b"ccc"), (1, b"aaa")):
        resp = await api.chunk(res["id"], part, {number_key: str(k)})
        assert resp.status == 200, await resp.text()
    assert await api.content(res["id"]) == b"aaabbbccc"


async def test_first_spelling_wins(api: Api) -> None:
    res = await api.create(
        {"resumableTotalChunks": "2", "total_chunks": "5", "totalChunks": "7", "filename": "w"}
    )
    assert res["upload_data"]["chunks"] == 2


async def test_chunks_in_any_order_multipart_and_raw(api: Api) -> None:
    parts = [os.urandom(50_000 + i) for i in range(5)]
    total = sum(map(len, parts))
    res = await api.create({"filename": "big.bin", "total_chunks": "5", "total_size": str(total)})
    for k in (4, 2, 5, 1, 3):
        resp = await api.chunk(res["id"], parts[k - 1], {"chunk_number": str(k)}, raw=bool(k % 2))
        assert resp.status == 200, await resp.text()
        body = (await resp.json())["resource"]
        assert body["upload_data"]["complete"] is (k == 3)
    assert await api.content(res["id"]) == b"".join(parts)


async def test_parallel_chunks(api: Api) -> None:
    parts = [os.urandom(200_000) for _ in range(8)]
    res = await api.create({"filename": "p.bin", "total_chunks": "8", "total_size": "1600000"})
    responses = await asyncio.gather(
        *(api.chunk(res["id"], p, {"chunk_number": str(i + 1)}) for i, p in enumerate(parts))
    )
    assert [r.status for r in responses] == [200] * 8
    assert await api.content(res["id"]) == b"".join(parts)


async def test_resending_a_chunk_replaces_it(api: Api) -> None:
    res = await api.create({"filename": "r.bin", "total_chunks": "2"})
    assert (await api.chunk(res["id"], b"old!", {"chunk_number": "1"})).status == 200
    assert (await api.chunk(res["id"], b"new!", {"chunk_number": "1"})).status == 200
    assert (await api.chunk(res["id"], b"tail", {"chunk_number": "2"})).status == 200
    assert await api.content(res["id"]) == b"new!tail"


async def test_complete_only_when_sizes_add_up(api: Api) -> None:
    res = await api.create({"filename": "s.bin", "total_chunks": "2", "total_size": "8"})
    await api.chunk(res["id"], b"abc", {"chunk_number": "1"})
    resp = await api.chunk(res["id"], b"de", {"chunk_number": "2"})
    assert (await resp.json())["resource"]["upload_data"]["complete"] is False
    assert (await api.download(res["id"])).status == 409
    resp = await api.chunk(res["id"], b"defgh", {"chunk_number": "2"})
    assert (await resp.json())["resource"]["upload_data"]["complete"] is True
    assert await api.content(res["id"]) == b"abcdefgh"


async def test_chunk_that_makes_sizes_impossible_is_refused_and_not_stored(api: Api) -> None:
    res = await api.create({"filename": "s.bin", "total_chunks": "2", "total_size": "5"})
    await api.chunk(res["id"], b"abc", {"chunk_number": "1"})
    resp = await api.chunk(res["id"], b"defg", {"chunk_number": "2"})
    assert await error_of(resp) == (
        400,
        "chunk 2 would make the file larger than its total size",
    )
    assert (
        await api.client.get(
            f"{api.files()}/{res['id']}", params={"chunk_number": "2"}, headers=api.headers()
        )
    ).status == 204


async def test_test_chunks_answers_200_or_204(api: Api) -> None:
    res = await api.create({"filename": "t.bin", "total_chunks": "3"})
    await api.chunk(res["id"], b"one", {"chunk_number": "2"})
    url = f"{api.files()}/{res['id']}"
    for key, k, status in (
        ("resumableChunkNumber", 2, 200),
        ("chunk_number", 2, 200),
        ("chunkNumber", 1, 204),
        ("resumableChunkNumber", 3, 204),
    ):
        resp = await api.client.get(url, params={key: str(k)}, headers=api.headers())
        assert resp.status == status, (key, k)


async def test_alias_and_trailing_slash_routes(api: Api) -> None:
    res = await api.upload(b"alias", filename="a.txt")
    for url in (
        f"{PREFIX}/acme/files/{res['id']}",
        f"{PREFIX}/acme/files/{res['id']}/",
        f"{PREFIX}/companies/acme/files/{res['id']}/",
    ):
        resp = await api.client.get(url, headers=api.headers())
        assert resp.status == 200, url
        assert (await resp.json())["resource"]["id"] == res["id"]
    resp = await api.client.post(
        f"{PREFIX}/companies/acme/files/", params={"filename": "x"}, headers=api.headers()
    )
    assert resp.status == 200
    resp = await api.client.get(
        f"{PREFIX}/companies/acme/files/{res['id']}/download/", headers=api.headers()
    )
    assert resp.status == 200 and await resp.read() == b"alias"


async def test_type_falls_back_to_part_then_guess(api: Api) -> None:
    resp = await api.client.post(
        api.files(), data=multipart(b"{}", "x.bin", "application/json"), headers=api.headers()
    )
    assert (await resp.json())["resource"]["metadata"]["mime"] == "application/json"
    res = await api.upload(b"<svg/>", filename="pic.png")
    assert res["metadata"]["mime"] == "image/png"  # a generic part type defers to the name
    resp = await api.client.post(
        api.files(), data=multipart(b"x", "pic.png", "text/plain"), headers=api.headers()
    )
    assert (await resp.json())["resource"]["metadata"]["mime"] == "text/plain"
    res = await api.create({"filename": "notes.txt"})
    assert res["metadata"]["mime"] == "text/plain"


async def test_chunk_name_from_query_replaces_part_name_only_fills(api: Api) -> None:
    res = await api.create({"total_chunks": "2"})
    await api.chunk(res["id"], b"a", {"chunk_number": "1"}, raw=False)
    meta = (await (await api.meta(res["id"])).json())["resource"]["metadata"]
    assert meta["name"] == "file.bin"
    await api.chunk(res["id"], b"b", {"chunk_number": "2", "filename": "real.txt"})
    meta = (await (await api.meta(res["id"])).json())["resource"]["metadata"]
    assert meta["name"] == "real.txt"


async def test_delete_then_404(api: Api) -> None:
    res = await api.upload(b"gone soon")
    resp = await api.client.delete(f"{api.files()}/{res['id']}", headers=api.headers())
    assert resp.status == 200 and await resp.json() == {"status": "success"}
    assert (await api.meta(res["id"])).status == 404
    resp = await api.client.delete(f"{api.files()}/{res['id']}", headers=api.headers())
    assert await error_of(resp) == (404, "no such file in this company")


async def test_dedup_shares_one_blob_between_files(api: Api) -> None:
    a = await api.upload(b"same content")
    b = await api.upload(b"same content")
    assert a["id"] != b["id"]
    await api.client.delete(f"{api.files()}/{a['id']}", headers=api.headers())
    assert await api.content(b["id"]) == b"same content"


async def test_resumable_js_multipart_mode_reads_parameters_from_form_fields(api: Api) -> None:
    """resumable.js (method 'multipart', its default) sends its parameters as form fields
    before the file part; the query string wins where both are given."""
    res = await api.create({"filename": "r.bin", "total_chunks": "2", "total_size": "6"})

    def body(number: str, data: bytes) -> bytes:
        fields = b"".join(
            b'--B\r\nContent-Disposition: form-data; name="' + k + b'"\r\n\r\n' + v + b"\r\n"
            for k, v in [
                (b"resumableChunkNumber", number.encode()),
                (b"resumableTotalChunks", b"2"),
                (b"resumableTotalSize", b"6"),
                (b"resumableFilename", b"real name.bin"),
            ]
        )
        return (
            fields
            + b'--B\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n\r\n'
            + data
            + b"\r\n--B--\r\n"
        )

    headers = api.headers(**{"Content-Type": "multipart/form-data; boundary=B"})
    url = f"{api.files()}/{res['id']}"
    assert (await api.client.post(url, data=body("2", b"def"), headers=headers)).status == 200
    resp = await api.client.post(url, data=body("1", b"abc"), headers=headers)
    got = (await resp.json())["resource"]
    assert got["upload_data"]["complete"] is True
    assert got["metadata"]["name"] == "real name.bin"
    assert await api.content(res["id"]) == b"abcdef"
    resp = await api.client.post(url, data=body("x", b"abc"), headers=headers)
    assert (await resp.json())[
        "message"
    ] == "form field 'resumableChunkNumber' must be a whole number, got 'x'"


async def test_file_ids_are_uuids_ordered_by_creation(api: Api) -> None:
    # Version 7: its first 48 bits are the creation time in ms (filesvc/ids.py).
    made = [await api.upload(b"x" * n) for n in range(1, 4)]
    made.append(await api.create({"filename": "later.txt"}))
    ids = [uuid.UUID(res["id"]) for res in made]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for i, res in zip(ids, made, strict=True):
        # made as the request began; created_at is taken once its bytes are stored
        assert 0 <= res["created_at"] - (i.int >> 80) < 10_000
