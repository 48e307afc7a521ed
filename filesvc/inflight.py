"""Requests in flight, counted so that shutdown can drain uploads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from filesvc.errors import ServiceUnavailable


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


class UploadSlots:
    """Admission for request bodies: past ``limit`` uploads at once, a new one is refused at
    once (503 with Retry-After) instead of queueing memory and file descriptors without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one upload slot for the block; raise ServiceUnavailable when none is free."""
        if self.active >= self.limit:
            raise ServiceUnavailable("the server is busy with other uploads; retry in a moment")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
