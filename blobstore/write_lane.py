"""A staged blob's writes, run one after another in a pool thread, with a few queued behind the
one running.

A large upload hands its staging a batch (about 1 MiB) at a time.  Waiting for each batch's
write before handing over the next made every batch pay two thread hand-offs on the critical
path: the pool thread waking and taking the GIL from an event loop busy receiving the next
batch (up to the interpreter's switch interval, 5 ms), then the loop waking to hear it was done.
A sealed upload, whose thread work per batch (AES, then the write) is longest, spent 1.6-3.9 s
per GiB in those waits on a loaded machine (docs/encryption.md).  Here the next batches wait
in a queue that the running thread drains: it goes from one to the next without a hand-off,
and the loop waits only when ``depth`` batches are already in flight, so memory stays a few
batches per upload.

Order and failure: the operations run in the order they were pushed, by one thread at a time
(a drain, started when the queue was idle), so a batch is never written before an earlier one.
Once one fails, every later one is skipped and reports the same failure: nothing is written
past a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial


class WriteLane:
    """Operations of one staging, run in order in a thread; at most ``depth`` in flight.

    ``run(fn)`` runs ``fn`` in a pool thread (the backend's executor)."""

    def __init__(self, run: Callable[[Callable[[], None]], Awaitable[None]], depth: int) -> None:
        self._run = run
        self._depth = depth
        self._lock = threading.Lock()
        # Pushed and not yet started (guarded by the lock).
        self._queued: deque[tuple[Callable[[], object], asyncio.Future[None]]] = deque()
        self._draining = False
        # The failure that stops the lane (set by the draining thread, or by abandon).
        self._broken: BaseException | None = None
        # Every pushed operation not yet waited for, oldest first (event loop only).
        self._inflight: deque[asyncio.Future[None]] = deque()
        self._drainers: set[asyncio.Future[None]] = set()

    @property
    def idle(self) -> bool:
        """True when nothing pushed is still queued or running."""
        return all(f.done() for f in self._inflight)

    async def push(self, op: Callable[[], object]) -> None:
        """Queue ``op`` behind the earlier operations; return once at most ``depth`` are in
        flight, waiting for the oldest if need be.  Raises the failure of an operation waited
        for (then ``op`` and everything after it is skipped)."""
        if self._broken is not None:
            # An earlier operation failed: say so now, not once the queue is full.
            await self.settle()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(_retrieve)
        with self._lock:
            self._queued.append((op, done))
            start = not self._draining
            self._draining = True
        self._inflight.append(done)
        if start:
            drainer = asyncio.ensure_future(self._run(partial(self._drain, loop)))
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        while len(self._inflight) > self._depth:
            await self._wait_oldest()

    async def settle(self) -> None:
        """Wait until every pushed operation is over; raise the lane's failure, if any.
        Cancelling the wait does not cancel them: they stay in flight until they are over."""
        while self._inflight:
            await self._wait_oldest()

    async def _wait_oldest(self) -> None:
        oldest = self._inflight[0]
        try:
            await asyncio.shield(oldest)
        finally:
            if oldest.done() and self._inflight and self._inflight[0] is oldest:
                self._inflight.popleft()

    def abandon(self) -> None:
        """Skip every operation not yet started (the staged bytes are being dropped)."""
        with self._lock:
            if self._broken is None:
                self._broken = _Abandoned()

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a pool thread: run the queued operations until there are none."""
        while True:
            with self._lock:
                if not self._queued:
                    self._draining = False
                    return
                op, done = self._queued.popleft()
                failure = self._broken
            if failure is None:
                try:
                    op()
                except BaseException as exc:  # reported to the pusher, like a failed write
                    with self._lock:
                        self._broken = failure = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: no one is waiting
                loop.call_soon_threadsafe(_resolve, done, failure)


class _Abandoned(Exception):
    """Why an operation pushed before :meth:`WriteLane.abandon` did not run."""


def _resolve(done: asyncio.Future[None], failure: BaseException | None) -> None:
    if done.done():
        return
    if failure is None:
        done.set_result(None)
    else:
        done.set_exception(failure)


def _retrieve(done: asyncio.Future[None]) -> None:
    """Mark a failure as seen: an operation skipped after an earlier failure, or one whose
    pusher was cancelled, reports it only through the futures waited for."""
    if not done.cancelled():
        done.exception()
