"""Garbage collection: a pure plan, then a thin executor.  Safe while the server runs.

Live = every ref a manifest holds, plus whatever an upload in flight has just written or
deduplicated against.  The second part is invisible to the database, so three guards cover it:

1. **Grace**: only blobs whose mtime is older than ``grace`` are candidates.  A put writes or
   touches its blob (``ContentStore.put`` calls ``backend.touch`` on a dedup hit), and commits the
   manifest entry right after; the grace must exceed that put-to-commit window.
2. **Touch check**: each delete is ``backend.delete_if_untouched(ref, since)`` with ``since`` the
   moment gc started (less :data:`CLOCK_SLACK`): a blob written or deduplicated against after gc
   started stays, and a touch after the delete fails, so the toucher publishes its own copy.
3. **Re-check under the write lock**: the executor re-reads ``is_referenced`` and deletes inside
   one database write transaction, so no manifest commit can land between the check and the
   delete.  A writer that also wants to be safe with no grace at all confirms its blobs in the
   transaction that commits them (``await backend.touch(ref)`` returns True; False means gc took
   it: roll back and put again); then gc and commits are fully serialised by that lock.

Abandoned uploads (incomplete, untouched for ``abandon_after``) are expired first; the blobs they
held become garbage in the same run once past the grace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from blobstore import manifests
from blobstore.db import Database
from blobstore.manifests import PendingUpload, Slot
from blobstore.port import BlobBackend, BlobInfo
from blobstore.refs import BlobRef

# An upload's put-to-commit window is milliseconds; an hour also covers a stalled disk, a paused
# VM and writers that do not confirm their blobs in the commit transaction.
DEFAULT_GRACE = 3600.0
# resumable.js clients resume an interrupted upload hours later (laptop lid, train tunnel); a day
# without any chunk is abandonment.
DEFAULT_ABANDON_AFTER = 86_400.0
# File mtimes come from the kernel's coarse clock, which may run a tick behind time.time(): a
# touch just after gc started could carry an mtime just before it.  One second absorbs that.
CLOCK_SLACK = 1.0
# Candidates re-checked and deleted per write transaction: the server's commits wait while gc
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

    @property
    def delete_bytes(self) -> int:
        return sum(b.size for b in self.delete)


def is_old(blob: BlobInfo, *, now: float, grace: float) -> bool:
    """True when the blob was last written or touched at least ``grace`` seconds before ``now``."""
    return now - blob.mtime >= grace


def plan_gc(
    referenced: Container[str], blobs: Iterable[BlobInfo], *, now: float, grace: float
) -> GcPlan:
    """Pure: delete every blob no manifest references that is old enough; keep the rest."""
    delete: list[BlobInfo] = []
    ref_n = ref_bytes = young_n = young_bytes = 0
    for blob in blobs:
        if blob.ref in referenced:
            ref_n += 1
            ref_bytes += blob.size
        elif not is_old(blob, now=now, grace=grace):
            young_n += 1
            young_bytes += blob.size
        else:
            delete.append(blob)
    return GcPlan(tuple(delete), ref_n, ref_bytes, young_n, young_bytes)


def last_activity(upload: PendingUpload, blob_mtimes: Mapping[BlobRef, float]) -> float:
    """Seconds since the epoch of the upload's last sign of life: its manifest's ``updated_at``,
    or a later write or dedup touch of one of its blobs (a chunk put touches its blob even when
    the service does not bump ``updated_at``)."""
    seen = [blob_mtimes[ref] for _, ref in upload.entries if ref in blob_mtimes]
    return max([upload.updated_at / 1000, *seen])


def plan_expiry(
    uploads: Iterable[PendingUpload],
    blob_mtimes: Mapping[BlobRef, float],
    *,
    now: float,
    abandon_after: float,
) -> tuple[PendingUpload, ...]:
    """Pure: the uploads with no sign of life for at least ``abandon_after`` seconds."""
    return tuple(u for u in uploads if now - last_activity(u, blob_mtimes) >= abandon_after)


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
    # Planned, then kept: a manifest took the blob meanwhile, or an upload wrote or touched it.
    kept_rereferenced: int = 0
    kept_touched: int = 0


def _skip_map(uploads: Iterable[PendingUpload]) -> dict[str, Slot | None]:
    return {u.file_id: ("staged" if u.kind == "overwrite" else None) for u in uploads}


async def collect(
    db: Database,
    backend: BlobBackend,
    *,
    grace: float = DEFAULT_GRACE,
    abandon_after: float = DEFAULT_ABANDON_AFTER,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> GcReport:
    """Expire abandoned uploads, then delete unreferenced blobs older than ``grace``.

    ``db`` must be open for writing unless ``dry_run``.  Memory holds the live ref set and the
    garbage candidates, not the whole store."""
    if grace < 0 or abandon_after < 0 or math.isnan(grace) or math.isnan(abandon_after):
        raise ValueError("grace and abandon_after must be >= 0")
    started = clock()
    since = started - CLOCK_SLACK
    report = GcReport(dry_run=dry_run, started=started)

    cutoff_ms = math.floor((started - abandon_after) * 1000)
    async with db.read() as conn:
        pending = await manifests.pending_uploads(conn, updated_before_ms=cutoff_ms)
        live_before = await manifests.live_refs(conn)
    pending_refs = {ref for u in pending for _, ref in u.entries}

    # One scan serves both plans: keep what may be garbage, and the mtimes of pending uploads.
    maybe_garbage: list[BlobInfo] = []
    mtimes: dict[BlobRef, float] = {}
    async for blob in backend.scan():
        report.scanned += 1
        report.scanned_bytes += blob.size
        if blob.ref in pending_refs:
            mtimes[blob.ref] = blob.mtime
            maybe_garbage.append(blob)
        elif blob.ref not in live_before:
            maybe_garbage.append(blob)
    del live_before

    expiring = plan_expiry(pending, mtimes, now=started, abandon_after=abandon_after)
    if dry_run:
        report.expired = list(expiring)
        async with db.read() as conn:
            live = await manifests.live_refs(conn, excluding=_skip_map(expiring))
    else:
        now_ms = int(clock() * 1000)
        for i in range(0, len(expiring), EXPIRE_BATCH):
            async with db.write() as conn:
                for upload in expiring[i : i + EXPIRE_BATCH]:
                    if await manifests.expire(conn, upload, now_ms=now_ms):
                        report.expired.append(upload)
        async with db.read() as conn:
            live = await manifests.live_refs(conn)

    report.plan = plan_gc(live, maybe_garbage, now=since, grace=grace)
    del maybe_garbage, live
    if dry_run:
        return report

    todo = report.plan.delete
    for i in range(0, len(todo), DELETE_BATCH):
        async with db.write() as conn:
            for blob in todo[i : i + DELETE_BATCH]:
                if await manifests.is_referenced(conn, blob.ref):
                    report.kept_rereferenced += 1
                elif await backend.delete_if_untouched(blob.ref, since):
                    report.freed += 1
                    report.freed_bytes += blob.size
                else:
                    report.kept_touched += 1
    return report
