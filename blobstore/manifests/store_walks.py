"""Walks and maintenance over every manifest: what fsck, gc, stat and the readiness probe use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from blobstore.engine.base import Tx
from blobstore.manifest_model import Entry, Head, Holder, PendingUpload, Slot, Totals, UploadKind
from blobstore.manifests.per_file import clear, delete, entries, lock, row_head
from blobstore.refs import BlobRef


async def probe(tx: Tx) -> None:
    """Fail (with the engine's error) unless the manifests table can be read."""
    await tx.fetchrow("SELECT 1 FROM manifests LIMIT 1")


async def count(tx: Tx) -> int:
    """How many manifests there are."""
    row = await tx.fetchrow("SELECT COUNT(*) FROM manifests")
    return int(row[0]) if row is not None else 0


async def referenced(tx: Tx) -> AsyncIterator[tuple[str, BlobRef, int]]:
    """Every (file_id, ref, size) any manifest holds, in every slot: fsck's walk."""
    async for row in tx.stream("SELECT file_id, ref, size FROM manifest_entries"):
        yield row[0], BlobRef(row[1]), row[2]


async def is_referenced(tx: Tx, ref: BlobRef) -> bool:
    """True when any manifest still references ``ref``."""
    return (
        await tx.fetchrow("SELECT 1 FROM manifest_entries WHERE ref = ? LIMIT 1", ref) is not None
    )


_WALK = (
    "SELECT m.file_id, m.owner, m.expected_chunks, m.expected_size, m.complete, m.damaged,"
    " m.updated_at, e.slot, e.idx, e.ref, e.size"
    " FROM manifests m LEFT JOIN manifest_entries e ON e.file_id = m.file_id"
)
_WALK_ORDER = " ORDER BY m.file_id, e.slot, e.idx"


async def walk(
    tx: Tx, file_id: str | None = None
) -> AsyncIterator[tuple[Head, dict[str, list[Entry]]]]:
    """Every manifest (or only ``file_id``'s) with its entries by slot (``attrs`` left out),
    ordered by file id.  One streaming query; memory holds one manifest at a time."""
    if file_id is None:
        rows = tx.stream(_WALK + _WALK_ORDER)
    else:
        rows = tx.stream(_WALK + " WHERE m.file_id = ?" + _WALK_ORDER, file_id)
    current: Head | None = None
    slots: dict[str, list[Entry]] = {}
    async for row in rows:
        if current is None or row["file_id"] != current.file_id:
            if current is not None:
                yield current, slots
            current, slots = row_head(row), {}
        if row["slot"] is not None:
            entry = Entry(row["idx"], BlobRef(row["ref"]), row["size"])
            slots.setdefault(row["slot"], []).append(entry)
    if current is not None:
        yield current, slots


async def holders(tx: Tx, ref: str) -> list[Holder]:
    """The files whose manifests hold ``ref`` (any slot), ordered by file id."""
    rows = await tx.fetch(
        "SELECT DISTINCT e.file_id, m.owner, e.slot, m.damaged"
        " FROM manifest_entries e JOIN manifests m ON m.file_id = e.file_id"
        " WHERE e.ref = ? ORDER BY e.file_id, e.slot",
        ref,
    )
    return [Holder(r[0], r[1], r[2], bool(r[3])) for r in rows]


async def claimed_sizes(tx: Tx, ref: str) -> list[tuple[str, int]]:
    """(file_id, size) of every entry that holds ``ref``: what each file says the blob weighs."""
    rows = await tx.fetch(
        "SELECT file_id, size FROM manifest_entries WHERE ref = ? ORDER BY file_id", ref
    )
    return [(r[0], r[1]) for r in rows]


async def pending_uploads(tx: Tx, *, updated_before_ms: int | None = None) -> list[PendingUpload]:
    """Uploads in progress (optionally only those whose manifest is older than a time)."""
    cutoff = updated_before_ms if updated_before_ms is not None else 2**62
    rows = await tx.fetch(
        "SELECT file_id, owner, complete, updated_at FROM manifests"
        " WHERE updated_at < ? AND (complete = 0 OR staged_chunks IS NOT NULL"
        "  OR staged_size IS NOT NULL"
        "  OR EXISTS (SELECT 1 FROM manifest_entries s"
        "             WHERE s.file_id = manifests.file_id AND s.slot = 'staged'))"
        " ORDER BY file_id",
        cutoff,
    )
    out: list[PendingUpload] = []
    for row in rows:
        file_id, owner, complete, updated_at = row[0], row[1], row[2], row[3]
        kind: UploadKind = "overwrite" if complete else "upload"
        slot: Slot = "staged" if complete else "chunk"
        found = await entries(tx, file_id, slot)
        out.append(
            PendingUpload(file_id, owner, kind, updated_at, tuple((e.idx, e.ref) for e in found))
        )
    return out


async def expire(tx: Tx, upload: PendingUpload, *, now_ms: int) -> bool:
    """Drop an abandoned upload, in the caller's write transaction, unless it moved since it was
    read (``updated_at`` or its entries changed): a new file's manifest is deleted (rows that
    reference it cascade, so the API answers 404); an overwrite's staged entries are cleared and
    the file keeps its old content.  True when something was dropped."""
    now = await lock(tx, upload.file_id)
    if now is None or now.updated_at != upload.updated_at:
        return False
    if now.complete != (upload.kind == "overwrite"):
        return False
    slot: Slot = "staged" if upload.kind == "overwrite" else "chunk"
    current = tuple((e.idx, e.ref) for e in await entries(tx, upload.file_id, slot))
    if current != upload.entries:
        return False
    if upload.kind == "upload":
        return await delete(tx, upload.file_id)
    await clear(tx, upload.file_id, "staged")
    await tx.execute(
        "UPDATE manifests SET staged_chunks = NULL, staged_size = NULL, updated_at = ?"
        " WHERE file_id = ?",
        now_ms,
        upload.file_id,
    )
    return True


async def live_refs(tx: Tx, *, excluding: Mapping[str, Slot | None] | None = None) -> set[BlobRef]:
    """Every ref any manifest holds: gc's live set.  ``excluding`` leaves out the entries of
    some files (value None: all their slots; a slot: only that one), to price a dry run."""
    skip = excluding or {}
    out: set[BlobRef] = set()
    async for row in tx.stream("SELECT file_id, slot, ref FROM manifest_entries"):
        file_id, slot, ref = row[0], row[1], row[2]
        if file_id in skip and skip[file_id] in (None, slot):
            continue
        out.add(BlobRef(ref))
    return out


async def totals(tx: Tx) -> Totals:
    """Counts over all manifests: files, entries, logical bytes and distinct referenced bytes."""
    heads = await tx.fetchrow(
        "SELECT COUNT(*), CAST(COALESCE(SUM(complete), 0) AS BIGINT),"
        " CAST(COALESCE(SUM(damaged), 0) AS BIGINT) FROM manifests"
    )
    sizes = await tx.fetchrow(
        "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM manifest_entries"
    )
    distinct = await tx.fetchrow(
        "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT)"
        " FROM (SELECT ref, MAX(size) AS size FROM manifest_entries GROUP BY ref) AS d"
    )
    assert heads is not None and sizes is not None and distinct is not None
    return Totals(
        int(heads[0]),
        int(heads[1]),
        int(heads[2]),
        int(sizes[0]),
        int(sizes[1]),
        int(distinct[0]),
        int(distinct[1]),
    )
