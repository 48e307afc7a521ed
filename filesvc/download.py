"""Download mechanics: byte ranges, conditional requests, Content-Disposition, and sending a
file's chunks in order through the blob port's reader role: a body up to a MiB read whole (in at
most one thread hand-off where the reader offers :class:`~blobstore.port.ReadWhole`), a larger
one sent by a thread of the store that owns the connection's socket for the body where the blob
offers :class:`~blobstore.port.Pumps` (a plain local blob), else streamed a piece at a time; both
with a send stall timeout."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote

from aiohttp import web

from blobstore.manifests import Entry
from blobstore.port import BlobReader, BlobStream, Mapped, Pumps, ReadWhole, Views, supports
from blobstore.store import ContentStore
from blobstore.streams import BytesStream
from filesvc.accesslog import count_sent
from filesvc.errors import DamagedContent

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


Piece = tuple[Entry, int, int]

# Bodies up to WHOLE_BODY are read whole before the headers and answered as one response (no
# streaming machinery; an error status if the read fails).  A ReadWhole reader (local disk,
# sealed or not) reads each piece in at most one hand-off to a thread, none when it is tiny
# (docs/measured.md).  WHOLE_BODY is the streamed path's piece size, so memory per download is
# no higher than streaming's.
WHOLE_BODY = 1024 * 1024

SHORT_BLOB = "stored content of this file is shorter than recorded; an operator must run fsck"


class SendStalled(ConnectionError):
    """The client took no bytes for the send stall timeout: its connection was closed."""


class StallGuard:
    """Cuts a download's connection once its client has taken no bytes for the stall timeout.

    One timer per download, re-armed every half timeout, rather than a timeout around each
    write (a timer armed and cancelled per MiB cost the event loop a few per cent of a large
    download).  At each tick it compares what the stream has handed the transport and what the
    transport still holds with the last tick: both unchanged while bytes wait means the client
    took none in that half; two such halves in a row, and the connection is cut.  So a client
    that stops reading is cut after one to one and a half timeouts, and one that keeps reading,
    however slowly, is never cut for the size of a write."""

    __slots__ = ("_half", "_handle", "_last", "_quiet", "_transport", "fed", "stalled")

    def __init__(self, transport: asyncio.Transport | None, timeout: float) -> None:
        self._transport = transport
        self._half = timeout / 2
        self.fed = 0  # bytes handed to the transport so far (the stream counts them)
        self.stalled = False
        self._last = (-1, -1)
        self._quiet = 0
        self._handle = asyncio.get_running_loop().call_later(self._half, self._tick)

    def _tick(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        now = (self.fed, transport.get_write_buffer_size())
        self._quiet = self._quiet + 1 if now[1] > 0 and now == self._last else 0
        if self._quiet >= 2:
            self.stalled = True
            transport.abort()
            return
        self._last = now
        self._handle = asyncio.get_running_loop().call_later(self._half, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


_READS_WHOLE: dict[type, bool] = {}


def _reads_whole(reader: BlobReader) -> bool:
    """Whether the reader offers ReadWhole, asked once per class: ``isinstance`` against a
    runtime-checkable protocol walks its members on every call (3 % of a 4 KiB GET)."""
    kind = type(reader)
    known = _READS_WHOLE.get(kind)
    if known is None:
        known = _READS_WHOLE[kind] = isinstance(reader, ReadWhole)
    return known


async def read_whole(store: ContentStore, pieces: Sequence[Piece]) -> bytes | bytearray:
    """The bytes of the pieces (at most WHOLE_BODY in all), whole: an inline blob's from the
    bytes its entry came with, others from the backend.  A blob shorter than its manifest
    says is DamagedContent: still an error status, since no byte has gone out."""
    reader = store.backend
    whole = cast(ReadWhole, reader) if _reads_whole(reader) else None
    parts: list[bytes | bytearray] = []
    for entry, start, end in pieces:
        data: bytes | bytearray
        if entry.inline is not None:
            data = await store.inline_range(entry.ref, entry.inline, start, end)
        elif whole is not None:
            data = await whole.read_whole(entry.ref, start, end)
        else:
            blob = await reader.open(entry.ref, start, end)
            try:
                data = b"".join([piece async for piece in blob])
            finally:
                await blob.aclose()
        if len(data) != end - start:
            raise DamagedContent(SHORT_BLOB)
        parts.append(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# A whole body this large is sent in a write of its own after the headers: aiohttp joins the
# headers and a response's body into one new bytes object before Python 3.12.9 (its writelines
# is unsafe there), a copy of the whole body that measured as a quarter of a 1 MiB range's
# time on the event loop; a second write costs one more send of a few hundred bytes.
SEND_APART = 64 * 1024


async def send_apart(
    request: web.Request, response: web.StreamResponse, body: bytes | bytearray
) -> None:
    """Prepare ``response`` and send the headers, then ``body`` as it is (no copy)."""
    await response.prepare(request)
    await response.write(b"")  # the buffered headers go out alone
    await response.write(body)
    count_sent(request, len(body))
    await response.write_eof()


async def open_piece(store: ContentStore, entry: Entry, start: int, end: int) -> BlobStream:
    """Open bytes ``[start, end)`` of an entry's blob: an inline one from the bytes its entry
    came with, others from the backend."""
    if entry.inline is not None:
        return BytesStream(bytes(await store.inline_range(entry.ref, entry.inline, start, end)))
    return await store.backend.open(entry.ref, start, end)


async def open_first(store: ContentStore, pieces: Sequence[Piece]) -> BlobStream | None:
    """Open the first piece before the response is prepared, so that a missing blob or an
    engine that is down is still answered with an error status, not a cut body."""
    if not pieces:
        return None
    return await open_piece(store, *pieces[0])


def _sends_from_buffers(transport: asyncio.BaseTransport | None) -> bool:
    """Whether ``transport`` sends from the caller's buffers in the kernel, keeping what it cannot
    send at once as a view: uvloop's plain TCP transport.  asyncio's copies the unsent rest into
    its own buffer (a read in user space, which a mapped file must never get: SIGBUS if the file
    is truncated), and a TLS transport encrypts the bytes in user space."""
    kind = type(transport)
    return kind.__module__ == "uvloop.loop" and kind.__qualname__ == "TCPTransport"


def _plain_tcp(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport`` is a plain TCP connection (uvloop's or asyncio's), whose socket a
    thread may send on: not TLS, which must encrypt the bytes itself."""
    kind = type(transport)
    return (kind.__module__, kind.__qualname__) in (
        ("uvloop.loop", "TCPTransport"),
        ("asyncio.selector_events", "_SelectorSocketTransport"),
    )


