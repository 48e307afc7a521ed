"""Headers every tus answer carries, and CORS for browser clients (tus-js-client, Uppy).

Applied when a response is prepared, so error envelopes rendered by the middleware carry them
too (a browser cannot read a status whose response lacks the CORS headers).  Origins must be
configured (``FILESVC_CORS_ORIGINS``); by default no origin is allowed.
"""

from __future__ import annotations

from aiohttp import web

from filesvc.appkeys import SETTINGS
from filesvc.tus.headers import TUS_VERSION

ALLOW_METHODS = "POST, HEAD, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = (
    "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Defer-Length,"
    " Upload-Metadata, Upload-Offset, Upload-Concat, Upload-Checksum, X-Requested-With"
)
EXPOSE_HEADERS = (
    "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size,"
    " Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Defer-Length,"
    " Upload-Metadata, Upload-Concat, Upload-Expires"
)
PREFLIGHT_MAX_AGE = "86400"


def _is_tus(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and "/uploads" in resource.canonical


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin in allowed


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Add ``Tus-Resumable`` and, for an allowed ``Origin``, the CORS headers."""
    if not _is_tus(request):
        return
    response.headers["Tus-Resumable"] = TUS_VERSION
    origin = request.headers.get("Origin")
    if origin is None:
        return
    response.headers.add("Vary", "Origin")
    if not origin_allowed(origin, request.app[SETTINGS].cors_origins):
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
