"""Requests in flight, counted so that shutdown can drain uploads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from filesvc.auth import Caller
from filesvc.errors import ServiceUnavailable, TooManyRequests


class InFlight:
    """Counts requests being handled, so shutdown can wait for uploads to finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drained(self) -> None:
        """Return once no request is being handled."""
        await self._idle.wait()


# Who an upload slot is counted against: the path's company and the token's application, or its
# user when it is no application's token (tagged, so an application and a user of the same id
# are two callers).
CallerKey = tuple[str, str, str]


def caller_key(caller: Caller, company_id: str) -> CallerKey:
    """The key the per-caller upload cap counts ``caller``'s uploads in ``company_id`` under."""
    if caller.application_id is not None:
        return (company_id, "application", caller.application_id)
    return (company_id, "user", caller.user_id)


class UploadSlots:
    """Admission for request bodies: past ``limit`` uploads at once, a new one is refused at
    once (503 with Retry-After) instead of queueing memory and file descriptors without bound;
    past ``per_caller`` uploads of one caller, that caller's next one is refused with 429, so
    one caller (a script, a slow-loris) cannot take every slot and lock the others out."""

    def __init__(self, limit: int, per_caller: int) -> None:
        self.limit = limit
        self.per_caller = per_caller
        self.active = 0
        self._held: dict[CallerKey, int] = {}

    @contextlib.contextmanager
    def slot(self, key: CallerKey) -> Iterator[None]:
        """Hold one upload slot for the block, counted against ``key``; raise TooManyRequests
        when that caller holds its share already, ServiceUnavailable when no slot is free."""
        held = self._held.get(key, 0)
        if held >= self.per_caller:
            raise TooManyRequests(
                f"you already have {held} uploads in progress, the most allowed at once;"
                " retry when one of them has finished"
            )
        if self.active >= self.limit:
            raise ServiceUnavailable("the server is busy with other uploads; retry in a moment")
        self.active += 1
        self._held[key] = held + 1
        try:
            yield
        finally:
            self.active -= 1
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]
