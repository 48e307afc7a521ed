"""Per-file manifests: chunk number -> (blob ref, size), plus the file's other blobs.

A manifest row is written only after its blob is durable (the caller puts the blob first), so a
crash leaves orphan blobs, never a dangling reference.  Every function runs inside a transaction
the caller holds, so the service can change manifests and its own tables atomically.

Slots: ``chunk`` is the live content; ``staged`` holds an overwrite in progress until it is whole
and swapped in by :func:`promote_staged`; ``thumb`` the derived blobs (thumbnails).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import aiosqlite

from blobstore.refs import BlobRef

Slot = Literal["chunk", "staged", "thumb"]

SCHEMA: tuple[str, ...] = (
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
)


@dataclass(frozen=True)
class Entry:
    """One blob of a manifest."""

    idx: int
    ref: BlobRef
    size: int
    attrs: dict[str, object] | None = None


@dataclass(frozen=True)
class Head:
    """A manifest's header: owner and what the content should add up to."""

    file_id: str
    owner: str
    expected_chunks: int | None
    expected_size: int | None
    complete: bool
    damaged: bool
    updated_at: int


@dataclass(frozen=True)
class Completeness:
    """Where a set of chunks stands against what they should add up to."""

    stored_chunks: int
    stored_size: int
    missing: tuple[int, ...]
    complete: bool


def completeness(
    entries: Sequence[Entry], expected_chunks: int, expected_size: int | None
) -> Completeness:
    """Pure: the chunks are complete when numbers 1..N are all present and, when a total size is
    known, their sizes add up to it exactly."""
    have = {e.idx for e in entries}
    missing = tuple(i for i in range(1, expected_chunks + 1) if i not in have)
    stored = sum(e.size for e in entries)
    extra = any(e.idx < 1 or e.idx > expected_chunks for e in entries)
    size_ok = expected_size is None or stored == expected_size
    return Completeness(len(entries), stored, missing, not missing and not extra and size_ok)


def _head(row: aiosqlite.Row) -> Head:
    return Head(
        file_id=row["file_id"],
        owner=row["owner"],
        expected_chunks=row["expected_chunks"],
        expected_size=row["expected_size"],
        complete=bool(row["complete"]),
        damaged=bool(row["damaged"]),
        updated_at=row["updated_at"],
    )


def _entry(row: aiosqlite.Row) -> Entry:
    attrs = json.loads(row["attrs"]) if row["attrs"] else None
    return Entry(row["idx"], BlobRef(row["ref"]), row["size"], attrs)


async def create(
    conn: aiosqlite.Connection,
    file_id: str,
    owner: str,
    *,
    expected_chunks: int | None,
    expected_size: int | None,
    now_ms: int,
) -> None:
    """Start an empty manifest."""
    await conn.execute(
        "INSERT INTO manifests (file_id, owner, expected_chunks, expected_size, updated_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (file_id, owner, expected_chunks, expected_size, now_ms),
    )


async def head(conn: aiosqlite.Connection, file_id: str) -> Head | None:
    """The manifest's header, or None."""
    rows = list(
        await conn.execute_fetchall("SELECT * FROM manifests WHERE file_id = ?", (file_id,))
    )
    return _head(rows[0]) if rows else None


async def set_expected(
    conn: aiosqlite.Connection,
    file_id: str,
    *,
    chunks: int | None,
    size: int | None,
) -> None:
    """Record what the live content must add up to (an overwrite's: :func:`start_staged`)."""
    await conn.execute(
        "UPDATE manifests SET expected_chunks = ?, expected_size = ? WHERE file_id = ?",
        (chunks, size, file_id),
    )


@dataclass(frozen=True)
class StagedSession:
    """Who is overwriting a complete file, and what the new content must add up to."""

    chunks: int | None
    size: int | None
    owner: str | None
    entries: int
    updated_at: int


