"""``filesvc serve --workers N``: a supervisor running N server processes on one port.

Each worker is an ordinary ``filesvc serve`` process bound with SO_REUSEPORT, so the kernel
spreads new connections across them and no byte of a request passes through the supervisor.
The supervisor starts worker 0 first (it creates the schema and runs thumbnails), then the
others; replaces a worker that dies, with a growing delay if they keep dying at start; and on
SIGTERM or SIGINT passes SIGTERM to every worker, each of which drains its own requests, and
waits for them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass

from filesvc.lifetime import die_with_parent
from filesvc.settings import Settings

log = logging.getLogger("filesvc.workers")

# A worker that lives shorter than this counts as failing at start; the restart delay doubles
# each time, up to the cap, so a broken configuration does not spin the CPU.
HEALTHY_AFTER_S = 5.0
FIRST_RESTART_DELAY_S = 0.2
MAX_RESTART_DELAY_S = 10.0
# Worker 0 creates the schema; the others start once it listens (or after this long anyway).
FIRST_WORKER_READY_S = 30.0
# Beyond a worker's own drain (FILESVC_DRAIN_TIMEOUT), so a draining worker is not cut.
STOP_GRACE_AFTER_DRAIN_S = 15.0


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    delay: float = FIRST_RESTART_DELAY_S


class Supervisor:
    """Keeps ``settings.workers`` server processes running until told to stop."""

    def __init__(self, settings: Settings, *, serve_args: list[str] | None = None) -> None:
        self.settings = settings
        self.serve_args = serve_args
        self.workers = [_Worker(i) for i in range(settings.workers)]
        self._stopping = asyncio.Event()

    def _argv(self) -> list[str]:
        """A worker is ``filesvc serve`` with the supervisor's own arguments (so every flag and
        ``--config`` reach it), or, without them, the settings that locate it."""
        s = self.settings
        args = self.serve_args
        if args is None:
            args = ["--host", s.host, "--port", str(s.port), "--data-dir", str(s.data_dir)]
            args += ["--workers", str(s.workers)]
        return [sys.executable, "-m", "filesvc.cli", "serve", *args]

    async def _spawn(self, worker: _Worker) -> asyncio.subprocess.Process:
        env = {**os.environ, "FILESVC_WORKER_INDEX": str(worker.index)}
        # A worker dies with the supervisor, even one killed outright: none goes on serving the
        # port beside the workers of the supervisor started next.
        proc = await asyncio.create_subprocess_exec(
            *self._argv(), env=env, preexec_fn=die_with_parent()
        )
        worker.proc = proc
        log.info("worker %d started (pid %d)", worker.index, proc.pid)
        return proc

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.settings.host, self.settings.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker slot until stop: start, wait, replace when it dies."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            proc = await self._spawn(worker)
            started = loop.time()
            code = await proc.wait()
            if self._stopping.is_set():
                return
            lived = loop.time() - started
            log.warning(
                "worker %d (pid %d) exited with %s; replacing it", worker.index, proc.pid, code
            )
            worker.delay = (
                FIRST_RESTART_DELAY_S
                if lived >= HEALTHY_AFTER_S
                else min(worker.delay * 2, MAX_RESTART_DELAY_S)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), worker.delay)

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop every worker (each drains) and return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        first, rest = self.workers[0], self.workers[1:]
        slots = [asyncio.create_task(self._keep(first))]
        deadline = loop.time() + FIRST_WORKER_READY_S
        while not await self._listening() and loop.time() < deadline:
            if self._stopping.is_set():
                break
            await asyncio.sleep(0.05)
        slots += [asyncio.create_task(self._keep(w)) for w in rest]
        log.info(
            "supervising %d workers on http://%s:%d",
            len(self.workers),
            self.settings.host,
            self.settings.port,
        )
        await self._stopping.wait()
        log.info("stopping: SIGTERM to every worker")
        running = [w.proc for w in self.workers if w.proc is not None]
        for proc in running:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await asyncio.wait_for(
                    proc.wait(), self.settings.drain_timeout + STOP_GRACE_AFTER_DRAIN_S
                )
            except TimeoutError:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        for slot in slots:
            slot.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
