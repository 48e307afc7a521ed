"""Per-file manifests: chunk number -> (blob ref, size), plus the file's other blobs.  This module
owns the ``manifests`` and ``manifest_entries`` tables: every statement on them is here.

A manifest row is written only after its blob is durable (the caller puts the blob first), so a
crash leaves orphan blobs, never a dangling reference.  Every function runs inside a transaction
the caller holds, so the service can change manifests and its own tables atomically.

Slots: ``chunk`` is the live content; ``staged`` holds an overwrite in progress until it is whole
and swapped in by :func:`promote_staged`; ``thumb`` the derived blobs (thumbnails).  ``owner`` and
``staged_owner`` are opaque tags: the blob store compares them, it never interprets them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence

from blobstore.engine.base import Row, Tx
from blobstore.engine.migrate import Step
from blobstore.manifest_model import Entry as Entry
from blobstore.manifest_model import Head as Head
from blobstore.manifest_model import Holder as Holder
from blobstore.manifest_model import NewManifest as NewManifest
from blobstore.manifest_model import PendingUpload as PendingUpload
from blobstore.manifest_model import Slot as Slot
from blobstore.manifest_model import StagedSession as StagedSession
from blobstore.manifest_model import Totals as Totals
from blobstore.manifest_model import UploadKind
from blobstore.manifest_model import completeness as completeness
from blobstore.refs import BlobRef

# Release 0.1.0's tables, as it created them (SQLite), and their PostgreSQL twins (sizes and
# epoch milliseconds need 64 bits there).
STEP_TABLES = Step(
    1,
    "manifests and manifest_entries",
    {
        "sqlite": (
            """CREATE TABLE IF NOT EXISTS manifests (
        file_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expected_chunks INTEGER,
        expected_size INTEGER,
        staged_chunks INTEGER,
        staged_size INTEGER,
        staged_owner TEXT,
        complete INTEGER NOT NULL DEFAULT 0,
        damaged INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    )""",
            """CREATE TABLE IF NOT EXISTS manifest_entries (
        file_id TEXT NOT NULL REFERENCES manifests(file_id) ON DELETE CASCADE,
        slot TEXT NOT NULL,
        idx INTEGER NOT NULL,
        ref TEXT NOT NULL,
        size INTEGER NOT NULL,
        attrs TEXT,
        PRIMARY KEY (file_id, slot, idx)
    ) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS manifest_entries_ref ON manifest_entries(ref)",
        ),
        "postgresql": (
            """CREATE TABLE IF NOT EXISTS manifests (
        file_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expected_chunks INTEGER,
        expected_size BIGINT,
        staged_chunks INTEGER,
        staged_size BIGINT,
        staged_owner TEXT,
        complete INTEGER NOT NULL DEFAULT 0,
        damaged INTEGER NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL
    )""",
            """CREATE TABLE IF NOT EXISTS manifest_entries (
        file_id TEXT NOT NULL REFERENCES manifests(file_id) ON DELETE CASCADE,
        slot TEXT NOT NULL,
        idx INTEGER NOT NULL,
        ref TEXT NOT NULL,
        size BIGINT NOT NULL,
        attrs TEXT,
        PRIMARY KEY (file_id, slot, idx)
    )""",
            "CREATE INDEX IF NOT EXISTS manifest_entries_ref ON manifest_entries(ref)",
        ),
    },
)


def _head(row: Row) -> Head:
    return Head(
        file_id=row["file_id"],
        owner=row["owner"],
        expected_chunks=row["expected_chunks"],
        expected_size=row["expected_size"],
        complete=bool(row["complete"]),
        damaged=bool(row["damaged"]),
        updated_at=row["updated_at"],
    )


def _entry(row: Row) -> Entry:
    return decode_entry(row["idx"], row["ref"], row["size"], row["attrs"])


def decode_entry(idx: int, ref: str, size: int, attrs: str | None) -> Entry:
    """An entry from its stored columns (for a reader that joins ``manifest_entries``)."""
    return Entry(idx, BlobRef(ref), size, json.loads(attrs) if attrs else None)


