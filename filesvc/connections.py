"""Connections: the listening socket, and a deadline for each request's line and headers.

aiohttp closes a connection that sits idle between requests after ``keepalive_timeout`` (the
timer is armed when the connection opens and after each response), but it has no deadline for
the head itself: a client trickling one header byte at a time holds its socket, its parser
buffer and a descriptor until the keep-alive timer happens to fire.  ``HeadDeadlineHandler``
adds that deadline, as nginx's ``client_header_timeout`` does: a request's line and headers must
be complete within ``head_timeout`` of the head's first byte (of the connection's opening, for
its first request), or the connection is closed without an answer, even if an earlier request
on it is still being answered (a client pipelining behind a trickled head loses both).  Idle
time between requests stays governed by aiohttp's keep-alive timer.

Why a subclass of ``web.RequestHandler`` built by our own protocol factory: aiohttp's ``Server``
constructs ``RequestHandler`` itself, with no option for another class or for a head deadline.
The head is parsed inside ``RequestHandler.data_received``, the asyncio ``Protocol`` callback,
so that is the one place that sees both the first byte of a head and the moment the parser
completes it.  The subclass overrides only the ``Protocol`` callbacks (``connection_made``,
``data_received``, ``connection_lost``), always calling aiohttp's own, and reads two of its
attributes: ``_request_count`` (heads parsed so far, which moves when a head completes) and
``_messages`` (the queue those requests land in, to follow the last request's body to its end,
after which the next byte starts a new head).  The alternatives were worse: a timer in a
middleware starts only once the head is parsed, which is too late; wrapping the parser means
touching its C implementation; a proxy in front would parse HTTP a second time; patching aiohttp
at import changes every server in the process, tests' included.  The end-to-end tests with real
sockets fail if a new aiohttp changes what these attributes mean.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

from filesvc.protocol import EnvelopeRequestHandler
from filesvc.settings import Settings

# Pending connections the kernel queues before accept (aiohttp's TCPSite default).
LISTEN_BACKLOG = 128


class HeadDeadlineHandler(EnvelopeRequestHandler):
    """aiohttp's HTTP/1 protocol, with a deadline on receiving each request's head (and, from
    :class:`EnvelopeRequestHandler`, the parser's own errors in the envelope)."""

    __slots__ = ("_head_loop", "_head_parsed", "_head_timeout", "_head_timer", "_last_body")

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        head_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._head_loop = loop
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        # Heads parsed when the timer was armed: the deadline is met once this count moves.
        self._head_parsed = 0
        # Body of the last request parsed; the next head starts once it has ended.
        self._last_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        awaiting_head = self._last_body is None or self._last_body.is_eof()
        if data and awaiting_head and self._head_timer is None:
            self._arm_head_deadline()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._cancel_head_deadline()
            if self._messages:
                self._last_body = self._messages[-1][1]

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        self._last_body = None
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_parsed = self._request_count
        self._head_timer = self._head_loop.call_later(self._head_timeout, self._head_overdue)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._request_count == self._head_parsed:
            self.force_close()


async def listen(runner: web.AppRunner, settings: Settings) -> asyncio.Server:
    """Accept connections for ``runner``'s application (set up already) on the configured
    address, each served by a ``HeadDeadlineHandler``.  Closing the returned server stops
    accepting without touching connections in flight."""
    manager = runner.server
    if manager is None:
        raise RuntimeError("the runner must be set up before listening")
    loop = asyncio.get_running_loop()

    def protocol() -> HeadDeadlineHandler:
        return HeadDeadlineHandler(
            manager,
            loop=loop,
            head_timeout=settings.head_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            access_log=None,  # filesvc.access logs every request, in the metrics middleware
        )

    return await loop.create_server(
        protocol,
        settings.host,
        settings.port,
        reuse_address=True,
        # A supervised worker shares the port with its siblings (``--workers``).
        reuse_port=settings.worker_index is not None or None,
        backlog=LISTEN_BACKLOG,
    )
