"""Group commit of new files: the hot path of many small uploads.

Every single-request upload (and every create without a body) is one new file with at most one
entry.  Concurrent ones are gathered and written in one transaction with one ``executemany`` per
table, so the database costs a handful of thread hand-offs and one commit (one fsync) per batch,
not per file (each aiosqlite call costs ~80 us; batches of 100 rows reach 150k+ rows/s; on
PostgreSQL each statement is a round trip, so batching pays there too).  A batch that fails is
retried one file per transaction, so one bad row fails alone.  The batch's blobs are confirmed
(:mod:`blobstore.confirmations`) in the same transaction, and its small blobs' rows inserted
(:mod:`blobstore.inline`): one commit makes a small upload durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from blobstore import confirmations, inline, manifests
from blobstore.engine.base import Engine, Tx
from blobstore.inline import InlineRow
from blobstore.manifest_model import NewManifest
from blobstore.port import BlobReader
from blobstore.refs import BlobRef
from filesvc import jobqueue, repo

log = logging.getLogger(__name__)

# Files per transaction at most: bounds the time one commit holds the writer.
MAX_BATCH = 256


@dataclass(frozen=True)
class NewFile:
    """Everything a new file's rows hold."""

    file_id: str
    company_id: str
    user_id: str
    application_id: str | None
    name: str | None
    mime: str
    now_ms: int
    expected_chunks: int | None
    expected_size: int | None
    entry: tuple[int, BlobRef, int] | None  # (chunk number, ref, size)
    complete: bool
    etag: str | None
    thumbnails_status: str
    thumbnail_job: bool
    # The entry's blob row, when it is kept in the database (blobstore.inline): inserted here.
    inline: InlineRow | None = None
    # That row's name was taken without asking the backend: the commit checks it
    # (``PutResult.unchecked``).
    inline_unchecked: bool = False


def committed_row(new: NewFile) -> repo.FileRow:
    """The row a just-committed new file has, without reading it back."""
    return repo.FileRow(
        file_id=new.file_id,
        company_id=new.company_id,
        user_id=new.user_id,
        application_id=new.application_id,
        name=new.name,
        mime=new.mime,
        created_at=new.now_ms,
        updated_at=new.now_ms,
        thumbnails_status="done" if new.thumbnails_status == "done" else "waiting",
        etag=new.etag,
        thumbnails_error=None,
        expected_chunks=new.expected_chunks,
        expected_size=new.expected_size,
        complete=new.complete,
        damaged=False,
    )


async def _insert(tx: Tx, reader: BlobReader, batch: list[NewFile]) -> None:
    now = max(f.now_ms for f in batch)
    rows = [f.inline for f in batch if f.inline is not None]
    if rows:
        await inline.add(tx, rows, now_ms=now)
    await confirmations.confirm(
        tx,
        reader,
        [f.entry[1] for f in batch if f.entry is not None],
        now_ms=now,
        inserted={r.ref for r in rows},
        unchecked={f.inline.ref for f in batch if f.inline is not None and f.inline_unchecked},
    )
    await manifests.create_many(
        tx,
        [
            NewManifest(
                f.file_id,
                f.company_id,
                f.expected_chunks,
                f.expected_size,
                f.complete,
                f.now_ms,
                f.entry,
            )
            for f in batch
        ],
    )
    await repo.insert_many(
        tx,
        [
            repo.NewRow(
                f.file_id,
                f.company_id,
                f.user_id,
                f.application_id,
                f.name,
                f.mime,
                f.now_ms,
                f.thumbnails_status,
                f.etag,
            )
            for f in batch
        ],
    )
    await jobqueue.enqueue_new(tx, [(f.file_id, f.now_ms) for f in batch if f.thumbnail_job])


async def insert_files(tx: Tx, reader: BlobReader, batch: list[NewFile]) -> None:
    """Write new files' rows (and confirm their blobs) inside the caller's transaction (uploads
    that commit more than a new file at once, such as a tus final upload, use it instead of the
    batcher)."""
    await _insert(tx, reader, batch)


