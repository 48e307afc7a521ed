"""Upload bodies: a multipart file part or a raw octet-stream, read as a stream of bytes.

Transport failures (a reset, a body shorter than its Content-Length) become one typed error,
ClientAborted, and multipart framing faults become BadRequest, so stores never see aiohttp's own
exceptions.  Nothing here reads a whole body into memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

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
from filesvc.settings import DEFAULT_BODY_IDLE_TIMEOUT

# Bytes asked of a multipart part per read.  Larger reads cut per-call overhead in aiohttp's
# boundary search (docs/measured.md: read_chunk(64K) tops out near 0.9 GB/s).
PART_READ_SIZE = 1 << 20
# Non-file form fields before the file part are skipped, but only this many bytes of them.
MAX_FORM_FIELD_BYTES = 64 << 10
# Parts looked at before giving up on finding a file part.
MAX_PARTS = 32

# Content codings aiohttp's parser decodes before the handler sees the body.  Any other one
# would be stored still encoded: refused instead.
DECODED_CONTENT_CODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})
# RFC 2045 codings that leave a part's bytes as they are; base64, quoted-printable and the
# like are deprecated in form-data (RFC 7578 4.7) and aiohttp's read_chunk does not undo them.
IDENTITY_TRANSFER_ENCODINGS = frozenset({"binary", "7bit", "8bit"})


class BodyIdle(Exception):
    """No byte of the body arrived for the idle limit (set on the stream by the watchdog)."""


_READ_ERRORS = (
    BodyIdle,
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
    if isinstance(exc, BodyIdle):
        return RequestTimeout("no bytes of the upload arrived for too long; send it again")
    if isinstance(exc, web.RequestPayloadError) and isinstance(exc.__cause__, ContentEncodingError):
        return BadRequest("the request body could not be decoded as its Content-Encoding says")
    framing = isinstance(exc, (ValueError, RuntimeError)) or (
        isinstance(exc, BadHttpMessage) and not isinstance(exc, PayloadEncodingError)
    )
    if framing:
        return BadRequest(f"malformed multipart body: {_framing(exc)}")
    return ClientAborted("the upload body ended before it was complete")


class _Watchdog:
    """Fails the request's body stream when a read has waited longer than ``seconds``.

    A stalled client (slow-loris) or a chunked body whose framing broke mid-way would otherwise
    hold its handler and staging file for ever.  Only time spent *waiting for the client* counts:
    a slow disk on our side is not the client's idleness.  A read costs two attribute writes; the
    timer runs only while a read waits."""

    def __init__(self, request: web.Request, seconds: float) -> None:
        self._stream = request.content
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def waiting(self) -> None:
        self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(self._seconds, self._check)

    def arrived(self) -> None:
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
        if self._since is None:
            return  # not waiting now: the next wait starts a new timer
        left = self._since + self._seconds - self._loop.time()
        if left <= 0:
            self._stream.set_exception(BodyIdle())
        else:
            self._timer = self._loop.call_later(left, self._check)


@dataclass
class UploadBody:
    """An upload's bytes and what its framing says about them."""

    chunks: AsyncIterator[bytes]
    filename: str | None
    mime: str | None
    declared_size: int | None
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
    request: web.Request, max_bytes: int, idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
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
    watchdog = _Watchdog(request, idle_timeout)
    if ctype == "multipart/form-data":
        return await _multipart(request, watchdog)
    if ctype == "application/octet-stream":
        return UploadBody(_raw(request, watchdog), None, None, declared)
    raise UnsupportedMediaType(
        "send the file as multipart/form-data (part 'file') or as application/octet-stream"
    )


async def _raw(request: web.Request, watchdog: _Watchdog) -> AsyncIterator[bytes]:
    stream = request.content
    try:
        while True:
            watchdog.waiting()
            data = await stream.readany()
            watchdog.arrived()
            if not data:
                return
            yield data
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
