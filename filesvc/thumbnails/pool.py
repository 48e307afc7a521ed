"""Running the renderer: spawned worker processes, a time limit, and memory admitted in pixels.

libvips and PDFium run in a ``spawn`` process pool (MEASURED.md: a fork-based pool hangs once
libvips has run), which also keeps their memory out of the server process and lets a job that
overruns its time limit be killed: a libvips call cannot be interrupted from inside.  Before a
render, its cost in pixels is read from the headers (``probe_pixels``) and admitted by a
semaphore counted in pixels, so N concurrent large images cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

from filesvc.thumbjobs import Rendered, Thumb
from filesvc.thumbnails.render import RenderLimits, probe_pixels, render_thumbnails

log = logging.getLogger(__name__)
T = TypeVar("T")

# Jobs a worker process runs before it is replaced: bounds what a leak in a decoder can hold.
TASKS_PER_WORKER = 200


class PixelBudget:
    """A semaphore counted in pixels.  A job larger than the whole budget runs alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Wait until ``pixels`` fit beside the jobs running, hold them for the block."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.in_use == 0 or self.in_use + pixels <= self.capacity
            )
            self.in_use += pixels
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()


class JobTimeout(Exception):
    """A render ran past the time limit; its worker was killed."""


class ProcessRenderer:
    """The production renderer (a :data:`filesvc.thumbjobs.Renderer`)."""

    def __init__(
        self,
        limits: RenderLimits,
        *,
        workers: int,
        job_timeout: float,
        pixel_budget: int,
    ) -> None:
        self.limits = limits
        self.workers = workers
        self.job_timeout = job_timeout
        self.budget = PixelBudget(pixel_budget)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = asyncio.Lock()

    async def __call__(self, path: Path) -> Rendered:
        try:
            pixels = await self._run(probe_pixels, path, self.limits)
            async with self.budget.hold(pixels):
                outcome = await self._run(render_thumbnails, path, self.limits)
        except JobTimeout:
            return Rendered("error", reason=f"rendering took longer than {self.job_timeout:g}s")
        thumbs = tuple(Thumb(t.data, t.mime, t.width, t.height) for t in outcome.thumbnails)
        return Rendered(outcome.status, thumbs, outcome.reason)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        for attempt in (1, 2):
            pool = await self._ensure_pool()
            # submit() may spawn a worker process: keep that off the event loop.
            future = asyncio.wrap_future(await asyncio.to_thread(pool.submit, fn, *args))
            try:
                return await asyncio.wait_for(future, self.job_timeout)
            except TimeoutError:
                await self._kill(pool)
                raise JobTimeout from None
            except BrokenProcessPool:
                # Another job's timeout killed the pool under us, or a worker crashed.
                await self._kill(pool)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _ensure_pool(self) -> ProcessPoolExecutor:
        async with self._pool_lock:
            if self._pool is None:
                # libvips runs a thread pool per call (one thread per core by default): with
                # several worker processes that oversubscribes the cores.  Spawned workers
                # inherit this environment.
                cores = os.cpu_count() or 1
                os.environ.setdefault("VIPS_CONCURRENCY", str(max(1, cores // self.workers)))
                # Making the pool's queues and locks makes system calls: off the loop.
                self._pool = await asyncio.to_thread(
                    ProcessPoolExecutor,
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    max_tasks_per_child=TASKS_PER_WORKER,
                )
            return self._pool

    async def _kill(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        # The executor has no public way to stop a running task; its worker processes are the
        # only handle on a libvips call that will not return.
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                process.kill()
        await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    async def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
