"""Errors aiohttp's own HTTP parser raises, answered with the error envelope.

A request line or header over 8 KiB, a bad Content-Length, Content-Length with Transfer-Encoding,
raw non-ASCII bytes in the path, a content coding the parser cannot decode: aiohttp answers these
before any middleware runs, from ``RequestHandler.handle_error``, in text/plain that quotes the
offending line (``?token=`` included) and logs it with the same text.  That method is the one
seam for all of them, so :class:`EnvelopeRequestHandler` overrides it: a fixed message per kind of
fault in the envelope, nothing of the client's bytes echoed or logged.  The server's protocol
factory (``filesvc.connections``) builds its connections from a subclass of this class.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from filesvc.middleware import envelope

log = logging.getLogger("filesvc.protocol")

# Most specific first: BadHttpMethod is a BadStatusLine, ContentEncodingError a payload error.
_FAULTS: tuple[tuple[type[BaseException], int, str], ...] = (
    (LineTooLong, 400, "the request line or a header is longer than the server accepts (8 KiB)"),
    (
        ContentEncodingError,
        415,
        "this Content-Encoding is not supported: send the bytes as they are, or gzip",
    ),
    (ContentLengthError, 400, "the Content-Length header is not valid"),
    (TransferEncodingError, 400, "the Transfer-Encoding header or chunked framing is not valid"),
    (InvalidURLError, 400, "the request target is not a valid URL"),
    (BadHttpMethod, 400, "the request method is not valid"),
    (BadStatusLine, 400, "the request line is not valid HTTP"),
    (InvalidHeader, 400, "a request header is not valid"),
)
_DEFAULT_BAD = "the request is not valid HTTP/1.1"


def describe(status: int, exc: BaseException | None) -> tuple[int, str]:
    """The status and fixed message for a fault; never any text of the request."""
    if status >= 500:
        return status, "internal error; it has been logged"
    if isinstance(exc, InvalidHeader) and str(exc.hdr).lower() == "content-length":
        return 400, "the Content-Length header is not valid"  # the pure-Python parser's way
    for kind, code, message in _FAULTS:
        if isinstance(exc, kind):
            return code, message
    # aiohttp raises a bare BadHttpMessage for, e.g., Content-Length with Transfer-Encoding.
    # Only the parser's description of the fault (its first line), never the quoted bytes.
    described = exc.message if isinstance(exc, HttpProcessingError) else ""
    text = described.strip().split("\n", 1)[0].lower()
    if "content-length" in text and "transfer-encoding" in text:
        return 400, "Content-Length and Transfer-Encoding must not be sent together"
    if "content-length" in text:
        return 400, "the Content-Length header is not valid"
    if "transfer-encoding" in text:
        return 400, "the Transfer-Encoding header is not valid"
    return status, _DEFAULT_BAD


class EnvelopeRequestHandler(RequestHandler):
    """aiohttp's protocol, answering its own errors with the envelope."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is sent: no other answer can follow (aiohttp's own rule).
            raise ConnectionError("response already started; cannot send the error")
        code, text = describe(status, exc)
        if status >= 500:
            log.error("unhandled error outside the routes", exc_info=exc)
        else:
            # The type only: the exception's text quotes the request line, token and all.
            log.info("refused a malformed request (%s): %d", type(exc).__name__, code)
        resp = envelope(code, text)
        resp.force_close()
        return resp
