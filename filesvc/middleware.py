"""The one place that renders errors, and request metrics/logging.

Every error answers ``{"statusCode": N, "error": "<reason phrase>", "message": "..."}``; no stack
trace, path or exception text of an internal fault ever reaches the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler

from blobstore.confirmations import BlobGone
from blobstore.engine.base import DatabaseUnavailable
from blobstore.errors import (
    BlobCorrupt,
    BlobNotFound,
    BlobStoreError,
    CollisionLimit,
    KeyUnavailable,
    NameTaken,
    StoreFull,
    StoreUnavailable,
)
from filesvc import accesslog
from filesvc.appkeys import ACCESS_LOG, INFLIGHT, METRICS, READY
from filesvc.errors import ApiError, BadRequest
from filesvc.jsonbody import json_answer
from filesvc.params import check_query_utf8, parse_company_id, parse_file_id
from filesvc.routes.common import PREFIX

log = logging.getLogger(__name__)

# The status logged and counted for a request whose client went away before the answer (nginx's
# convention): no answer was sent, and it was not the server's fault.
CLIENT_CLOSED = 499

# Seconds a client is told to wait when the metadata database is unreachable: long enough for a
# failover or restart, short enough that clients come back soon after.
DATABASE_RETRY_AFTER = 5

_HTTP_MESSAGES = {
    404: "no route matches this path",
    405: "this method is not allowed on this path",
    413: "the request body is too large",
}


# Statuses outside RFC 9110 that the service answers: tus's checksum mismatch.
_EXTRA_PHRASES = {460: "Checksum Mismatch"}


def envelope(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The error body of docs/api.md."""
    phrase = _EXTRA_PHRASES.get(status) or HTTPStatus(status).phrase
    return json_answer(
        {"statusCode": status, "error": phrase, "message": message},
        status=status,
        reason=phrase,
        headers=headers,
    )


def _store_error(exc: BlobStoreError) -> web.Response:
    if isinstance(exc, DatabaseUnavailable):
        log.warning("%s", exc)
        return envelope(
            503,
            "the metadata database is unavailable: nothing was saved; retry later",
            {"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if isinstance(exc, BlobGone):
        return envelope(
            503,
            "the store reclaimed this content while it was uploading: nothing was saved;"
            " send it again",
            {"Retry-After": "1"},
        )
    if isinstance(exc, NameTaken):
        log.warning("%s", exc)
        return envelope(
            503,
            "another upload took this content's name meanwhile: nothing was saved; send it again",
            {"Retry-After": "1"},
        )
    if isinstance(exc, StoreFull):
        return envelope(507, "the file store is full: nothing was saved; retry once space is freed")
    if isinstance(exc, StoreUnavailable):
        log.warning("blob store unavailable: %s", exc)
        return envelope(
            503,
            "the file store is unavailable; retry later",
            {"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, CollisionLimit):
        log.error("hash collision limit reached: %s", exc)
        return envelope(500, "the file store refused this content; nothing was saved")
    if isinstance(exc, BlobCorrupt):
        log.error("sealed blob failed authentication: %s", exc)
        return envelope(500, "stored content of this file is damaged; an operator must run fsck")
    if isinstance(exc, KeyUnavailable):
        log.error("encryption key unavailable: %s", exc)
        return envelope(500, "the file store cannot decrypt this content; an operator must check")
    if isinstance(exc, BlobNotFound):
        log.error("blob missing: %s", exc)
        return envelope(500, "stored content of this file is missing; an operator must run fsck")
    log.error("storage failure: %s", exc)
    return envelope(500, "the file store failed: nothing was saved; retry later")


def _render(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The envelope for an error, exactly once; re-raises what is not an answer (a client gone,
    a redirect)."""
    if isinstance(exc, ApiError):
        response = envelope(exc.status, exc.message, exc.headers)
        if exc.closes_connection:
            response.force_close()
        return response
    if isinstance(exc, BlobStoreError):
        return _store_error(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
        message = _HTTP_MESSAGES.get(exc.status, HTTPStatus(exc.status).phrase)
        return envelope(exc.status, message, headers)
    if isinstance(exc, ConnectionError):
        raise exc
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return envelope(500, "internal error; it has been logged")


def _valid(parse: Callable[[str], str], raw: str | None) -> str | None:
    """A path id fit for a log line, or None: a hostile value never reaches the log."""
    if raw is None:
        return None
    try:
        return parse(raw)
    except ApiError:
        return None


def _check(request: web.Request) -> None:
    """What every request passes before its handler: the service is ready (the files API
    answers 503 while PostgreSQL is still being connected to), and the request target is clean:
    400 for raw non-ASCII bytes (aiohttp's C parser refuses them itself; its pure-Python fallback
    passes them on as U+FFFD) and for a query string whose percent-decoded bytes are not UTF-8,
    on every route, before a lenient parse turns them into U+FFFD."""
    if not request.app[READY].is_set() and request.path.startswith(PREFIX):
        raise DatabaseUnavailable("not ready: still connecting to the metadata database")
    if not request.raw_path.isascii():
        raise BadRequest("the request target is not a valid URL")
    query = request.rel_url.raw_query_string
    if query:
        check_query_utf8(query)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware layer (each layer costs a call chain per request): check the request,
    map errors to the envelope, count, time and log it by route pattern (never by raw path: ids
    are unbounded, and a query string may hold a token)."""
    app = request.app
    inflight = app[INFLIGHT]
    inflight.enter()
    start = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        try:
            _check(request)
            response = await handler(request)
        except Exception as exc:  # CancelledError is a BaseException: it passes
            response = _render(request, exc)
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionError):
        status = CLIENT_CLOSED
        raise
    finally:
        inflight.leave()
        info = request.match_info
        resource = info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        elapsed = time.perf_counter() - start
        sent = accesslog.bytes_sent(request, response)
        metrics = app[METRICS]
        count, latency = metrics.request_series(route, request.method, status)
        count.inc()
        latency.observe(elapsed)
        metrics.received_bytes.inc(request.content.total_bytes)
        metrics.sent_bytes.inc(sent)
        access = app[ACCESS_LOG]
        if access.wanted(request.path):
            access.write(
                accesslog.record(
                    request,
                    route=route,
                    status=status,
                    bytes_out=sent,
                    seconds=elapsed,
                    company=_valid(parse_company_id, info.get("company_id")),
                    file_id=_valid(parse_file_id, info.get("file_id")),
                )
            )
