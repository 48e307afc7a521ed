"""What the store holds: blobs, bytes stored and referenced, dedup ratio, files, pending uploads.

One pass over the blobs against the live ref set (memory: that set), plus aggregate queries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from blobstore import inline, manifests
from blobstore.engine.base import Engine
from blobstore.port import BlobBackend, TempFiles


@dataclass(frozen=True)
class PendingAge:
    """One upload in progress and how long it has been idle."""

    file_id: str
    company_id: str
    kind: str
    chunks: int
    idle_seconds: float


@dataclass(frozen=True)
class StoreStats:
    """``dedup_ratio`` = bytes the files' entries add up to / bytes of the distinct blobs they
    reference (1.0: no sharing)."""

    blobs: int
    bytes_stored: int
    referenced_blobs: int
    bytes_referenced: int
    logical_bytes: int
    dedup_ratio: float
    orphan_blobs: int
    orphan_bytes: int
    files: int
    complete_files: int
    damaged_files: int
    pending_uploads: tuple[PendingAge, ...]
    temp_files: int
    temp_bytes: int
    # Of ``blobs``: those kept as rows of the metadata database (blobstore.inline).
    inline_blobs: int = 0
    inline_bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


async def gather(
    db: Engine, backend: BlobBackend, *, clock: Callable[[], float] = time.time
) -> StoreStats:
    """Count the store.  Read-only; safe beside a running server."""
    now = clock()
    async with db.read() as tx:
        totals = await manifests.totals(tx)
        live = await manifests.live_refs(tx)
        pending = await manifests.pending_uploads(tx)
    blobs = stored = ref_blobs = ref_bytes = 0
    async for blob in backend.scan():
        blobs += 1
        stored += blob.size
        if blob.ref in live:
            ref_blobs += 1
            ref_bytes += blob.size
    async with db.read() as tx:
        rows = await inline.sizes(tx)
    for ref, size in rows.items():
        blobs += 1
        stored += size
        if ref in live:
            ref_blobs += 1
            ref_bytes += size
    temps: list[tuple[object, int, float]] = []
    if isinstance(backend, TempFiles):
        temps = list(await asyncio.to_thread(backend.temp_files))
    ages = tuple(
        sorted(
            (
                PendingAge(u.file_id, u.owner, u.kind, len(u.entries), now - u.updated_at / 1000)
                for u in pending
            ),
            key=lambda p: -p.idle_seconds,
        )
    )
    return StoreStats(
        blobs=blobs,
        bytes_stored=stored,
        referenced_blobs=ref_blobs,
        bytes_referenced=ref_bytes,
        logical_bytes=totals.logical_bytes,
        dedup_ratio=(
            round(totals.logical_bytes / totals.distinct_bytes, 3) if totals.distinct_bytes else 1.0
        ),
        orphan_blobs=blobs - ref_blobs,
        orphan_bytes=stored - ref_bytes,
        files=totals.files,
        complete_files=totals.complete,
        damaged_files=totals.damaged,
        pending_uploads=ages,
        temp_files=len(temps),
        temp_bytes=sum(t[1] for t in temps),
        inline_blobs=len(rows),
        inline_bytes=sum(rows.values()),
    )
