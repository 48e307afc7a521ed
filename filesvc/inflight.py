"""Requests in flight, counted so that shutdown can drain uploads."""

from __future__ import annotations

import asyncio


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
