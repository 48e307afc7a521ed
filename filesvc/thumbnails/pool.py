"""Running the renderer: worker processes, a time limit, and memory admitted in pixels.

libvips, PDFium, FFmpeg and LibreOffice run in a few long-lived worker processes
(``filesvc.thumbnails.worker``, started fresh with ``python -m``: docs/measured.md says a forked
pool hangs once libvips has run), which keeps their memory out of the server process and lets a job
that overruns its time limit be killed and its worker replaced: a libvips call cannot be
interrupted from inside.  Before a render, its cost in pixels is read from the headers
(``probe_pixels``) and admitted by a semaphore counted in pixels, so N concurrent large images
cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from filesvc.lifetime import die_with_parent
from filesvc.thumbnails import allocator
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.result import Rendered, Thumbnail

log = logging.getLogger(__name__)

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


def worker_environment(base: Mapping[str, str], workers: int) -> dict[str, str]:
    """The environment of a worker process, one of ``workers`` on this machine."""
    # libvips runs a thread pool per call (one thread per core by default): with several worker
    # processes that oversubscribes the cores.
    cores = os.cpu_count() or 1
    return {**allocator.environment(base), "VIPS_CONCURRENCY": str(max(1, cores // workers))}


class JobTimeout(Exception):
    """A render ran past the time limit; its worker was killed."""


class WorkerFailed(Exception):
    """A worker process died or answered nonsense."""


# Largest answer line a worker may send (JSON of a few thumbnails' sizes).
MAX_ANSWER_LINE = 64 << 10


class _Worker:
    """One worker process (``python -m filesvc.thumbnails.worker``) and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.jobs = 0

    @classmethod
    async def start(cls, env: dict[str, str]) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "filesvc.thumbnails.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=MAX_ANSWER_LINE,
            # A server killed outright takes its workers with it: one left rendering would hold a
            # core and its memory with no parent left to enforce the time limit.
            preexec_fn=die_with_parent(),
        )
        return cls(proc)

    async def ask(self, request: dict[str, object]) -> tuple[dict[str, object], bytes]:
        """Send one request; the answer's JSON head and the bytes that follow it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.jobs += 1
        # Each request carries a number the answer must echo: an answer left over from an
        # earlier request (a worker that said more than it was asked) is never taken for this
        # one, which may be another company's file.  The caller kills a worker that fails here.
        number = self.jobs
        self.proc.stdin.write(json.dumps({**request, "id": number}).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise WorkerFailed("worker exited")
        head = json.loads(line)
        if not isinstance(head, dict):
            raise WorkerFailed("worker answered nonsense")
        if head.get("id") != number:
            raise WorkerFailed("worker answered another request")
        size = _data_size(head)
        data = await self.proc.stdout.readexactly(size) if size else b""
        return head, data

    async def stop(self, *, kill: bool) -> None:
        if self.proc.returncode is None:
            if kill:
                self.proc.kill()
            elif self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()


class ProcessRenderer:
    """The production renderer (a :data:`filesvc.thumbnails.jobs.Renderer`): jobs go to a few
    long-lived worker processes; one that overruns the time limit is killed and replaced.
    ``converter`` is the LibreOffice program for office documents (None: not installed)."""

    def __init__(
        self,
        limits: RenderLimits,
        *,
        workers: int,
        job_timeout: float,
        pixel_budget: int,
        converter: str | None = None,
    ) -> None:
        self.limits = limits
        self.converter = converter
        self.workers = workers
        self.job_timeout = job_timeout
        self.budget = PixelBudget(pixel_budget)
        self._idle: list[_Worker] = []
        # Workers running a job: close() must reach them too, or one busy at shutdown is left
        # running (until the service's process exits) when its job ends.
        self._busy: set[_Worker] = set()
        self._closed = False
        self._slots = asyncio.Semaphore(workers)
        self._limits_json = limits.to_json()
        self._env = worker_environment(os.environ, workers)

    async def __call__(self, path: Path) -> Rendered:
        try:
            head, _ = await self._ask({"op": "probe", "path": str(path)})
            pixels = int(str(head.get("pixels", 0)))
            async with self.budget.hold(pixels):
                head, data = await self._ask({"op": "render", "path": str(path)})
        except JobTimeout:
            return Rendered("error", reason=f"rendering took longer than {self.job_timeout:g}s")
        except WorkerFailed as exc:
            log.error("thumbnail worker failed: %s", exc)
            return Rendered("error", reason="the thumbnail worker failed")
        return _rendered(head, data)

    async def _ask(self, request: dict[str, object]) -> tuple[dict[str, object], bytes]:
        async with self._slots:
            if self._closed:
                raise WorkerFailed("the renderer is closed")
            worker = self._idle.pop() if self._idle else await _Worker.start(self._env)
            self._busy.add(worker)
            try:
                if self._closed:  # closed while this worker was starting
                    raise WorkerFailed("the renderer is closed")
                answer = await asyncio.wait_for(
                    worker.ask(
                        {**request, "limits": self._limits_json, "converter": self.converter}
                    ),
                    self.job_timeout,
                )
            except TimeoutError:
                await worker.stop(kill=True)
                raise JobTimeout from None
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
                await worker.stop(kill=True)
                raise WorkerFailed(type(exc).__name__) from None
            except BaseException:
                await asyncio.shield(worker.stop(kill=True))
                raise
            finally:
                self._busy.discard(worker)
            if self._closed or worker.jobs >= TASKS_PER_WORKER:
                await worker.stop(kill=False)
            else:
                self._idle.append(worker)
            return answer

    async def close(self) -> None:
        """Stop the worker processes: idle ones, and busy ones too (their jobs fail).  No
        worker starts after this."""
        self._closed = True
        busy, self._busy = list(self._busy), set()
        idle, self._idle = self._idle, []
        for worker in busy:
            await worker.stop(kill=True)
        for worker in idle:
            await worker.stop(kill=False)


def _data_size(head: dict[str, object]) -> int:
    """Bytes that follow an answer's head: the sum of its thumbnails' sizes."""
    thumbs = head.get("thumbnails", [])
    if not isinstance(thumbs, list):
        raise WorkerFailed("worker answered nonsense")
    total = 0
    for t in thumbs:
        size = t.get("size") if isinstance(t, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise WorkerFailed("worker answered nonsense")
        total += size
    return total


def _rendered(head: dict[str, object], data: bytes) -> Rendered:
    thumbs = []
    offset = 0
    raw = head.get("thumbnails", [])
    for t in raw if isinstance(raw, list) else []:
        size = int(t["size"])
        thumbs.append(
            Thumbnail(
                data[offset : offset + size], str(t["mime"]), int(t["width"]), int(t["height"])
            )
        )
        offset += size
    reason = head.get("reason")
    return Rendered(
        "done" if head.get("status") == "done" else "error",
        tuple(thumbs),
        reason if isinstance(reason, str) else None,
    )
