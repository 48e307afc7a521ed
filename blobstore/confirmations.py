"""The guard between gc and dedup, kept in metadata: owner of the ``blob_refs`` table.

A commit that makes a manifest use a blob *confirms* it, inside the commit's transaction: it
takes the gc lock shared, checks that the blob is still stored, and records the time.  gc takes
the same lock exclusively around each batch of deletes and deletes a blob only when no manifest
references it and it has been neither confirmed nor first seen (by gc) for the grace period.

So no commit can land between gc's last check and its delete, and a commit that comes after a
delete finds its blob gone and fails cleanly (the caller retries the upload) instead of
committing a reference to nothing.  The grace keeps that rare: a blob just written by an upload
whose commit is a few milliseconds away is not taken.  Locks: SQLite's one writer serialises
commits and gc anyway; on PostgreSQL the lock is an advisory lock, shared by commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import partial
from typing import cast

from blobstore import inline
from blobstore.engine.base import Tx, fetch_in
from blobstore.engine.migrate import Step
from blobstore.errors import BlobStoreError, NameInBackend
from blobstore.port import BlobReader, StatMany, StatManyBlocking, supports
from blobstore.refs import BlobRef

GC_LOCK = "blobstore:gc"

STEP_TABLE = Step(
    2,
    "blob_refs: when a commit last confirmed a blob (gc's guard)",
    {
        "sqlite": (
            "CREATE TABLE IF NOT EXISTS blob_refs (ref TEXT PRIMARY KEY,"
            " confirmed_at INTEGER NOT NULL) WITHOUT ROWID",
        ),
        "postgresql": (
            "CREATE TABLE IF NOT EXISTS blob_refs (ref TEXT PRIMARY KEY,"
            " confirmed_at BIGINT NOT NULL)",
        ),
    },
)


class BlobGone(BlobStoreError):
    """A blob an upload wrote (or deduplicated against) was reclaimed by gc before the upload
    committed.  Nothing was committed; the upload must be sent again."""


def can_confirm_in_unit(reader: BlobReader) -> bool:
    """True when :func:`confirm` may run in a write unit (:meth:`Engine.write_unit`): the
    reader checks its blobs with a blocking call, which the unit runs under its lock."""
    return supports(reader, StatManyBlocking)


async def confirm(
    tx: Tx,
    reader: BlobReader,
    refs: Iterable[BlobRef],
    *,
    now_ms: int,
    inserted: Collection[BlobRef] = (),
    unchecked: Collection[BlobRef] = (),
) -> None:
    """Confirm that the caller's transaction now uses ``refs``: under the shared gc lock, check
    each is stored and record the time.  Raises BlobGone (the caller rolls back).  Refs in
    ``inserted`` are inline rows the same transaction inserts (:func:`blobstore.inline.add`):
    stored by construction and referenced from the moment they exist, so neither checked nor
    timed here (a row in ``blob_refs`` is one more random leaf written per small upload): the
    row carries its own time (:func:`blobstore.inline.add`), which gc reads instead.
    Refs in ``unchecked`` (some of ``inserted``) are rows whose name the put took without asking
    the backend: checked here that no backend blob has it, else NameInBackend (the caller rolls
    back and puts again)."""
    every = sorted(set(refs))
    if not every:
        return
    await tx.lock(GC_LOCK, shared=True)
    if unchecked:
        await _check_free(tx, reader, sorted(set(unchecked)))
    await tx.executemany_later(
        "INSERT INTO blob_refs (ref, confirmed_at) VALUES (?, ?)"
        " ON CONFLICT (ref) DO UPDATE SET confirmed_at = excluded.confirmed_at",
        [(ref, now_ms) for ref in every if ref not in inserted],
    )
    wanted = [ref for ref in every if ref not in inserted] if inserted else every
    if not wanted:
        return
    if tx.runs_later:
        # A unit (the group commit of new files): its statements run when the block ends, so
        # the check runs then too, under the lock gc takes.  Its refs are the unit's own puts:
        # each is in the backend, or an inline row the unit inserts (left out above).
        if not supports(reader, StatManyBlocking):
            raise TypeError("this blob reader cannot confirm inside a write unit")
        await tx.check_later(partial(_check_stored, cast(StatManyBlocking, reader), wanted))
        return
    if supports(reader, StatMany):
        sizes = await cast(StatMany, reader).stat_many(wanted)
    else:
        sizes = await asyncio.gather(*(reader.stat(ref) for ref in wanted))
    missing = [ref for ref, size in zip(wanted, sizes, strict=True) if size is None]
    if missing:
        # Blobs an earlier commit kept inline (a tus final upload lists its parts' blobs).
        rows = await inline.present(tx, missing)
        _raise_gone(missing, [0 if ref in rows else None for ref in missing])


async def _check_free(tx: Tx, reader: BlobReader, refs: list[BlobRef]) -> None:
    """No backend blob has any of ``refs`` (names new inline rows take).  In a unit (the group
    commit) the check rides the unit's own thread hand-off, under the writer lock, which is
    what makes skipping it at put time pay: a put's own check was a hand-off per upload."""
    if tx.runs_later and supports(reader, StatManyBlocking):
        blocking = cast(StatManyBlocking, reader)
        await tx.check_later(lambda: _raise_held(refs, blocking.stat_many_blocking(refs)))
        return
    if supports(reader, StatMany):
        sizes = await cast(StatMany, reader).stat_many(refs)
    else:
        sizes = await asyncio.gather(*(reader.stat(ref) for ref in refs))
    _raise_held(refs, sizes)