async def create(
    tx: Tx,
    file_id: str,
    owner: str,
    *,
    expected_chunks: int | None,
    expected_size: int | None,
    now_ms: int,
) -> None:
    """Start an empty manifest."""
    await tx.execute(
        "INSERT INTO manifests (file_id, owner, expected_chunks, expected_size, updated_at)"
        " VALUES (?, ?, ?, ?, ?)",
        file_id,
        owner,
        expected_chunks,
        expected_size,
        now_ms,
    )


async def create_many(tx: Tx, batch: Sequence[NewManifest]) -> None:
    """Create whole manifests in one statement per table (the group commit of small uploads)."""
    await tx.executemany_later(
        "INSERT INTO manifests (file_id, owner, expected_chunks, expected_size, complete,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (m.file_id, m.owner, m.expected_chunks, m.expected_size, int(m.complete), m.now_ms)
            for m in batch
        ],
    )
    entries = [(m.file_id, *m.entry) for m in batch if m.entry is not None]
    if entries:
        await tx.executemany_later(
            "INSERT INTO manifest_entries (file_id, slot, idx, ref, size)"
            " VALUES (?, 'chunk', ?, ?, ?)",
            entries,
        )


_HEAD = (
    "SELECT file_id, owner, expected_chunks, expected_size, complete, damaged, updated_at"
    " FROM manifests WHERE file_id = ?"
)


async def head(tx: Tx, file_id: str) -> Head | None:
    """The manifest's header, or None."""
    row = await tx.fetchrow(_HEAD, file_id)
    return _head(row) if row is not None else None


async def lock(tx: Tx, file_id: str) -> Head | None:
    """The header, with the manifest locked against other writers until the transaction ends
    (PostgreSQL: a row lock; SQLite's write transaction excludes every other writer)."""
    row = await tx.fetchrow(_HEAD + tx.dialect.for_update, file_id)
    return _head(row) if row is not None else None


async def probe(tx: Tx) -> None:
    """Fail (with the engine's error) unless the manifests table can be read."""
    await tx.fetchrow("SELECT 1 FROM manifests LIMIT 1")


async def count(tx: Tx) -> int:
    """How many manifests there are."""
    row = await tx.fetchrow("SELECT COUNT(*) FROM manifests")
    return int(row[0]) if row is not None else 0


async def set_expected(tx: Tx, file_id: str, *, chunks: int | None, size: int | None) -> None:
    """Record what the live content must add up to (an overwrite's: :func:`start_staged`)."""
    await tx.execute(
        "UPDATE manifests SET expected_chunks = ?, expected_size = ? WHERE file_id = ?",
        chunks,
        size,
        file_id,
    )


async def staged_session(tx: Tx, file_id: str) -> StagedSession:
    """The overwrite in progress (all None / 0 when there is none)."""
    row = await tx.fetchrow(
        "SELECT staged_chunks, staged_size, staged_owner, updated_at,"
        " (SELECT COUNT(*) FROM manifest_entries e WHERE e.file_id = m.file_id"
        "  AND e.slot = 'staged') FROM manifests m WHERE file_id = ?",
        file_id,
    )
    if row is None:
        return StagedSession(None, None, None, 0, 0)
    return StagedSession(row[0], row[1], row[2], int(row[4]), row[3])


async def start_staged(
    tx: Tx, file_id: str, *, chunks: int, size: int | None, owner: str, now_ms: int
) -> None:
    """Begin a new overwrite (dropping any staged entries of an earlier one)."""
    await clear(tx, file_id, "staged")
    await tx.execute(
        "UPDATE manifests SET staged_chunks = ?, staged_size = ?, staged_owner = ?,"
        " updated_at = ? WHERE file_id = ?",
        chunks,
        size,
        owner,
        now_ms,
        file_id,
    )


async def record_activity(tx: Tx, file_id: str, *, now_ms: int) -> None:
    """Record activity on the manifest (gc expires uploads by their last activity)."""
    await tx.execute("UPDATE manifests SET updated_at = ? WHERE file_id = ?", now_ms, file_id)