def _pump_socket(request: web.Request) -> socket.socket | None:
    """A duplicate of the connection's socket for a :class:`~blobstore.port.Pump`, or None when
    the connection cannot be handed over now: not plain TCP, closing, or still holding unsent
    bytes (which must go out first, and in order)."""
    transport = request.transport
    if transport is None or transport.is_closing() or transport.get_write_buffer_size():
        return None
    if not _plain_tcp(transport):
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    try:
        fd = os.dup(raw.fileno())
    except OSError:  # out of file descriptors: the transport sends this one
        return None
    try:
        return socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None


def _pieces_of(request: web.Request, blob: BlobStream) -> AsyncIterator[bytes | memoryview]:
    """The stream's pieces in the cheapest form this connection can send: mapped windows of a
    local file on uvloop (no copy on our side, docs/measured.md), a decrypting stream's own
    buffers, or its plain pieces."""
    if supports(blob, Mapped) and _sends_from_buffers(request.transport):
        return cast(Mapped, blob).mapped()
    if supports(blob, Views):
        return cast(Views, blob).views()
    return aiter(blob)


async def stream(
    request: web.Request,
    response: web.StreamResponse,
    store: ContentStore,
    pieces: Sequence[Piece],
    first: BlobStream | None = None,
    *,
    stall_timeout: float,
) -> None:
    """Write the pieces to a prepared response.  ``first``, when given, is the first piece
    already opened (:func:`open_first`); it is closed here.

    The headers go out alone first: aiohttp would join them with the first piece into a new
    bytes object (a copy of the piece, and a read of a mapped file in user space).  A blob that
    can pump itself is sent by its pump (:func:`_pump_blob`) while one is free; otherwise its
    pieces come from :func:`_pieces_of` and are written to the transport as they are.  A client
    that takes no bytes for ``stall_timeout`` loses its connection (the pump's timed sends, or
    :class:`StallGuard`; SendStalled), so one that stops reading cannot hold it; a blob shorter
    than recorded is DamagedContent (the caller cuts the connection: the headers promised
    more)."""
    await response.write(b"")
    guard = StallGuard(request.transport, stall_timeout)
    pumps = True
    try:
        for i, (entry, start, end) in enumerate(pieces):
            blob = (
                first
                if i == 0 and first is not None
                else await open_piece(store, entry, start, end)
            )
            try:
                if pumps and supports(blob, Pumps):
                    pumps = await _pump_blob(request, cast(Pumps, blob), end - start, stall_timeout)
                    if pumps:
                        continue  # (the finally closes the blob)
                await _send_blob(request, response, blob, end - start, guard)
            finally:
                await blob.aclose()
    except ConnectionError:
        if guard.stalled:
            raise SendStalled(f"client took no bytes for {stall_timeout:g} s") from None
        raise
    finally:
        guard.cancel()


async def _pump_blob(request: web.Request, blob: Pumps, length: int, stall_timeout: float) -> bool:
    """Send the blob by a thread of the store that owns a duplicate of the connection's socket
    for the body (docs/measured.md): True once sent, False when it cannot be (the caller sends
    it through the transport).  A client that takes no byte for the stall timeout is cut."""
    sock = _pump_socket(request)
    if sock is None:
        return False
    pump = blob.pump(sock, stall_timeout)
    if pump is None:
        sock.close()
        return False
    try:
        sent = await pump.run()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise SendStalled(f"client took no bytes for {stall_timeout:g} s") from None
    finally:
        count_sent(request, pump.sent)
    if sent != length:
        raise DamagedContent(SHORT_BLOB)
    return True


async def _send_blob(
    request: web.Request,
    response: web.StreamResponse,
    blob: BlobStream,
    length: int,
    guard: StallGuard,
) -> None:
    """Write one blob's pieces as they come (a mapped window whole: the guard, not the size of
    a write, bounds how long a client may take)."""
    sent = 0
    async for data in _pieces_of(request, blob):
        size = len(data)
        guard.fed += size
        await response.write(data)
        # Let go of the piece before the next is made: a mapped window is unmapped as soon as
        # the transport is done with it too.
        del data
        sent += size
        count_sent(request, size)
    if sent != length:
        raise DamagedContent(SHORT_BLOB)
