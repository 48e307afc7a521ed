"""Thumbnail jobs: queued in the database with the upload's completion (:mod:`filesvc.jobqueue`),
claimed with a lease and run by a bounded set of workers in each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from blobstore import confirmations, inline, manifests
from blobstore.engine.base import DatabaseUnavailable, Engine
from blobstore.errors import NameTaken
from blobstore.port import LocalFiles
from blobstore.refs import is_sealed
from blobstore.store import ContentStore, PutResult, inline_refs
from filesvc import jobqueue, repo
from filesvc.thumbnails.limits import DEFAULT_MAX_INPUT_BYTES
from filesvc.thumbnails.memfile import MemFile, fill
from filesvc.thumbnails.result import NOT_PREVIEWABLE, Rendered
from filesvc.thumbnails.sniff import (
    SNIFF_BYTES,
    may_be_office,
    may_have_thumbnails,
    video_container,
)

log = logging.getLogger(__name__)

# A job that failed this many times (a crash mid-render counts) is given up as an error, so a
# poisonous file cannot crash-loop the service.
MAX_ATTEMPTS = 3
# Commits of a job's thumbnails that may lose a race for an inline name (each put after a lost
# race takes a name of its own, so losing twice means colliding contents keep arriving).
NAME_RACE_ATTEMPTS = 3
NAME_RACE_REASON = "another content took a thumbnail's blob name each time it was stored"
# Idle workers look for jobs (other processes', and ones whose lease ran out) this often.
POLL_SECONDS = 1.0
# thumbnail_sync waits look at the table this often, for a job another process runs.
WAIT_POLL_SECONDS = 0.25


class ThumbnailJobs(Protocol):
    """What the upload path needs of the thumbnail machinery."""

    def notify(self, file_id: str, generation: int) -> None:
        """A job was committed for this content generation: run it soon."""

    async def wait(self, file_id: str, generation: int, limit: float) -> None:
        """Return when that job has finished or after ``limit`` seconds, whichever is first.
        Never raises on timeout: the caller answers with the status as it stands."""

    def previewable(self, head: bytes) -> bool:
        """False when a file starting with ``head`` can have no thumbnails: it is then settled
        at upload, without a job."""


Renderer = Callable[[Path], Awaitable[Rendered]]
# Told of every finished job: its result and how long it ran (seconds), for metrics.
Observer = Callable[[Rendered, float], None]


async def no_thumbnails(path: Path) -> Rendered:
    """A renderer that makes none (used when thumbnails are switched off)."""
    return Rendered("done")


class ThumbnailRunner:
    """Runs jobs with ``workers`` concurrent tasks.  Each claims jobs from the table with a
    lease, so the jobs of every process and instance are shared out and a job whose claimer
    died is taken over when its lease ends.  :meth:`notify` wakes the workers at once; without
    it they look every :data:`POLL_SECONDS`."""

    def __init__(
        self,
        db: Engine,
        store: ContentStore,
        renderer: Renderer,
        *,
        work_dir: Path,
        workers: int,
        lease: float,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        poll: float = POLL_SECONDS,
        ready: asyncio.Event | None = None,
        observer: Observer | None = None,
        office: bool = False,
        active: bool = True,
        scope_of: Callable[[str], str | None] = lambda _company: None,
    ) -> None:
        self.db = db
        self.office = office
        self.observer = observer
        self.store = store
        self.renderer = renderer
        self.work_dir = work_dir
        self.workers = workers
        self.lease_ms = int(lease * 1000)
        self.max_input_bytes = max_input_bytes
        self.poll = poll
        # A passive runner (a server process that leaves thumbnails to another one of its
        # host, ``filesvc serve --workers N``) claims nothing; its waits watch the table.
        self.active = active
        # Thumbnails are put in their file's company scope: a thumbnail shared across companies
        # would make thumbnail_sync's timing a dedup oracle.
        self._scope_of = scope_of
        # Set once the database is connected and migrated (PostgreSQL may come later).
        self._ready = ready
        # host/pid/random: a later process on this host can tell that a lease's holder died.
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
        self._reaped = False
        self._wake = asyncio.Event()
        self._events: dict[tuple[str, int], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def waiting_jobs(self) -> int:
        """Jobs waiting for a worker, in every process sharing the database."""
        async with self.db.read() as tx:
            return await jobqueue.waiting_jobs(tx)

    async def start(self) -> None:
        """Start the workers (they wait for the database if it is not reachable yet)."""
        if not self.active:
            return
        await asyncio.to_thread(self._clear_work_dir)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    def _clear_work_dir(self) -> None:
        """Releases before encryption at rest copied multi-chunk files here for the worker
        (plaintext on a disk); nothing is written here now, so whatever is left goes."""
        if not self.work_dir.is_dir():
            return
        for leftover in self.work_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        with contextlib.suppress(OSError):
            self.work_dir.rmdir()

    async def stop(self) -> None:
        """Stop the workers; unfinished jobs stay in the table, their leases given back so any
        other process may take them at once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            with contextlib.suppress(Exception):
                async with self.db.write() as tx:
                    await jobqueue.release(tx, self.owner)
        self._tasks = []

    async def _reap_dead_holders(self) -> None:
        """Give back the leases of processes of this host that died (kill -9, a crash): their
        jobs resume now instead of when the leases run out.  Other hosts' leases run out."""
        async with self.db.write() as tx:
            for owner in await jobqueue.lease_owners(tx, now_ms=_now_ms()):
                host, _, rest = owner.partition("/")
                pid = rest.partition("/")[0]
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    await jobqueue.release(tx, owner)
        self._reaped = True

    @property
    def alive(self) -> bool:
        """Every worker task is running (a task that ended took its share of the jobs with it);
        a passive runner has none by design and is always alive."""
        if not self.active:
            return True
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def previewable(self, head: bytes) -> bool:
        if may_have_thumbnails(head, office=self.office):
            return True
        if may_be_office(head):
            # The converter's absence was logged at start; say it per file too, quietly.
            log.debug("office document or text: no converter installed, no thumbnails")
        return False

    def notify(self, file_id: str, generation: int) -> None:
        self._wake.set()

    async def wait(self, file_id: str, generation: int, limit: float) -> None:
        """Until the job is finished, by this process (woken at once) or any other (seen in
        the table), or ``limit`` seconds have passed."""
        key = (file_id, generation)
        event = self._events.setdefault(key, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            while not event.is_set():
                with contextlib.suppress(DatabaseUnavailable):
                    async with self.db.read() as tx:
                        state = await jobqueue.state(tx, file_id, generation)
                    if state not in ("pending", "running"):
                        return
                left = deadline - loop.time()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, WAIT_POLL_SECONDS))
        finally:
            self._events.pop(key, None)

    def _done(self, file_id: str, generation: int) -> None:
        event = self._events.get((file_id, generation))
        if event is not None:
            event.set()

    async def _worker(self) -> None:
        if self._ready is not None:
            await self._ready.wait()
        while True:
            # Cleared before the look at the table, not after it finds nothing: a job committed
            # (and notified) while the look is under way would otherwise wait for the next poll.
            self._wake.clear()
            try:
                if not self._reaped:
                    await self._reap_dead_holders()
                job = None
                async with self.db.read() as tx:
                    found = await jobqueue.claimable(tx, now_ms=_now_ms())
                if found:
                    async with self.db.write() as tx:
                        job = await jobqueue.claim(
                            tx, self.owner, now_ms=_now_ms(), lease_ms=self.lease_ms
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot claim thumbnail jobs: %s", exc)
                await asyncio.sleep(self.poll)
                continue
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("thumbnail job failed")
                with contextlib.suppress(Exception):
                    await self._finish(
                        job.file_id, job.generation, Rendered("error", reason="internal error")
                    )
            finally:
                self._done(job.file_id, job.generation)

    async def _run(self, job: jobqueue.Claimed) -> None:
        started = time.monotonic()
        file_id, generation = job.file_id, job.generation
        if job.attempts > MAX_ATTEMPTS:
            reason = f"the thumbnail worker crashed {MAX_ATTEMPTS} times on this file"
            log.warning("thumbnails of %s: error: %s", file_id, reason)
            await self._finish(file_id, generation, Rendered("error", reason=reason))
            return
        async with self.db.read() as tx:
            current = await jobqueue.generation(tx, file_id)
            chunks = await manifests.entries(tx, file_id, "chunk")
            manifest = await manifests.head(tx, file_id)
        if current != generation or manifest is None:
            return  # superseded or deleted
        scope = self._scope_of(manifest.owner)
        # Most uploads are not previewable: a look at the first bytes settles them without a
        # copy or a worker process.
        head = await self._head(chunks)
        if not self.previewable(head):
            await self._finish(file_id, generation, Rendered("done", reason=NOT_PREVIEWABLE), scope)
            return
        # A video's first frame is near its start (or its index at the end): its size costs
        # nothing to decode, so only other files are held to the input limit.
        if video_container(head) is None and sum(e.size for e in chunks) > self.max_input_bytes:
            reason = f"file larger than {self.max_input_bytes} bytes; not decoded"
            await self._finish(file_id, generation, Rendered("done", reason=reason), scope)
            return
        path, memfile = await self._materialize(chunks, video=video_container(head) is not None)
        try:
            rendered = await self.renderer(path)
        finally:
            if memfile is not None:
                memfile.close()
        if rendered.reason is not None:
            # The reason is ours (no path, no library text): safe to log as it is.
            level = logging.WARNING if rendered.status == "error" else logging.INFO
            log.log(level, "thumbnails of %s: %s: %s", file_id, rendered.status, rendered.reason)
        await self._finish(file_id, generation, rendered, scope)
        if self.observer is not None:
            self.observer(rendered, time.monotonic() - started)

    async def _head(self, chunks: list[manifests.Entry]) -> bytes:
        head = b""
        for entry in chunks:
            async for data in self.store.read_any(entry.ref, 0, SNIFF_BYTES - len(head)):
                head += data
            if len(head) >= SNIFF_BYTES:
                break
        return head

    async def _materialize(
        self, chunks: list[manifests.Entry], *, video: bool
    ) -> tuple[Path, MemFile | None]:
        """A path with the content: a plain blob's own file when the file is one local blob,
        else an in-memory file (:mod:`filesvc.thumbnails.memfile`): decrypted or assembled
        content never goes to a disk."""
        backend = self.store.backend
        if (
            len(chunks) == 1
            and isinstance(backend, LocalFiles)
            and not is_sealed(chunks[0].ref)
            and not await self.store.is_inline(chunks[0].ref)
        ):
            return backend.local_path(chunks[0].ref), None

        def read(entry: manifests.Entry, start: int, end: int | None) -> AsyncIterator[bytes]:
            return self.store.read_any(entry.ref, start, end)

        memfile = await fill(chunks, read, video=video, run=asyncio.to_thread)
        return memfile.path, memfile

    async def _finish(
        self, file_id: str, generation: int, rendered: Rendered, scope: str | None = None
    ) -> None:
        """Store the thumbnails and record the job's outcome.  A thumbnail's inline name taken
        by another content between its put and this commit (a planted collision racing) rolls
        the commit back: put again (the next variant, or the winner's row when it is the same
        content) and commit again; after a few lost races the job ends ``error`` with a reason
        saying so, never stuck."""
        for _ in range(NAME_RACE_ATTEMPTS):
            puts = [
                await self.store.put_bytes(t.data, scope=scope, inline=True)
                for t in rendered.thumbnails
            ]
            try:
                with inline.name_races():
                    await self._commit(file_id, generation, rendered, puts)
                return
            except NameTaken:
                log.info(
                    "thumbnails of %s: a blob name was taken meanwhile; storing again", file_id
                )
        log.warning("thumbnails of %s: error: %s", file_id, NAME_RACE_REASON)
        await self._commit(file_id, generation, Rendered("error", reason=NAME_RACE_REASON), [])

    async def _commit(
        self, file_id: str, generation: int, rendered: Rendered, puts: list[PutResult]
    ) -> None:
        async with self.db.write() as tx:
            ts = _now_ms()
            rows = [p.inline for p in puts if p.inline is not None]
            if rows:
                await inline.add(tx, rows, now_ms=ts)
            await confirmations.confirm(
                tx,
                self.store.backend,
                [p.ref for p in puts],
                now_ms=ts,
                inserted=inline_refs(*puts),
            )
            # Every change to a file takes its manifest's lock first: one order, no deadlock
            # with a chunk or an overwrite of the same file committing meanwhile.
            if await manifests.lock(tx, file_id) is None:
                return
            if await jobqueue.lock_generation(tx, file_id) != generation:
                return
            await manifests.clear(tx, file_id, "thumb")
            for idx, (thumb, put) in enumerate(zip(rendered.thumbnails, puts, strict=True)):
                attrs: dict[str, object] = {
                    "type": thumb.mime,
                    "width": thumb.width,
                    "height": thumb.height,
                }
                await manifests.put_entry(tx, file_id, "thumb", idx, put.ref, put.size, attrs)
            error = rendered.reason if rendered.status == "error" else None
            await repo.set_thumbnail_status(tx, file_id, rendered.status, error)
            await jobqueue.finish(tx, file_id, generation, rendered.status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