async def mark(
    tx: Tx,
    file_id: str,
    *,
    now_ms: int,
    complete: bool | None = None,
    damaged: bool | None = None,
) -> None:
    """Set the complete/damaged flags and bump ``updated_at``."""
    sets, args = ["updated_at = ?"], [now_ms]
    if complete is not None:
        sets.append("complete = ?")
        args.append(int(complete))
    if damaged is not None:
        sets.append("damaged = ?")
        args.append(int(damaged))
    await tx.execute(
        f"UPDATE manifests SET {', '.join(sets)} WHERE file_id = ?",  # noqa: S608
        *args,
        file_id,
    )


async def put_entry(
    tx: Tx,
    file_id: str,
    slot: Slot,
    idx: int,
    ref: BlobRef,
    size: int,
    attrs: dict[str, object] | None = None,
) -> None:
    """Set entry ``idx`` of ``slot`` (replacing what it held)."""
    await tx.execute(
        "INSERT INTO manifest_entries (file_id, slot, idx, ref, size, attrs)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (file_id, slot, idx) DO UPDATE"
        " SET ref = excluded.ref, size = excluded.size, attrs = excluded.attrs",
        file_id,
        slot,
        idx,
        ref,
        size,
        json.dumps(attrs) if attrs is not None else None,
    )


async def entries(tx: Tx, file_id: str, slot: Slot) -> list[Entry]:
    """The entries of one slot, ordered by index."""
    rows = await tx.fetch(
        "SELECT idx, ref, size, attrs FROM manifest_entries"
        " WHERE file_id = ? AND slot = ? ORDER BY idx",
        file_id,
        slot,
    )
    return [_entry(r) for r in rows]


async def clear(tx: Tx, file_id: str, slot: Slot) -> None:
    """Drop every entry of one slot (their blobs become gc's to reclaim)."""
    await tx.execute("DELETE FROM manifest_entries WHERE file_id = ? AND slot = ?", file_id, slot)


async def promote_staged(tx: Tx, file_id: str, *, now_ms: int) -> None:
    """The atomic swap: a whole staged overwrite becomes the live content, in the caller's
    transaction."""
    await clear(tx, file_id, "chunk")
    await tx.execute(
        "UPDATE manifest_entries SET slot = 'chunk' WHERE file_id = ? AND slot = 'staged'",
        file_id,
    )
    await tx.execute(
        "UPDATE manifests SET expected_chunks = staged_chunks, expected_size = staged_size,"
        " staged_chunks = NULL, staged_size = NULL, staged_owner = NULL,"
        " complete = 1, damaged = 0, updated_at = ?"
        " WHERE file_id = ?",
        now_ms,
        file_id,
    )


async def delete(tx: Tx, file_id: str) -> bool:
    """Remove the manifest and its entries; True when it existed."""
    await tx.execute("DELETE FROM manifest_entries WHERE file_id = ?", file_id)
    return await tx.execute("DELETE FROM manifests WHERE file_id = ?", file_id) > 0


async def referenced(tx: Tx) -> AsyncIterator[tuple[str, BlobRef, int]]:
    """Every (file_id, ref, size) any manifest holds, in every slot: fsck's walk."""
    async for row in tx.stream("SELECT file_id, ref, size FROM manifest_entries"):
        yield row[0], BlobRef(row[1]), row[2]


async def is_referenced(tx: Tx, ref: BlobRef) -> bool:
    """True when any manifest still references ``ref``."""
    return (
        await tx.fetchrow("SELECT 1 FROM manifest_entries WHERE ref = ? LIMIT 1", ref) is not None
    )


async def replace_ref(tx: Tx, file_id: str, old: BlobRef, new: BlobRef) -> int:
    """Point ``file_id``'s entries from ``old`` to ``new`` (the same content stored anew, as
    ``blobstore encrypt`` does); the caller holds the manifest's lock.  Returns entries changed."""
    return await tx.execute(
        "UPDATE manifest_entries SET ref = ? WHERE file_id = ? AND ref = ?", new, file_id, old
    )


# --- Whole-store walks and maintenance: fsck, gc and stat use these. -------------------------

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
            current, slots = _head(row), {}
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
