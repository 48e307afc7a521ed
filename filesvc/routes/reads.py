"""GET/HEAD/DELETE routes: metadata (and resumable.js testChunks), download, thumbnails."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from blobstore.errors import StoreFull
from filesvc.appkeys import METRICS, SERVICE, SETTINGS, SPACE, STORE
from filesvc.download import (
    SEND_APART,
    WHOLE_BODY,
    ByteRange,
    Piece,
    Unsatisfiable,
    content_disposition,
    etag_matches,
    open_first,
    parse_range,
    read_whole,
    segments,
    send_apart,
    stream,
)
from filesvc.errors import BadRequest, NotFound, RangeNotSatisfiable
from filesvc.jsonbody import json_answer
from filesvc.params import CHUNK_NUMBER, UploadParams
from filesvc.resource import file_resource, thumbnail_id
from filesvc.routes.common import authenticate, company_id, file_id

log = logging.getLogger(__name__)

# A thumbnail's URL is fixed by the contract and an overwrite puts new bytes behind it: caches
# must revalidate every time (cheap: the ETag is the thumbnail's id, so an unchanged one is 304).
THUMBNAIL_CACHE_CONTROL = "private, no-cache"


async def get_file(request: web.Request) -> web.Response:
    """Metadata; with a chunk-number parameter, resumable.js testChunks (200 stored, 204 not)."""
    authenticate(request)
    company, fid = company_id(request), file_id(request)
    service = request.app[SERVICE]
    if any(name in request.query for name in CHUNK_NUMBER):
        number = UploadParams.parse(request.query).chunk_number
        assert number is not None
        stored = await service.chunk_stored(company, fid, number)
        return web.Response(status=200 if stored else 204)
    view = await service.view(company, fid)
    return json_answer({"resource": file_resource(view)})


async def delete_file(request: web.Request) -> web.Response:
    """DELETE: the file's metadata goes now; gc reclaims unshared blobs."""
    authenticate(request)
    await delete_even_on_a_full_disk(request, company_id(request), file_id(request))
    return json_answer({"status": "success"})


async def delete_even_on_a_full_disk(request: web.Request, company: str, fid: str) -> None:
    """Delete the file; on a full disk give the space reserve back and commit with it (the
    files API's DELETE and tus termination both)."""
    space = request.app[SPACE]
    await space.before_delete()
    try:
        await request.app[SERVICE].delete(company, fid)
    except StoreFull:
        # The disk filled since the last sample: give the reserve back and commit with it.
        if not await space.release():
            raise
        await request.app[SERVICE].delete(company, fid)


async def download(request: web.Request) -> web.StreamResponse:
    """The file's bytes, with Range, ETag/If-None-Match and an attachment disposition."""
    authenticate(request, allow_query_token=True)
    view = await request.app[SERVICE].content(company_id(request), file_id(request))
    row = view.row
    size = sum(e.size for e in view.chunks)
    etag = row.etag or '""'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(row.name),
        "Cache-Control": "private, no-cache",
    }
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    byte_range = _requested_range(request, etag, size, headers)
    chosen = byte_range or ByteRange(0, size)
    length = chosen.end - chosen.start
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {chosen.start}-{chosen.end - 1}/{size}"
    pieces = segments(view.chunks, chosen) if request.method != "HEAD" else []
    status = 200 if byte_range is None else 206
    response = await _answer(request, status, headers, row.mime, length, pieces)
    if pieces:
        request.app[METRICS].download_bytes.inc(length)
    return response


def _requested_range(
    request: web.Request, etag: str, size: int, headers: dict[str, str]
) -> ByteRange | None:
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the client's copy is stale: send it all
    try:
        return parse_range(request.headers.get("Range"), size)
    except Unsatisfiable:
        raise RangeNotSatisfiable(
            f"the range is outside the file's {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None


async def _answer(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    content_type: str,
    length: int,
    pieces: list[Piece],
) -> web.StreamResponse:
    """The response carrying ``pieces`` (``length`` bytes; none for HEAD): a body up to
    WHOLE_BODY read whole and answered in one go, a larger one streamed."""
    # As a header, not through ``content_type``: aiohttp's setter parses the header it replaces
    # first (2 % of a read's event-loop time), and writes the same header in the end.
    headers["Content-Type"] = content_type
    if pieces and length <= WHOLE_BODY:
        body = await read_whole(request.app[STORE], pieces)
        if len(body) < SEND_APART:
            return web.Response(status=status, headers=headers, body=body)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await send_apart(request, response, body)
        return response
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await _send(request, response, pieces)
    await response.write_eof()
    return response


async def _send(request: web.Request, response: web.StreamResponse, pieces: list[Piece]) -> None:
    """Prepare the response and send the pieces.  The first blob is opened before the headers
    go out, so a missing blob or an unreachable store is still an error status."""
    store = request.app[STORE]
    first = await open_first(store, pieces)
    try:
        await response.prepare(request)
    except BaseException:
        if first is not None:
            await first.aclose()
        raise
    if not pieces:
        return
    try:
        stall = request.app[SETTINGS].send_stall_timeout
        await stream(request, response, store, pieces, first, stall_timeout=stall)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        # Headers are gone already: the only honest signal left is to cut the connection, so
        # the client sees a short body rather than wrong bytes.
        log.exception("download failed mid-stream")
        if request.transport is not None:
            request.transport.close()
        raise


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """Thumbnail ``index`` of a file; its ETag names its content, so revalidation is a 304."""
    authenticate(request, allow_query_token=True)
    company, fid = company_id(request), file_id(request)
    raw_index = request.match_info["index"]
    # isdigit() alone admits a superscript two (int() refuses it: a 500) and Arabic-Indic
    # digits (an alias of another index).
    if not (raw_index.isascii() and raw_index.isdigit()) or len(raw_index) > 6:
        raise BadRequest("thumbnail index must be a whole number")
    view = await request.app[SERVICE].view(company, fid, content=True)
    entry = next((t for t in view.thumbnails if t.idx == int(raw_index)), None)
    if entry is None:
        raise NotFound("this file has no thumbnail with that index")
    version = thumbnail_id(fid, entry)
    etag = f'"{version}"'
    headers = {
        "ETag": etag,
        "Cache-Control": THUMBNAIL_CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
    }
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    content_type = str((entry.attrs or {}).get("type") or "application/octet-stream")
    pieces = [(entry, 0, entry.size)] if request.method != "HEAD" and entry.size else []
    return await _answer(request, 200, headers, content_type, entry.size, pieces)
