"""Garbage collection: a pure plan, then a thin executor.  Safe while servers run.

Live = every ref a manifest holds.  Blobs an upload has written but not committed yet are
invisible to the manifests; the guard for them lives in metadata (:mod:`blobstore.confirmations`):

1. **Grace**: a blob is a candidate only when no manifest references it and it was neither
   confirmed by a commit nor first seen by gc within ``grace``.  A blob gc meets for the first
   time has its sighting recorded and is kept (unless the grace is zero).
2. **Re-check under the gc lock**: each batch of deletes runs in one write transaction that holds
   the gc lock exclusively and re-reads both facts; commits take the same lock (shared) when they
   confirm their blobs, so none lands between the check and the delete.  A commit after the
   delete finds its blob gone and fails without committing.

Abandoned uploads (incomplete, no chunk for ``abandon_after``) are expired first; the blobs they
held become garbage in the same run once past the grace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from blobstore import confirmations, inline, manifests
from blobstore.engine.base import Engine, Tx
from blobstore.manifests import PendingUpload, Slot
from blobstore.port import BlobBackend, BlobInfo
from blobstore.refs import BlobRef

# An upload's put-to-commit window is milliseconds; an hour also covers a stalled disk or a
# paused VM.  A shorter grace is safe too (commits re-check), it only makes such uploads retry.
DEFAULT_GRACE = 3600.0
# resumable.js clients resume an interrupted upload hours later (laptop lid, train tunnel); a day
# without any chunk is abandonment.
DEFAULT_ABANDON_AFTER = 86_400.0
# Candidates re-checked and deleted per write transaction: the servers' commits wait while gc
# holds the lock, so keep each hold short (~100 small deletes take a few ms).
DELETE_BATCH = 100
# Abandoned uploads expired per write transaction, for the same reason.
EXPIRE_BATCH = 50


@dataclass(frozen=True)
class GcPlan:
    """What gc would delete and what it keeps, with byte counts."""

    delete: tuple[BlobInfo, ...] = ()
    kept_referenced: int = 0
    kept_referenced_bytes: int = 0
    kept_young: int = 0
    kept_young_bytes: int = 0
    # Unreferenced blobs gc has never seen before: their grace starts with this run.
    first_seen: tuple[BlobRef, ...] = ()

    @property
    def delete_bytes(self) -> int:
        return sum(b.size for b in self.delete)


async def _seen(tx: Tx, refs: list[BlobRef], rows: Container[BlobRef]) -> dict[BlobRef, int]:
    """When each ref was last confirmed, first seen by gc, or (a row, ``rows``) inserted, the
    latest of these: a row its commit inserted has no confirmation of its own
    (:func:`blobstore.inline.add`)."""
    seen = await confirmations.confirmed_at(tx, refs)
    stamps = await inline.added_at(tx, [ref for ref in refs if ref in rows])
    for ref, at in stamps.items():
        seen[ref] = max(at, seen.get(ref, at))
    return seen


def plan_gc(
    referenced: Container[str],
    blobs: Iterable[BlobInfo],
    seen: Mapping[BlobRef, int],
    *,
    now_ms: int,
    grace_ms: int,
) -> GcPlan:
    """Pure: delete every unreferenced blob whose grace has run out; keep the rest."""
    delete: list[BlobInfo] = []
    first: list[BlobRef] = []
    ref_n = ref_bytes = young_n = young_bytes = 0
    for blob in blobs:
        if blob.ref in referenced:
            ref_n += 1
            ref_bytes += blob.size
            continue
        if blob.ref not in seen:
            first.append(blob.ref)
        if confirmations.is_stale(seen, blob.ref, now_ms=now_ms, grace_ms=grace_ms):
            delete.append(blob)
        else:
            young_n += 1
            young_bytes += blob.size
    return GcPlan(tuple(delete), ref_n, ref_bytes, young_n, young_bytes, tuple(first))


def plan_expiry(
    uploads: Iterable[PendingUpload], *, now: float, abandon_after: float
) -> tuple[PendingUpload, ...]:
    """Pure: the uploads whose manifest saw no activity for at least ``abandon_after`` seconds
    (every chunk commit bumps ``updated_at``)."""
    return tuple(u for u in uploads if now - u.updated_at / 1000 >= abandon_after)


@dataclass
class GcReport:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    started: float
    scanned: int = 0
    scanned_bytes: int = 0
    expired: list[PendingUpload] = field(default_factory=list)
    plan: GcPlan = field(default_factory=GcPlan)
    freed: int = 0
    freed_bytes: int = 0
    # Planned, then kept: a manifest took the blob meanwhile, or a commit confirmed it.
    kept_rereferenced: int = 0
    kept_confirmed: int = 0


def _skip_map(uploads: Iterable[PendingUpload]) -> dict[str, Slot | None]:
    return {u.file_id: ("staged" if u.kind == "overwrite" else None) for u in uploads}


async def collect(
    db: Engine,
    backend: BlobBackend,
    *,
    grace: float = DEFAULT_GRACE,
    abandon_after: float = DEFAULT_ABANDON_AFTER,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> GcReport:
    """Expire abandoned uploads, then delete unreferenced blobs whose grace has run out.

    ``db`` must be open for writing unless ``dry_run``.  Memory holds the live ref set and the
    garbage candidates, not the whole store."""
    if grace < 0 or abandon_after < 0 or math.isnan(grace) or math.isnan(abandon_after):
        raise ValueError("grace and abandon_after must be >= 0")
    started = clock()
    now_ms = math.floor(started * 1000)
    grace_ms = math.ceil(grace * 1000)
    report = GcReport(dry_run=dry_run, started=started)

    cutoff_ms = math.floor((started - abandon_after) * 1000)
    async with db.read() as tx:
        pending = await manifests.pending_uploads(tx, updated_before_ms=cutoff_ms)
        live_before = await manifests.live_refs(tx)
    pending_refs = {ref for u in pending for _, ref in u.entries}

    maybe_garbage: list[BlobInfo] = []
    async for blob in backend.scan():
        report.scanned += 1
        report.scanned_bytes += blob.size
        if blob.ref in pending_refs or blob.ref not in live_before:
            maybe_garbage.append(blob)
    # Inline rows are blobs too: the same plan, the same guard; their deletes are row deletes.
    async with db.read() as tx:
        rows = await inline.sizes(tx)
    inline_garbage: set[BlobRef] = set()
    for ref, size in rows.items():
        report.scanned += 1
        report.scanned_bytes += size
        if ref in pending_refs or ref not in live_before:
            maybe_garbage.append(BlobInfo(ref, size))
            inline_garbage.add(ref)
    del live_before, rows

    expiring = plan_expiry(pending, now=started, abandon_after=abandon_after)
    if dry_run:
        report.expired = list(expiring)
        async with db.read() as tx:
            live = await manifests.live_refs(tx, excluding=_skip_map(expiring))
            seen = await _seen(tx, [b.ref for b in maybe_garbage], inline_garbage)
    else:
        for i in range(0, len(expiring), EXPIRE_BATCH):
            async with db.write() as tx:
                for upload in expiring[i : i + EXPIRE_BATCH]:
                    if await manifests.expire(tx, upload, now_ms=now_ms):
                        report.expired.append(upload)
        async with db.read() as tx:
            live = await manifests.live_refs(tx)
            seen = await _seen(tx, [b.ref for b in maybe_garbage], inline_garbage)

    report.plan = plan_gc(live, maybe_garbage, seen, now_ms=now_ms, grace_ms=grace_ms)
    del maybe_garbage, live
    if dry_run:
        return report

    deleting = {b.ref for b in report.plan.delete}
    first_seen = [ref for ref in report.plan.first_seen if ref not in deleting]
    for i in range(0, len(first_seen), DELETE_BATCH * 10):
        async with db.write() as tx:
            await confirmations.sight(tx, first_seen[i : i + DELETE_BATCH * 10], now_ms=now_ms)

    todo = report.plan.delete
    for i in range(0, len(todo), DELETE_BATCH):
        async with db.write() as tx:
            await confirmations.lock_for_gc(tx)
            batch = todo[i : i + DELETE_BATCH]
            seen = await _seen(tx, [b.ref for b in batch], inline_garbage)
            gone: list[BlobRef] = []
            rows_gone: list[BlobRef] = []
            for blob in batch:
                if await manifests.is_referenced(tx, blob.ref):
                    report.kept_rereferenced += 1
                elif not confirmations.is_stale(seen, blob.ref, now_ms=now_ms, grace_ms=grace_ms):
                    report.kept_confirmed += 1
                else:
                    if blob.ref in inline_garbage and blob.ref not in rows_gone:
                        rows_gone.append(blob.ref)
                    else:
                        await backend.delete(blob.ref)
                    gone.append(blob.ref)
                    report.freed += 1
                    report.freed_bytes += blob.size
            await inline.delete(tx, rows_gone)
            await confirmations.forget(tx, sorted(set(gone)))
    return report