class CreateBatcher:
    """Queues new files and commits whatever has gathered, in batches, one batch at a time
    holding the writer.  The next batch is gathered as soon as the last one has committed (on
    SQLite before its log sync has finished: the two overlap), so at most a couple are in
    flight.  Driven by callbacks rather than a task of its own: each hand-off between tasks is
    a turn of a busy event loop, which a batch's uploads would wait for (bench/README.md,
    4 KiB uploads: turns of the loop)."""

    def __init__(self, db: Engine, reader: BlobReader) -> None:
        self.db = db
        self.reader = reader
        self._pending: list[tuple[NewFile, asyncio.Future[None]]] = []
        # The batch being gathered or holding the writer, until it releases it (or ends).
        self._holder: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()  # started, not yet answered
        self._running = False

    def start(self) -> None:
        """Take new files from now on."""
        self._running = True

    async def stop(self) -> None:
        """Commit what is queued, then stop.  A create that arrives meanwhile is refused: it
        is never left waiting for a batch that will not come."""
        self._running = False
        while self._batches:
            # Not cancelled with the caller: waiters of a batch get its real outcome.
            await asyncio.wait(list(self._batches))

    async def add(self, new: NewFile) -> None:
        """Return once the file's rows are committed (durably, per the database's setting)."""
        if not self._running:
            raise RuntimeError("the batcher is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((new, done))
        self._next()
        # The file's own future, awaited bare: a caller that goes away cancels only it (the
        # batch commits all the same; its answer then finds the future done).  A shield would
        # cost every upload one more turn of the loop before its answer.
        await done

    def _next(self) -> None:
        """Start the next batch unless one is being gathered or holds the writer.  The batch
        takes what is pending when its task first runs, a turn later: uploads that arrive in
        the same turn share it."""
        holder = self._holder
        if (holder is not None and not holder.done()) or not self._pending:
            return
        task = self._holder = asyncio.create_task(self._commit_batch())
        self._batches.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        # A batch cancelled before it released the writer (before it even ran) leaves the
        # files pending after it to be started here.
        self._next()

    async def _commit_batch(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        me = asyncio.current_task()

        def release() -> None:
            """This batch has committed (or failed): gather the next."""
            if self._holder is me:
                self._holder = None
                self._next()

        try:
            await self._commit(batch, release)
        except BaseException:
            # Cancelled (or worse), in the batch or in its one-by-one retry: every waiter of
            # the batch still waiting is answered, none is left hanging.
            for _, done in batch:
                if not done.done():
                    done.set_exception(RuntimeError("shutting down"))
            raise
        finally:
            release()

    def _write(
        self,
        released: Callable[[], None] | None = None,
        durable: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[Tx]:
        # A unit holds SQLite's writer lock only while SQLite works (engine/sqlite_unit.py).
        if confirmations.can_confirm_in_unit(self.reader):
            return self.db.write_unit(committed=released, durable=durable)
        return self.db.write()

    async def _commit(
        self, batch: list[tuple[NewFile, asyncio.Future[None]]], release: Callable[[], None]
    ) -> None:
        def answer() -> None:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

        try:
            # Answered from the flush's own callback where the engine calls it: each upload
            # resumes a turn sooner than after this task's.
            async with self._write(release, answer) as tx:
                await _insert(tx, self.reader, [new for new, _ in batch])
        except Exception:
            # One by one, so one bad row fails alone; the batch gathered meanwhile takes the
            # writer in turn with them.
            await self._one_by_one(batch)
        else:
            answer()

    async def _one_by_one(self, batch: list[tuple[NewFile, asyncio.Future[None]]]) -> None:
        for new, done in batch:
            try:
                with inline.name_races():
                    async with self._write() as tx:
                        await _insert(tx, self.reader, [new])
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)
