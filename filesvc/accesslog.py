"""The access log: one structured line per request, and the request id that ties it together.

Each line carries the request id (also sent as ``X-Request-Id``), method, route template (never
the raw path or query: ids are in their own fields, and a ``?token=`` must never be written),
status, body bytes in and out, duration, and the company and file id when the path holds valid
ones.  ``key=value`` text by default, one JSON object per line as an option.  Health and metrics
probes are left out unless asked for: they would drown everything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping

from aiohttp import web

log = logging.getLogger("filesvc.access")

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# Body bytes written by a streaming handler (counted as they go: a cut download sent fewer).
BODY_BYTES_SENT = web.RequestKey("body_bytes_sent", int)
# The file a request made (a create has no id in its path).
FILE_ID = web.RequestKey("file_id", str)
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/health", "/metrics"})
# A request id a proxy in front of us already gave is kept, so one id follows the request across
# hops; it must be short and plain, since it goes into every log line and back to the client.
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
# Printable ASCII but space, '"' and '=': written as it is; anything else is quoted.
_BARE = re.compile(r"[\x21\x23-\x3c\x3e-\x7e]+")
_NUMBERS = (int, float)


def request_id(request: web.Request) -> str:
    """The request's id: a proxy's well-formed ``X-Request-Id``, else a new random one."""
    known = request.get(REQUEST_ID)
    if known is None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        # 128 random bits as 32 hex digits (a uuid4's hex costs several times more).
        known = incoming if _INCOMING_ID.match(incoming) else os.urandom(16).hex()
        request[REQUEST_ID] = known
    return known


def count_sent(request: web.Request, size: int) -> None:
    """Note body bytes a streaming handler sent."""
    request[BODY_BYTES_SENT] = request.get(BODY_BYTES_SENT, 0) + size


def bytes_sent(request: web.Request, response: web.StreamResponse | None) -> int:
    """Body bytes of the answer: what a streaming handler counted, else the body's length."""
    counted: int | None = request.get(BODY_BYTES_SENT)
    if counted is not None:
        return counted
    if response is None:
        return 0
    if response.prepared:
        return response.body_length
    return response.content_length or 0  # a plain Response is sent after the middleware


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer, error or not, names its request."""
    response.headers[REQUEST_ID_HEADER] = request_id(request)


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, _NUMBERS):
        return str(value)  # never quoted: the regex below would pass it anyway
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text)


def format_text(fields: Mapping[str, object]) -> str:
    return " ".join([f"{key}={_value(value)}" for key, value in fields.items()])


def format_json(fields: Mapping[str, object]) -> str:
    return json.dumps(fields, separators=(",", ":"))


class AccessLog:
    """Writes the lines in the configured format; ``off`` writes nothing."""

    def __init__(self, mode: str, *, probes: bool) -> None:
        self.mode = mode
        self.probes = probes
        self._pending: list[str] = []

    def wanted(self, path: str) -> bool:
        return self.mode != "off" and (self.probes or path not in PROBE_PATHS)

    def write(self, fields: Mapping[str, object]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        line = format_json(fields) if self.mode == "json" else format_text(fields)
        # The lines of one turn of the event loop are written together, once it has run its
        # ready callbacks: a log record and a write to stderr per request measured 170-250 us
        # of a 4 KiB upload's ~1,400 us of server CPU (bench/README.md), one per turn serves
        # all the requests answered in it.  The stream still gets one line per request.
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop running: at once
                self.flush()

    def flush(self) -> None:
        """Write the lines waiting for the end of the loop's turn."""
        lines, self._pending = self._pending, []
        if lines:
            # The record is made here rather than by ``log.info``, which walks the stack to
            # find its caller (a tenth of a 1 MiB range's event-loop time, py-spy): the access
            # format is the message alone, so where it came from is never written.
            text = "\n".join(lines)
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, text, (), None))


class _Clock:
    """The log line's UTC time to the second, formatted once a second: ``time.strftime`` looks
    for the local time zone on every call (a ``stat`` of /etc/localtime), which measured 14 % of
    a 4 KiB download's CPU."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + "Z"
            self._second = second
        return self._text


_clock = _Clock()


def record(
    request: web.Request,
    *,
    route: str,
    status: int,
    bytes_out: int,
    seconds: float,
    company: str | None,
    file_id: str | None,
) -> dict[str, object]:
    """The fields of one line, in a fixed order."""
    return {
        "time": _clock.now(),
        "request_id": request_id(request),
        "method": request.method,
        "route": route,
        "status": status,
        "bytes_in": request.content.total_bytes,
        "bytes_out": bytes_out,
        "duration_ms": round(seconds * 1000, 3),
        "company": company,
        "file_id": request.get(FILE_ID, file_id),
    }


def configure() -> None:
    """Send access lines to stderr bare (no level or logger prefix), so a JSON line is JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