async def staged_session(conn: aiosqlite.Connection, file_id: str) -> StagedSession:
    """The overwrite in progress (all None / 0 when there is none)."""
    async with conn.execute(
        "SELECT staged_chunks, staged_size, staged_owner, updated_at,"
        " (SELECT COUNT(*) FROM manifest_entries e WHERE e.file_id = m.file_id"
        "  AND e.slot = 'staged') FROM manifests m WHERE file_id = ?",
        (file_id,),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return StagedSession(None, None, None, 0, 0)
    return StagedSession(row[0], row[1], row[2], row[4], row[3])


async def start_staged(
    conn: aiosqlite.Connection,
    file_id: str,
    *,
    chunks: int,
    size: int | None,
    owner: str,
    now_ms: int,
) -> None:
    """Begin a new overwrite (dropping any staged entries of an earlier one)."""
    await clear(conn, file_id, "staged")
    await conn.execute(
        "UPDATE manifests SET staged_chunks = ?, staged_size = ?, staged_owner = ?,"
        " updated_at = ? WHERE file_id = ?",
        (chunks, size, owner, now_ms, file_id),
    )


async def touch(conn: aiosqlite.Connection, file_id: str, *, now_ms: int) -> None:
    """Record activity on the manifest (gc expires uploads by their last activity)."""
    await conn.execute("UPDATE manifests SET updated_at = ? WHERE file_id = ?", (now_ms, file_id))


async def mark(
    conn: aiosqlite.Connection,
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
    await conn.execute(
        f"UPDATE manifests SET {', '.join(sets)} WHERE file_id = ?",  # noqa: S608
        (*args, file_id),
    )


async def put_entry(
    conn: aiosqlite.Connection,
    file_id: str,
    slot: Slot,
    idx: int,
    ref: BlobRef,
    size: int,
    attrs: dict[str, object] | None = None,
) -> BlobRef | None:
    """Set entry ``idx`` of ``slot``; return the ref it replaced, if any."""
    async with conn.execute(
        "SELECT ref FROM manifest_entries WHERE file_id = ? AND slot = ? AND idx = ?",
        (file_id, slot, idx),
    ) as cur:
        row = await cur.fetchone()
    await conn.execute(
        "INSERT INTO manifest_entries (file_id, slot, idx, ref, size, attrs)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (file_id, slot, idx) DO UPDATE"
        " SET ref = excluded.ref, size = excluded.size, attrs = excluded.attrs",
        (file_id, slot, idx, ref, size, json.dumps(attrs) if attrs is not None else None),
    )
    return None if row is None else BlobRef(row[0])


async def entries(conn: aiosqlite.Connection, file_id: str, slot: Slot) -> list[Entry]:
    """The entries of one slot, ordered by index."""
    rows = await conn.execute_fetchall(
        "SELECT idx, ref, size, attrs FROM manifest_entries"
        " WHERE file_id = ? AND slot = ? ORDER BY idx",
        (file_id, slot),
    )
    return [_entry(r) for r in rows]


async def has_entry(conn: aiosqlite.Connection, file_id: str, slot: Slot, idx: int) -> bool:
    """True when entry ``idx`` of ``slot`` is stored."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM manifest_entries WHERE file_id = ? AND slot = ? AND idx = ?",
        (file_id, slot, idx),
    )
    return bool(list(rows))


async def clear(conn: aiosqlite.Connection, file_id: str, slot: Slot) -> None:
    """Drop every entry of one slot (their blobs become gc's to reclaim)."""
    await conn.execute(
        "DELETE FROM manifest_entries WHERE file_id = ? AND slot = ?", (file_id, slot)
    )


async def promote_staged(conn: aiosqlite.Connection, file_id: str, *, now_ms: int) -> None:
    """Swap a whole staged overwrite in as the live content, in the caller's transaction."""
    await clear(conn, file_id, "chunk")
    await conn.execute(
        "UPDATE manifest_entries SET slot = 'chunk' WHERE file_id = ? AND slot = 'staged'",
        (file_id,),
    )
    await conn.execute(
        "UPDATE manifests SET expected_chunks = staged_chunks, expected_size = staged_size,"
        " staged_chunks = NULL, staged_size = NULL, staged_owner = NULL,"
        " complete = 1, damaged = 0, updated_at = ?"
        " WHERE file_id = ?",
        (now_ms, file_id),
    )


async def delete(conn: aiosqlite.Connection, file_id: str) -> bool:
    """Remove the manifest and its entries; True when it existed."""
    await conn.execute("DELETE FROM manifest_entries WHERE file_id = ?", (file_id,))
    cur = await conn.execute("DELETE FROM manifests WHERE file_id = ?", (file_id,))
    return cur.rowcount > 0


async def referenced(conn: aiosqlite.Connection) -> AsyncIterator[tuple[str, BlobRef, int]]:
    """Every (file_id, ref, size) any manifest holds, in every slot: gc's live set, fsck's walk."""
    async with conn.execute("SELECT file_id, ref, size FROM manifest_entries") as cur:
        async for row in cur:
            yield row[0], BlobRef(row[1]), row[2]


async def is_referenced(conn: aiosqlite.Connection, ref: BlobRef) -> bool:
    """True when any manifest still references ``ref``."""
    async with conn.execute("SELECT 1 FROM manifest_entries WHERE ref = ? LIMIT 1", (ref,)) as cur:
        return await cur.fetchone() is not None


# --- Whole-store walks and maintenance: fsck, gc and stat use these. -------------------------


@dataclass(frozen=True)
class Holder:
    """A file that holds a ref: who a damaged blob breaks.  ``owner`` is the company id."""

    file_id: str
    owner: str
    slot: str
    marked_damaged: bool


async def walk(
    conn: aiosqlite.Connection, file_id: str | None = None
) -> AsyncIterator[tuple[Head, dict[str, list[Entry]]]]:
    """Every manifest (or only ``file_id``'s) with its entries by slot (``attrs`` left out),
    ordered by file id.  One streaming query; memory holds one manifest at a time."""
    sql = (
        "SELECT m.file_id, m.owner, m.expected_chunks, m.expected_size, m.complete, m.damaged,"
        " m.updated_at, e.slot, e.idx, e.ref, e.size"
        " FROM manifests m LEFT JOIN manifest_entries e ON e.file_id = m.file_id"
        " WHERE ?1 IS NULL OR m.file_id = ?1"
        " ORDER BY m.file_id, e.slot, e.idx"
    )
    current: Head | None = None
    slots: dict[str, list[Entry]] = {}
    async with conn.execute(sql, (file_id,)) as cur:
        async for row in cur:
            if current is None or row["file_id"] != current.file_id:
                if current is not None:
                    yield current, slots
                current, slots = _head(row), {}
            if row["slot"] is not None:
                entry = Entry(row["idx"], BlobRef(row["ref"]), row["size"])
                slots.setdefault(row["slot"], []).append(entry)
    if current is not None:
        yield current, slots


async def holders(conn: aiosqlite.Connection, ref: str) -> list[Holder]:
    """The files whose manifests hold ``ref`` (any slot), ordered by file id."""
    async with conn.execute(
        "SELECT DISTINCT e.file_id, m.owner, e.slot, m.damaged"
        " FROM manifest_entries e JOIN manifests m ON m.file_id = e.file_id"
        " WHERE e.ref = ? ORDER BY e.file_id, e.slot",
        (ref,),
    ) as cur:
        return [Holder(r[0], r[1], r[2], bool(r[3])) for r in await cur.fetchall()]


async def claimed_sizes(conn: aiosqlite.Connection, ref: str) -> list[tuple[str, int]]:
    """(file_id, size) of every entry that holds ``ref``: what each file says the blob weighs."""
    async with conn.execute(
        "SELECT file_id, size FROM manifest_entries WHERE ref = ? ORDER BY file_id", (ref,)
    ) as cur:
        return [(r[0], r[1]) for r in await cur.fetchall()]


UploadKind = Literal["upload", "overwrite"]


@dataclass(frozen=True)
class PendingUpload:
    """An upload that is not whole yet: a new file (``upload``: the manifest is incomplete) or
    an overwrite of a complete file (``overwrite``: staged entries or a staged size).  ``entries``
    are the (idx, ref) pairs of the slot being filled, the upload's fingerprint."""

    file_id: str
    owner: str
    kind: UploadKind
    updated_at: int
    entries: tuple[tuple[int, BlobRef], ...]


async def pending_uploads(
    conn: aiosqlite.Connection, *, updated_before_ms: int | None = None
) -> list[PendingUpload]:
    """Uploads in progress (optionally only those whose manifest is older than a time)."""
    cutoff = updated_before_ms if updated_before_ms is not None else 2**62
    out: list[PendingUpload] = []
    async with conn.execute(
        "SELECT file_id, owner, complete, updated_at FROM manifests"
        " WHERE updated_at < ? AND (complete = 0 OR staged_chunks IS NOT NULL"
        "  OR staged_size IS NOT NULL"
        "  OR EXISTS (SELECT 1 FROM manifest_entries s"
        "             WHERE s.file_id = manifests.file_id AND s.slot = 'staged'))"
        " ORDER BY file_id",
        (cutoff,),
    ) as cur:
        rows = await cur.fetchall()
    for file_id, owner, complete, updated_at in rows:
        kind: UploadKind = "overwrite" if complete else "upload"
        slot: Slot = "staged" if complete else "chunk"
        found = await entries(conn, file_id, slot)
        out.append(
            PendingUpload(file_id, owner, kind, updated_at, tuple((e.idx, e.ref) for e in found))
        )
    return out


async def expire(conn: aiosqlite.Connection, upload: PendingUpload, *, now_ms: int) -> bool:
    """Drop an abandoned upload, in the caller's write transaction, unless it moved since it was
    read (``updated_at`` or its entries changed): a new file's manifest is deleted (the service's
    rows cascade, so the API answers 404); an overwrite's staged entries are cleared and the file
    keeps its old content.  True when something was dropped."""
    now = await head(conn, upload.file_id)
    if now is None or now.updated_at != upload.updated_at:
        return False
    if now.complete != (upload.kind == "overwrite"):
        return False
    slot: Slot = "staged" if upload.kind == "overwrite" else "chunk"
    current = tuple((e.idx, e.ref) for e in await entries(conn, upload.file_id, slot))
    if current != upload.entries:
        return False
    if upload.kind == "upload":
        return await delete(conn, upload.file_id)
    await clear(conn, upload.file_id, "staged")
    await conn.execute(
        "UPDATE manifests SET staged_chunks = NULL, staged_size = NULL, updated_at = ?"
        " WHERE file_id = ?",
        (now_ms, upload.file_id),
    )
    return True


async def live_refs(
    conn: aiosqlite.Connection, *, excluding: Mapping[str, Slot | None] | None = None
) -> set[BlobRef]:
    """Every ref any manifest holds: gc's live set.  ``excluding`` leaves out the entries of
    some files (value None: all their slots; a slot: only that one), to price a dry run."""
    skip = excluding or {}
    out: set[BlobRef] = set()
    async with conn.execute("SELECT file_id, slot, ref FROM manifest_entries") as cur:
        async for file_id, slot, ref in cur:
            if file_id in skip and skip[file_id] in (None, slot):
                continue
            out.add(BlobRef(ref))
    return out


@dataclass(frozen=True)
class Totals:
    """What the manifests add up to (stat)."""

    files: int
    complete: int
    damaged: int
    entries: int
    logical_bytes: int
    distinct_refs: int
    distinct_bytes: int


async def totals(conn: aiosqlite.Connection) -> Totals:
    """Counts over all manifests: files, entries, logical bytes and distinct referenced bytes."""
    async with conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(complete), 0), COALESCE(SUM(damaged), 0) FROM manifests"
    ) as cur:
        files, complete, damaged = await cur.fetchone() or (0, 0, 0)
    async with conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM manifest_entries") as cur:
        n_entries, logical = await cur.fetchone() or (0, 0)
    async with conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0)"
        " FROM (SELECT ref, MAX(size) AS size FROM manifest_entries GROUP BY ref)"
    ) as cur:
        distinct, distinct_bytes = await cur.fetchone() or (0, 0)
    return Totals(files, complete, damaged, n_entries, logical, distinct, distinct_bytes)