def _raise_held(refs: list[BlobRef], sizes: Sequence[int | None]) -> None:
    held = [ref for ref, size in zip(refs, sizes, strict=True) if size is not None]
    if held:
        raise NameInBackend(f"{len(held)} small blob name(s) already held by a backend blob")


def _check_stored(reader: StatManyBlocking, refs: list[BlobRef]) -> None:
    _raise_gone(refs, reader.stat_many_blocking(refs))


def _raise_gone(refs: list[BlobRef], sizes: Sequence[int | None]) -> None:
    gone = [ref for ref, size in zip(refs, sizes, strict=True) if size is None]
    if gone:
        raise BlobGone(f"{len(gone)} blob(s) reclaimed by gc before the upload committed")


async def lock_for_gc(tx: Tx) -> None:
    """Exclude every commit until gc's transaction ends."""
    await tx.lock(GC_LOCK)


async def confirmed_at(tx: Tx, refs: Collection[BlobRef]) -> dict[BlobRef, int]:
    """When each ref was last confirmed or first seen by gc (refs never seen are left out)."""
    rows = await fetch_in(
        tx, "SELECT ref, confirmed_at FROM blob_refs WHERE ref IN ({marks})", sorted(refs)
    )
    return {BlobRef(r[0]): int(r[1]) for r in rows}


async def sight(tx: Tx, refs: Iterable[BlobRef], *, now_ms: int) -> None:
    """gc saw these unreferenced blobs for the first time: their grace starts now."""
    await tx.executemany(
        "INSERT INTO blob_refs (ref, confirmed_at) VALUES (?, ?) ON CONFLICT (ref) DO NOTHING",
        [(ref, now_ms) for ref in refs],
    )


async def forget(tx: Tx, refs: Iterable[BlobRef]) -> None:
    """The blobs were deleted: drop their rows."""
    await tx.executemany("DELETE FROM blob_refs WHERE ref = ?", [(ref,) for ref in refs])


def is_stale(seen: Mapping[BlobRef, int], ref: BlobRef, *, now_ms: int, grace_ms: int) -> bool:
    """Pure: gc may take ``ref`` (already known unreferenced) when it was confirmed or first seen
    at least ``grace_ms`` ago.  Never seen: only with no grace at all (seen now, gone now)."""
    at = seen.get(ref)
    if at is None:
        return grace_ms == 0
    return now_ms - at >= grace_ms
