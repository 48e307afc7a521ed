"""One file's manifest: its header, its slots' entries, the overwrite in progress and the swap.
Every function runs inside a transaction the caller holds."""

from __future__ import annotations

import json
from collections.abc import Sequence

from blobstore.engine.base import Row, Tx
from blobstore.manifest_model import Entry, Head, NewManifest, Slot, StagedSession
from blobstore.refs import BlobRef


def row_head(row: Row) -> Head:
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
    await tx.executemany(
        "INSERT INTO manifests (file_id, owner, expected_chunks, expected_size, complete,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (m.file_id, m.owner, m.expected_chunks, m.expected_size, int(m.complete), m.now_ms)
            for m in batch
        ],
    )
    entries = [(m.file_id, *m.entry) for m in batch if m.entry is not None]
    if entries:
        await tx.executemany(
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
    return row_head(row) if row is not None else None


async def lock(tx: Tx, file_id: str) -> Head | None:
    """The header, with the manifest locked against other writers until the transaction ends
    (PostgreSQL: a row lock; SQLite's write transaction excludes every other writer)."""
    row = await tx.fetchrow(_HEAD + tx.dialect.for_update, file_id)
    return row_head(row) if row is not None else None


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


async def replace_ref(tx: Tx, file_id: str, old: BlobRef, new: BlobRef) -> int:
    """Point ``file_id``'s entries from ``old`` to ``new`` (the same content stored anew, as
    ``blobstore encrypt`` does); the caller holds the manifest's lock.  Returns entries changed."""
    return await tx.execute(
        "UPDATE manifest_entries SET ref = ? WHERE file_id = ? AND ref = ?", new, file_id, old
    )
