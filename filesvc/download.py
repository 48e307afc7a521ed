"""Download mechanics: byte ranges, conditional requests, Content-Disposition, and streaming a
file's chunks in order through the blob port's reader role, with sendfile where an opened blob
offers it (:class:`~blobstore.port.FileRange`, the local backend's)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from blobstore.manifests import Entry
from blobstore.port import BlobReader, BlobStream, FileRange
from filesvc.accesslog import count_sent

# ASCII digits only: \d would admit any Unicode digit, which int() then accepts.
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\]')


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of the content."""

    start: int
    end: int


class Unsatisfiable(Exception):
    """A syntactically valid range that selects no byte of the content."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range a ``Range`` header asks for, or None for the whole content.

    Malformed headers and multi-range requests are ignored (RFC 9110 allows answering 200 with
    the whole content); a range past the end raises Unsatisfiable (416)."""
    if header is None:
        return None
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if last != "" and first != "" and int(last) < int(first):
        return None  # invalid: ignore the header
    if size == 0:
        raise Unsatisfiable  # RFC 9110 14.1.1: an empty representation has no satisfiable range
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - n), size)
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, end)


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match: ``*`` or a list containing our tag (weak comparison, RFC 9110 13.1.2)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def content_disposition(name: str | None) -> str:
    """``attachment`` with an ASCII fallback name and the real one per RFC 5987/6266."""
    if not name:
        return "attachment"
    fallback = _UNSAFE_ASCII.sub("_", name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def segments(entries: Sequence[Entry], byte_range: ByteRange) -> list[tuple[Entry, int, int]]:
    """The (entry, start, end) pieces of the chunks, in order, that cover ``byte_range``."""
    out = []
    offset = 0
    for entry in entries:
        lo, hi = offset, offset + entry.size
        start, end = max(lo, byte_range.start), min(hi, byte_range.end)
        if start < end:
            out.append((entry, start - lo, end - lo))
        offset = hi
    return out


async def open_first(reader: BlobReader, pieces: list[tuple[Entry, int, int]]) -> BlobStream | None:
    """Open the first piece before the response is prepared, so that a missing blob or an
    engine that is down is still answered with an error status, not a cut body."""
    if not pieces:
        return None
    entry, start, end = pieces[0]
    return await reader.open(entry.ref, start, end)


async def stream(
    request: web.Request,
    response: web.StreamResponse,
    reader: BlobReader,
    pieces: list[tuple[Entry, int, int]],
    first: BlobStream | None = None,
) -> None:
    """Write the pieces to a prepared response, zero-copy where the opened blob is a range of a
    local file and the transport can take it (plain TCP, no compression).  ``first``, when
    given, is the first piece already opened (:func:`open_first`); it is closed here."""
    transport = request.transport
    use_sendfile = (
        transport is not None
        and transport.get_extra_info("sslcontext") is None
        and not response.compression
    )
    for i, (entry, start, end) in enumerate(pieces):
        blob = first if i == 0 and first is not None else await reader.open(entry.ref, start, end)
        try:
            if use_sendfile and isinstance(blob, FileRange):
                if await _sendfile(request, response, blob):
                    count_sent(request, end - start)
                    continue
                use_sendfile = False
            async for data in blob:
                await response.write(data)
                count_sent(request, len(data))
        finally:
            await blob.aclose()


async def _sendfile(request: web.Request, response: web.StreamResponse, blob: FileRange) -> bool:
    """Send the blob's file range with the kernel's sendfile; False when the loop can't."""
    fd, offset, count = blob.file_range()
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    # The stream owns the fd: this file object only lends it to loop.sendfile.
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        try:
            await asyncio.get_running_loop().sendfile(transport, f, offset, count)
        except NotImplementedError:
            return False
    return True
