"""A chunk POST with no body and no Content-Type is a mistake, not an empty chunk.

aiohttp's ``request.content_type`` reports application/octet-stream when the header is absent,
so the handler took a bare POST for an explicit empty raw chunk and completed the file empty."""

from __future__ import annotations

from tests.helpers import Api, error_of


async def test_bare_post_does_not_complete_the_file_empty(api: Api) -> None:
    fid = (await api.create({"filename": "x", "total_chunks": "1"}))["id"]
    # aiohttp's client adds Content-Type: application/octet-stream to a bare POST; curl and
    # browsers send no Content-Type at all, which is what this test means.
    resp = await api.client.post(
        f"{api.files()}/{fid}", headers=api.headers(), skip_auto_headers=["Content-Type"]
    )
    assert await error_of(resp) == (
        400,
        "the chunk's bytes are missing: send them as part 'file' or raw body",
    )
    meta = (await (await api.meta(fid)).json())["resource"]
    assert meta["upload_data"]["complete"] is False
    resp = await api.chunk(fid, b"real bytes", {"chunk_number": "1"})
    assert resp.status == 200
    assert await api.content(fid) == b"real bytes"


async def test_explicit_octet_stream_without_bytes_is_still_an_empty_chunk(api: Api) -> None:
    fid = (await api.create({"filename": "x", "total_chunks": "1"}))["id"]
    resp = await api.chunk(fid, b"", {"chunk_number": "1"})
    assert resp.status == 200
    assert await api.content(fid) == b""
