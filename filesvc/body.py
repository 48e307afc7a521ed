"""Upload bodies: a multipart file part or a raw octet-stream, read as a stream of bytes.

Transport failures (a reset, a body shorter than its Content-Length) become one typed error,
ClientAborted, and multipart framing faults become BadRequest, so stores never see aiohttp's own
exceptions.  Nothing here reads a whole body into memory.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from aiohttp import BodyPartReader, ClientError, MultipartReader, hdrs, web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    ContentEncodingError,
    HttpProcessingError,
    PayloadEncodingError,
)

from filesvc.errors import (
    ApiError,
    BadRequest,
    ClientAborted,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from filesvc.params import UploadParams, clean_mime, clean_name
from filesvc.setting_defaults import (
    DEFAULT_BODY_IDLE_TIMEOUT,
    DEFAULT_BODY_MIN_RATE,
    DEFAULT_BODY_RATE_GRACE,
    DEFAULT_BODY_RATE_WINDOW,
)

# Bytes asked of a multipart part per read.  Larger reads cut per-call overhead in aiohttp's
# boundary search (docs/measured.md: read_chunk(64K) tops out near 0.9 GB/s).
PART_READ_SIZE = 1 << 20
# Non-file form fields before the file part are skipped, but only this many bytes of them.
MAX_FORM_FIELD_BYTES = 64 << 10
# Parts looked at before giving up on finding a file part.
MAX_PARTS = 32

# Content codings accepted: aiohttp's parser decodes them before the handler sees the body, and
# the decoded bytes count against the upload limit as they stream.  Any other one would be stored
# still encoded: refused with 415.  br and zstd are refused too: their decoders are optional
# packages, and without them aiohttp's parser refuses the request itself (answered with the same
# 415 by filesvc.protocol), so refusing them here keeps one answer whether or not they are there.
DECODED_CONTENT_CODINGS = frozenset({"", "identity", "gzip", "deflate"})
# RFC 2045 codings that leave a part's bytes as they are; base64, quoted-printable and the
# like are deprecated in form-data (RFC 7578 4.7) and aiohttp's read_chunk does not undo them.
IDENTITY_TRANSFER_ENCODINGS = frozenset({"binary", "7bit", "8bit"})


class BodyStalled(TimeoutError):
    """The client sent the body too slowly or not at all (set on the stream by the watchdog).

    A TimeoutError because it also reaches aiohttp's own read of the rest of the body after the
    408 has been sent ("lingering close"): aiohttp ends that read quietly and closes the
    connection on a TimeoutError, where any other exception is logged with a traceback (which a
    client could then provoke at will)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_READ_ERRORS = (
    BodyStalled,
    web.RequestPayloadError,
    ClientError,
    HttpProcessingError,
    ConnectionError,
    asyncio.IncompleteReadError,
    ValueError,
    RuntimeError,
)


def _read_error(exc: BaseException) -> ApiError:
    """One switch for everything reading a body can raise.  A transport that lost bytes (a
    reset, or PayloadEncodingError for a body shorter than its Content-Length) is ClientAborted;
    a fault of the multipart framing itself (boundary, part headers) is BadRequest."""
    if isinstance(exc, BodyStalled):
        return RequestTimeout(exc.message)
    if isinstance(exc, web.RequestPayloadError) and isinstance(exc.__cause__, ContentEncodingError):
        return BadRequest("the request body could not be decoded as its Content-Encoding says")
    framing = isinstance(exc, (ValueError, RuntimeError)) or (
        isinstance(exc, BadHttpMessage) and not isinstance(exc, PayloadEncodingError)
    )
    if framing:
        return BadRequest(f"malformed multipart body: {_framing(exc)}")
    return ClientAborted("the upload body ended before it was complete")


@dataclass(frozen=True)
class BodyPace:
    """How slowly a client may send a body before the upload is cut off with 408."""

    idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    min_rate: int = DEFAULT_BODY_MIN_RATE  # bytes a second; 0 turns the rate rule off
    window: float = DEFAULT_BODY_RATE_WINDOW
    grace: float = DEFAULT_BODY_RATE_GRACE


