"""Thumbnail jobs: recorded in the database with the upload's completion, run by a bounded pool.

A job is queued in the same transaction that completes a file (``repo.set_completed``), so a
crash cannot lose it: on start every job not finished is taken up again.  Its ``generation``
grows with every new content of the file, so a job for content since replaced saves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aiosqlite

from blobstore import manifests
from blobstore.db import Database
from blobstore.port import LocalFiles
from blobstore.store import ContentStore
from filesvc import repo
from filesvc.thumbnails.limits import DEFAULT_MAX_INPUT_BYTES
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


# With several server processes, how often the one that runs thumbnails looks for jobs the
# others committed, and how often the others look whether a job they wait on is over.
POLL_INTERVAL = 0.25


class ThumbnailRunner:
    """Runs jobs with ``workers`` concurrent tasks, fed by a queue and by the table on start.

    With several server processes on one database (``filesvc serve --workers N``) only one runs
    jobs until jobs are claimed with a lease: it also polls the table for jobs the others
    committed (``poll``), and the others are passive (``active=False``): they run nothing and
    answer :meth:`wait` by polling the job's state."""

    def __init__(
        self,
        db: Database,
        store: ContentStore,
        renderer: Renderer,
        *,
        work_dir: Path,
        workers: int,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        observer: Observer | None = None,
        office: bool = False,
        scope_of: Callable[[str], str | None] = lambda _company: None,
        active: bool = True,
        poll: bool = False,
    ) -> None:
        self.db = db
        self.office = office
        self.observer = observer
        self.active = active
        self.poll = poll
        self._known: set[tuple[str, int]] = set()
        self.store = store
        self.renderer = renderer
        self.work_dir = work_dir
        self.workers = workers
        self.max_input_bytes = max_input_bytes
        # Thumbnails are put in their file's company scope: a thumbnail shared across companies
        # would make thumbnail_sync's timing a dedup oracle.
        self._scope_of = scope_of
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._events: dict[tuple[str, int], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Take up every unfinished job, then start the workers (a passive runner: nothing)."""
        if not self.active:
            return
        await asyncio.to_thread(self._clear_work_dir)
        await self._take_up(running_too=True)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        if self.poll:
            self._tasks.append(asyncio.create_task(self._poller()))

    async def _take_up(self, *, running_too: bool) -> None:
        """Queue the table's unfinished jobs this runner does not hold yet.  At start a
        'running' job is one a crash interrupted; later it is one of ours."""
        async with (
            self.db.read() as conn,
            conn.execute(
                "SELECT file_id, generation, attempts FROM thumbnail_jobs"
                " WHERE state = 'pending' OR (state = 'running' AND ?)",
                (running_too,),
            ) as cur,
        ):
            pending = [(r[0], r[1], r[2]) for r in await cur.fetchall()]
        spent = []
        for file_id, generation, attempts in pending:
            if (file_id, generation) in self._known:
                continue
            if attempts >= MAX_ATTEMPTS:
                spent.append(file_id)
            else:
                self.notify(file_id, generation)
        if spent:
            async with self.db.write() as conn:
                for file_id in spent:
                    await self._give_up(conn, file_id)

    async def _poller(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self._take_up(running_too=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for thumbnail jobs failed")

    def _clear_work_dir(self) -> None:
        """Temp copies of a crashed run are never needed again."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.work_dir.iterdir():
            leftover.unlink(missing_ok=True)

    async def stop(self) -> None:
        """Stop the workers; unfinished jobs stay in the table for the next start."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

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
        if not self.active:
            return  # the process that runs thumbnails finds the job in the table
        self._known.add((file_id, generation))
        self._events.setdefault((file_id, generation), asyncio.Event())
        self._queue.put_nowait((file_id, generation))

    async def wait(self, file_id: str, generation: int, limit: float) -> None:
        if not self.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_finished(file_id, generation), limit)
            return
        event = self._events.get((file_id, generation))
        if event is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), limit)

    async def _poll_finished(self, file_id: str, generation: int) -> None:
        while True:
            async with (
                self.db.read() as conn,
                conn.execute(
                    "SELECT generation, state FROM thumbnail_jobs WHERE file_id = ?", (file_id,)
                ) as cur,
            ):
                row = await cur.fetchone()
            if row is None or row[0] != generation or row[1] not in ("pending", "running"):
                return
            await asyncio.sleep(POLL_INTERVAL)

    async def _worker(self) -> None:
        while True:
            file_id, generation = await self._queue.get()
            try:
                await self._run(file_id, generation)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("thumbnail job failed")
                with contextlib.suppress(Exception):
                    await self._finish(
                        file_id, generation, Rendered("error", reason="internal error")
                    )
            finally:
                self._known.discard((file_id, generation))
                event = self._events.pop((file_id, generation), None)
                if event is not None:
                    event.set()

    async def _run(self, file_id: str, generation: int) -> None:
        started = time.monotonic()
        async with self.db.read() as conn:
            current = await self._generation(conn, file_id)
            chunks = await manifests.entries(conn, file_id, "chunk")
            manifest = await manifests.head(conn, file_id)
        if current != generation or manifest is None:
            return  # superseded or deleted
        scope = self._scope_of(manifest.owner)
        # Most uploads are not previewable: a look at the first bytes settles them without a
        # copy, a worker process or a crash-counting write.
        head = await self._head(chunks)
        if not self.previewable(head):
            await self._finish(file_id, generation, Rendered("done", reason=NOT_PREVIEWABLE))
            return
        # A video's first frame is near its start (or its index at the end): its size costs
        # nothing to decode, so only other files are held to the input limit.
        if video_container(head) is None and sum(e.size for e in chunks) > self.max_input_bytes:
            reason = f"file larger than {self.max_input_bytes} bytes; not decoded"
            await self._finish(file_id, generation, Rendered("done", reason=reason), scope)
            return
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE thumbnail_jobs SET state = 'running', attempts = attempts + 1"
                " WHERE file_id = ? AND generation = ?",
                (file_id, generation),
            )
        path, temporary = await self._materialize(chunks)
        try:
            rendered = await self.renderer(path)
        finally:
            if temporary:
                await asyncio.to_thread(path.unlink, True)
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
            async for data in self.store.backend.read(entry.ref, 0, SNIFF_BYTES - len(head)):
                head += data
            if len(head) >= SNIFF_BYTES:
                break
        return head

    async def _materialize(self, chunks: list[manifests.Entry]) -> tuple[Path, bool]:
        """A local file with the content: the blob itself when it is one local file."""
        backend = self.store.backend
        if len(chunks) == 1 and isinstance(backend, LocalFiles):
            return backend.local_path(chunks[0].ref), False
        path = self.work_dir / f"{uuid.uuid4().hex}.bin"
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for entry in chunks:
                async for data in backend.read(entry.ref):
                    await asyncio.to_thread(os.write, fd, data)
        finally:
            await asyncio.to_thread(os.close, fd)
        return path, True

    async def _finish(
        self, file_id: str, generation: int, rendered: Rendered, scope: str | None = None
    ) -> None:
        puts = [await self.store.put_bytes(t.data, scope=scope) for t in rendered.thumbnails]
        async with self.db.write() as conn:
            if await self._generation(conn, file_id) != generation:
                return
            await manifests.clear(conn, file_id, "thumb")
            for idx, (thumb, put) in enumerate(zip(rendered.thumbnails, puts, strict=True)):
                attrs: dict[str, object] = {
                    "type": thumb.mime,
                    "width": thumb.width,
                    "height": thumb.height,
                }
                await manifests.put_entry(conn, file_id, "thumb", idx, put.ref, put.size, attrs)
            error = rendered.reason if rendered.status == "error" else None
            await repo.set_thumbnail_status(conn, file_id, rendered.status, error)
            await conn.execute(
                "UPDATE thumbnail_jobs SET state = ? WHERE file_id = ?",
                (rendered.status, file_id),
            )

    @staticmethod
    async def _generation(conn: aiosqlite.Connection, file_id: str) -> int | None:
        async with conn.execute(
            "SELECT generation FROM thumbnail_jobs WHERE file_id = ?", (file_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    async def _give_up(conn: aiosqlite.Connection, file_id: str) -> None:
        reason = f"the thumbnail worker crashed {MAX_ATTEMPTS} times on this file"
        log.warning("thumbnails of %s: error: %s", file_id, reason)
        await repo.set_thumbnail_status(conn, file_id, "error", reason)
        await conn.execute(
            "UPDATE thumbnail_jobs SET state = 'error' WHERE file_id = ?", (file_id,)
        )
