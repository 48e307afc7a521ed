"""A lean HTTP/1.1 GET client for the byte-heavy reads (1 MiB ranges, large downloads).

aiohttp's client spends about as much CPU reading a 1 MiB body as a lean server spends sending
it (each piece becomes a new bytes object, fed through its parser and its stream reader), and on
this 2-core machine the client shares the cores with the server it measures: the client's cost
compresses every difference between servers.  This client reads each body straight into one
reused buffer (:class:`asyncio.BufferedProtocol`: ``recv_into``), so what it costs per byte is
the kernel's copy and nothing else, and parses no more of the response than it must to count the
body: the status line, ``Content-Length``, ``Content-Range`` and ``Connection``.

It is strict, never lenient: a status other than the one expected, a missing or different
``Content-Length``, a ``Content-Range`` other than the one asked for, a chunked body, bytes past
the body's end or a connection closed before it are each a :class:`~bench.client.WorkloadError`.
Connections are kept alive and reused, one request at a time on each (no pipelining).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from bench.client import WorkloadError

# The receive buffer, reused for every read: large enough that a read takes what the socket
# holds in one call, small enough to stay in the CPU's cache.
BUFFER = 256 * 1024
# A response head larger than this is an error (filesvc's and SeaweedFS's are under 1 KiB).
MAX_HEAD = 16 * 1024
# How much of an unexpected response's body is kept for the error message.
ERROR_BODY = 300


@dataclass(frozen=True)
class Expect:
    """What a response must be: its status and body length, and for a range the exact
    ``Content-Range`` (``bytes first-last/total``; ``total`` None accepts any)."""

    status: int
    length: int
    content_range: tuple[int, int, int | None] | None = None


class _Conn(asyncio.BufferedProtocol):
    """One kept-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._in_head = False
        self._left = 0  # body bytes still to come
        self._got = 0
        self._expect: Expect | None = None
        self._status = 0
        self._keep = True
        self._error_body: bytearray | None = None
        self._done: asyncio.Future[int] | None = None
        self.closed = False

    # -- asyncio.BufferedProtocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if not self._in_head:
            self._body(nbytes, self._view)
        elif not self._head:
            # The usual case, a head that came whole in one read: found in place, no copy of
            # the body's first bytes that came with it.
            end = self._buf.find(b"\r\n\r\n", 0, nbytes)
            if end < 0:
                self._head += self._view[:nbytes]
                self._parse_head()
            else:
                self._head_done(bytes(self._buf[:end]), self._view[end + 4 : nbytes])
        else:
            self._head += self._view[:nbytes]
            self._parse_head()

    def eof_received(self) -> bool:
        self._fail("the server closed the connection before the response ended")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            self._fail(f"connection lost before the response ended ({exc or 'closed'})")

    # -- one response ------------------------------------------------------------------------

    def request(self, head: bytes, expect: Expect) -> asyncio.Future[int]:
        assert self._transport is not None and (self._done is None or self._done.done())
        self._done = asyncio.get_running_loop().create_future()
        self._expect = expect
        self._head.clear()
        self._in_head = True
        self._got = 0
        self._error_body = None
        self._transport.write(head)
        return self._done

    def _parse_head(self) -> None:
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fail(f"response head longer than {MAX_HEAD} bytes")
            elif self._done is None or self._done.done():
                self._fail("bytes from the server with no request in flight")
            return
        self._head_done(bytes(self._head[:end]), memoryview(self._head)[end + 4 :])

    def _head_done(self, head: bytes, rest: memoryview) -> None:
        """The head parsed and checked; ``rest`` is the start of the body read with it."""
        self._in_head = False
        try:
            self._check_head(head)
        except WorkloadError as e:
            self._fail(str(e))
            return
        if len(rest):
            self._body(len(rest), rest)
        elif self._left == 0:
            self._finish()

    def _check_head(self, head: bytes) -> None:
        expect = self._expect
        assert expect is not None
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise WorkloadError(f"not an HTTP/1.1 status line: {lines[0][:100]!r}")
        self._status = int(parts[1])
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise WorkloadError(f"malformed header line {line[:100]!r}")
            key = name.strip().lower()
            if key in fields and key in (b"content-length", b"content-range"):
                raise WorkloadError(f"{key.decode()} given twice")
            fields[key] = value.strip()
        if b"transfer-encoding" in fields:
            raise WorkloadError(f"unexpected Transfer-Encoding {fields[b'transfer-encoding']!r}")
        self._keep = fields.get(b"connection", b"").lower() != b"close" and parts[0] == b"HTTP/1.1"
        raw_length = fields.get(b"content-length")
        if raw_length is None or not raw_length.isdigit():
            raise WorkloadError(f"HTTP {self._status} without a valid Content-Length")
        self._left = int(raw_length)
        if self._status != expect.status:
            # Read the (short) body for the message, then fail at its end.
            self._error_body = bytearray()
            return
        if self._left != expect.length:
            raise WorkloadError(f"Content-Length {self._left}, expected {expect.length}")
        if expect.content_range is not None:
            _check_range(fields.get(b"content-range"), expect.content_range)
        elif b"content-range" in fields and self._status == 200:
            raise WorkloadError("a 200 with a Content-Range")

    def _body(self, nbytes: int, data: memoryview | bytearray) -> None:
        """``nbytes`` more body bytes (``data``, read only for an error's message)."""
        if nbytes > self._left:
            self._fail(f"{nbytes - self._left} bytes past the end of the body")
            return
        if self._error_body is not None and len(self._error_body) < ERROR_BODY:
            self._error_body += data[: min(nbytes, ERROR_BODY - len(self._error_body))]
        self._left -= nbytes
        self._got += nbytes
        if self._left == 0:
            self._finish()

    def _finish(self) -> None:
        done = self._done
        assert done is not None and self._expect is not None
        if self._error_body is not None:
            text = bytes(self._error_body[:ERROR_BODY]).decode("utf-8", "replace")
            self._fail(f"HTTP {self._status}, expected {self._expect.status}: {text}")
            return
        if not self._keep and self._transport is not None:
            self._transport.close()
            self.closed = True
        if not done.done():
            done.set_result(self._got)

    def _fail(self, why: str) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        if self._done is not None and not self._done.done():
            self._done.set_exception(WorkloadError(why))