class _Watchdog:
    """Fails the request's body stream when the client stops sending or sends too slowly.

    Idle: one read has waited ``idle_timeout`` for the client.  Too slow: past the first
    ``grace`` seconds, fewer than ``min_rate`` bytes a second arrived over the last ``window``
    seconds.  A stalled client, a chunked body whose framing broke mid-way, or a slow-loris
    trickling a byte a second (which the idle rule alone never catches) would otherwise hold its
    handler, upload slot and staging file for as long as it likes.

    Both rules run on one clock that advances only while a read waits for the client: time our
    side spends on the disk or the database is not the client's slowness, and bytes that
    arrived meanwhile count in its favour.  A read costs two clock reads and a few attribute
    writes; the timer runs only while a read waits, and ticks ``CHECKS_PER_WINDOW`` times a
    window to sample (clock, bytes received) into the sliding window."""

    CHECKS_PER_WINDOW = 4

    def __init__(self, request: web.Request, pace: BodyPace) -> None:
        self._stream = request.content
        self._pace = pace
        rated = pace.min_rate > 0
        self._step = pace.window / self.CHECKS_PER_WINDOW if rated else pace.idle_timeout
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the read now waiting began
        self._waited = 0.0  # seconds spent waiting for the client before that
        # (clock, bytes received) samples: the oldest is the newest one at least a window old.
        self._marks: deque[tuple[float, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def waiting(self) -> None:
        self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(
                min(self._pace.idle_timeout, self._step), self._check
            )

    def arrived(self) -> None:
        if self._since is not None:
            self._waited += self._loop.time() - self._since
            self._since = None

    async def part_chunk(self, part: BodyPartReader) -> bytes:
        """The next piece of a multipart part, watched."""
        self.waiting()
        try:
            return await part.read_chunk(PART_READ_SIZE)
        finally:
            self.arrived()

    def _check(self) -> None:
        self._timer = None
        since = self._since
        if since is None:
            return  # not waiting now: the next wait starts a new timer
        now = self._loop.time()
        idle_left = since + self._pace.idle_timeout - now
        if idle_left <= 0:
            self._fail("no bytes of the upload arrived for too long; send it again")
        elif self._pace.min_rate > 0 and self._too_slow(self._waited + now - since):
            self._fail(
                f"the upload arrived slower than {self._pace.min_rate} bytes a second;"
                " send it again over a faster connection"
            )
        else:
            self._timer = self._loop.call_later(min(idle_left, self._step), self._check)

    def _too_slow(self, clock: float) -> bool:
        """Sample the window at ``clock`` (seconds waited so far) and judge it."""
        if clock < self._pace.grace:
            return False
        received = self._stream.total_raw_bytes
        marks = self._marks
        marks.append((clock, received))
        while len(marks) > 1 and marks[1][0] <= clock - self._pace.window:
            marks.popleft()
        base_clock, base_received = marks[0]
        span = clock - base_clock
        return span >= self._pace.window and received - base_received < self._pace.min_rate * span

    def _fail(self, message: str) -> None:
        self._stream.set_exception(BodyStalled(message))


@dataclass
class UploadBody:
    """An upload's bytes and what its framing says about them."""

    chunks: AsyncIterator[bytes]
    filename: str | None
    mime: str | None
    # The bytes' exact length when the framing says it before the first (a raw body's
    # Content-Length, with no content coding): a large blob may then go to S3 as one PUT.
    size: int | None
    fields: dict[str, str] = field(default_factory=dict)


def has_body(request: web.Request) -> bool:
    """True when the request carries a body (Content-Length > 0 or chunked)."""
    if request.content_length is not None:
        return request.content_length > 0
    return request.body_exists


def check_declared_size(request: web.Request, max_bytes: int) -> None:
    """413 when the Content-Length alone says the upload is over the limit."""
    declared = request.content_length
    if declared is not None and declared > max_bytes + MAX_FORM_FIELD_BYTES:
        raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")


async def open_body(
    request: web.Request, max_bytes: int, pace: BodyPace | None = None
) -> UploadBody:
    """The upload carried by ``request``: a multipart/form-data file part or a raw body."""
    check_declared_size(request, max_bytes)
    declared = request.content_length
    coding = request.headers.get(hdrs.CONTENT_ENCODING)
    if coding is not None and coding.strip().lower() not in DECODED_CONTENT_CODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {coding[:40]!r} is not supported: send the bytes as they are,"
            " or gzip"
        )
    ctype = request.content_type
    watchdog = _Watchdog(request, pace or BodyPace())
    if ctype == "multipart/form-data":
        return await _multipart(request, watchdog)
    if ctype == "application/octet-stream":
        exact = declared if coding is None or coding.strip().lower() in ("", "identity") else None
        return UploadBody(_raw(request, watchdog), None, None, exact)
    raise UnsupportedMediaType(
        "send the file as multipart/form-data (part 'file') or as application/octet-stream"
    )


def open_raw(request: web.Request, pace: BodyPace | None = None) -> AsyncIterator[bytes]:
    """The request's raw body as a stream, watched for stalls like every upload body (the
    caller has checked its Content-Type)."""
    return _raw(request, _Watchdog(request, pace or BodyPace()))


async def _raw(request: web.Request, watchdog: _Watchdog) -> AsyncIterator[bytes]:
    # The parser's own pieces (about 250 KB each on a fast connection), one at a time:
    # ``readany`` joins every piece buffered since the last read into a new one, a copy of most
    # of the body on the event loop (bench/README.md, single-stream upload).  ``readchunk``
    # marks the end of each HTTP chunk of a chunked body with an empty piece (skipped), and of
    # the body with an empty piece too (an empty body's reader keeps answering a chunk's end).
    # Bytes already received (the reader has been fed more than was taken) are taken without
    # arming the watchdog's timer: a small body usually arrives with its headers, and then no
    # timer is made at all; only a read that must wait for the client is watched.
    stream = request.content
    taken = 0
    try:
        while True:
            if stream.total_bytes > taken or stream.at_eof():
                data, chunk_end = await stream.readchunk()
            else:
                watchdog.waiting()
                data, chunk_end = await stream.readchunk()
                watchdog.arrived()
            if data:
                taken += len(data)
                yield data
            elif not chunk_end or stream.at_eof():
                return
    except _READ_ERRORS as exc:
        raise _read_error(exc) from None
    finally:
        watchdog.arrived()


async def _multipart(request: web.Request, watchdog: _Watchdog) -> UploadBody:
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        skipped = 0
        for _ in range(MAX_PARTS):
            watchdog.waiting()
            part = await reader.next()
            watchdog.arrived()
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise BadRequest("nested multipart bodies are not supported")
            _check_extended_filename(part)
            if part.filename is not None or part.name == "file":
                _check_transfer_encoding(part)
                return UploadBody(
                    _part_chunks(part, watchdog),
                    clean_name(part.filename, "the file part's filename"),
                    clean_mime(part.headers.get("Content-Type"), "the file part's Content-Type"),
                    None,
                    fields,
                )
            value = bytearray()
            while chunk := await watchdog.part_chunk(part):
                skipped += len(chunk)
                if skipped > MAX_FORM_FIELD_BYTES:
                    raise BadRequest("form fields before the file part are too large")
                value += chunk
            _keep_field(fields, part.name, bytes(value))
    except _READ_ERRORS as exc:
        raise _read_error(exc) from None
    finally:
        watchdog.arrived()
    raise BadRequest("the multipart body has no file part (send it as part 'file')")


def _keep_field(fields: dict[str, str], name: str | None, value: bytes) -> None:
    """Keep a form field that names an upload parameter (resumable.js sends its parameters as
    fields in multipart mode); the first of a name wins, like in the query string."""
    if name is None or name not in UploadParams.names() or name in fields:
        return
    try:
        fields[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"form field '{name}' is not UTF-8 text") from None


# ``filename*=charset'lang'percent-encoded`` (RFC 6266 / RFC 8187).
_EXTENDED_FILENAME = re.compile(r"""(?:^|;)\s*filename\*\s*=\s*([^;]*)""", re.IGNORECASE)


def _check_extended_filename(part: BodyPartReader) -> None:
    """400 for a ``filename*`` that does not decode: aiohttp drops it with a warning, and the
    file would be stored with no name (or the plain ``filename`` fallback) instead."""
    header = part.headers.get(hdrs.CONTENT_DISPOSITION) or ""
    found = _EXTENDED_FILENAME.search(header)
    if found is None:
        return
    charset, quote, encoded = found.group(1).strip().strip('"').partition("'")
    _, _, encoded = encoded.partition("'")
    try:
        if not quote:
            raise ValueError("no charset")
        unquote_to_bytes(encoded).decode(charset or "utf-8")
    except (ValueError, LookupError):
        raise BadRequest(
            "the file part's filename* is not valid: send charset''percent-encoded UTF-8"
        ) from None


def _check_transfer_encoding(part: BodyPartReader) -> None:
    cte = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING)
    if cte is not None and cte.strip().lower() not in IDENTITY_TRANSFER_ENCODINGS:
        raise UnsupportedMediaType(
            f"the file part's Content-Transfer-Encoding {cte[:40]!r} is not supported:"
            " send its bytes as binary"
        )


async def _part_chunks(part: BodyPartReader, watchdog: _Watchdog) -> AsyncIterator[bytes]:
    try:
        while chunk := await watchdog.part_chunk(part):
            yield chunk
        if not part.at_eof():
            # The body ended without the part's closing boundary: a truncated upload, never
            # to be mistaken for a complete file.
            raise BadRequest("malformed multipart body: the body ended before the closing boundary")
    except _READ_ERRORS as exc:
        raise _read_error(exc) from None
    finally:
        watchdog.arrived()


def _framing(exc: BaseException) -> str:
    # aiohttp's messages describe the framing (boundary, EOF); keep them short and never echo
    # more than a few bytes of the client's body back.
    text = str(exc).split("\n", 1)[0]
    if "boundary" in text.lower():
        return "missing or invalid boundary"
    if "eof" in text.lower() or "malformed" in text.lower():
        return "the body ended before the closing boundary"
    return "the body is not valid multipart/form-data"