def _check_range(raw: bytes | None, want: tuple[int, int, int | None]) -> None:
    if raw is None:
        raise WorkloadError("a 206 without Content-Range")
    unit, _, spec = raw.partition(b" ")
    span, _, total = spec.partition(b"/")
    first, _, last = span.partition(b"-")
    if unit != b"bytes" or not (first.isdigit() and last.isdigit() and total.isdigit()):
        raise WorkloadError(f"malformed Content-Range {raw!r}")
    got = (int(first), int(last), int(total))
    if got[:2] != want[:2] or (want[2] is not None and got[2] != want[2]):
        raise WorkloadError(f"Content-Range {raw.decode()}, asked for {want}")


class RawClient:
    """Kept-alive connections to one ``http://host:port``, at most ``limit`` at a time."""

    def __init__(self, base_url: str, limit: int = 8) -> None:
        split = urllib.parse.urlsplit(base_url)
        if split.scheme != "http" or split.hostname is None or split.port is None:
            raise ValueError(f"need http://host:port, got {base_url!r}")
        self._host, self._port = split.hostname, split.port
        self._netloc = split.netloc
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(limit)

    async def get(self, target: str, headers: Iterable[tuple[str, str]], expect: Expect) -> int:
        """GET ``target`` (the path and query, already encoded) and count its body's bytes,
        checked against ``expect``."""
        head = "".join(
            [f"GET {target} HTTP/1.1\r\nHost: {self._netloc}\r\n"]
            + [f"{k}: {v}\r\n" for k, v in headers]
            + ["\r\n"]
        ).encode("latin-1")
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                _, conn = await asyncio.get_running_loop().create_connection(
                    _Conn, self._host, self._port
                )
            n = await conn.request(head, expect)
            if not conn.closed:
                self._idle.append(conn)
            return n

    def close(self) -> None:
        for conn in self._idle:
            if conn._transport is not None:
                conn._transport.close()
        self._idle.clear()


def target_of(url: str) -> tuple[str, str]:
    """(``http://host:port``, the path and query) of an absolute URL."""
    split = urllib.parse.urlsplit(url)
    target = split.path or "/"
    if split.query:
        target += "?" + split.query
    return f"{split.scheme}://{split.netloc}", target


async def download(url: str, headers: Iterable[tuple[str, str]], size: int) -> int:
    """GET the whole of ``url`` on a new connection, which must answer 200 with ``size``
    bytes: the large download's read."""
    base, target = target_of(url)
    raw = RawClient(base, 1)
    try:
        return await raw.get(target, headers, Expect(200, size))
    finally:
        raw.close()
