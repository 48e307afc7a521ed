"""The service's ``files`` table: every statement on it is here.

``files`` references the blob store's ``manifests`` with ON DELETE CASCADE, so when the blob
store's gc expires an abandoned upload, the file is gone from the API too.  The service never
writes the blob store's tables itself: it calls :mod:`blobstore.manifests`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from blobstore import inline, manifests
from blobstore.engine.base import Engine, Row, Tx
from blobstore.engine.migrate import Step
from blobstore.manifests import Entry

ThumbStatus = Literal["waiting", "done", "error"]

# Release 0.1.0's table (SQLite), and its PostgreSQL twin (epoch milliseconds need 64 bits).
TABLE_SQL = {
    "sqlite": (
        """CREATE TABLE IF NOT EXISTS files (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        company_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        application_id TEXT,
        name TEXT,
        mime TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        thumbnails_status TEXT NOT NULL DEFAULT 'waiting',
        etag TEXT
    )""",
        "CREATE INDEX IF NOT EXISTS files_company ON files(company_id)",
    ),
    "postgresql": (
        """CREATE TABLE IF NOT EXISTS files (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        company_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        application_id TEXT,
        name TEXT,
        mime TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        thumbnails_status TEXT NOT NULL DEFAULT 'waiting',
        etag TEXT
    )""",
        "CREATE INDEX IF NOT EXISTS files_company ON files(company_id)",
    ),
}


STEP_THUMBNAILS_ERROR = Step(
    4,
    "files.thumbnails_error: why making thumbnails failed",
    {
        "sqlite": ("ALTER TABLE files ADD COLUMN thumbnails_error TEXT",),
        "postgresql": ("ALTER TABLE files ADD COLUMN IF NOT EXISTS thumbnails_error TEXT",),
    },
)


@dataclass(frozen=True)
class FileRow:
    """One row of ``files`` joined with its manifest head."""

    file_id: str
    company_id: str
    user_id: str
    application_id: str | None
    name: str | None
    mime: str
    created_at: int
    updated_at: int
    thumbnails_status: ThumbStatus
    etag: str | None
    # Why making thumbnails failed (status "error"), in the renderer's words; else None.
    thumbnails_error: str | None
    expected_chunks: int | None
    expected_size: int | None
    complete: bool
    damaged: bool


@dataclass(frozen=True)
class NewRow:
    """A new file's row (the group commit inserts many at once)."""

    file_id: str
    company_id: str
    user_id: str
    application_id: str | None
    name: str | None
    mime: str
    now_ms: int
    thumbnails_status: str
    etag: str | None


_COLUMNS = (
    "f.file_id, f.company_id, f.user_id, f.application_id, f.name, f.mime,"
    " f.created_at, f.updated_at, f.thumbnails_status, f.etag, f.thumbnails_error,"
    " m.expected_chunks, m.expected_size, m.complete, m.damaged"
)
_FROM = " FROM files f JOIN manifests m ON m.file_id = f.file_id"
_SELECT = "SELECT " + _COLUMNS + _FROM


def _row(r: Row) -> FileRow:
    return FileRow(
        file_id=r["file_id"],
        company_id=r["company_id"],
        user_id=r["user_id"],
        application_id=r["application_id"],
        name=r["name"],
        mime=r["mime"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        thumbnails_status=r["thumbnails_status"],
        etag=r["etag"],
        thumbnails_error=r["thumbnails_error"],
        expected_chunks=r["expected_chunks"],
        expected_size=r["expected_size"],
        complete=bool(r["complete"]),
        damaged=bool(r["damaged"]),
    )


async def get(tx: Tx, company_id: str, file_id: str) -> FileRow | None:
    """The file, if it exists in this company (another company's file is None: a 404)."""
    row = await tx.fetchrow(
        _SELECT + " WHERE f.file_id = ? AND f.company_id = ?", file_id, company_id
    )
    return _row(row) if row is not None else None


# The file with its chunk and thumbnail entries in one statement (one snapshot, one round trip):
# a file with no entry yet still gives its one row, with NULL entry columns.  The reads that send
# content also bring each small blob's inline bytes with its entry (a metadata GET does not).
def _view(with_inline: bool) -> str:
    return (
        "SELECT "
        + _COLUMNS
        + ", e.slot AS e_slot, e.idx AS e_idx, e.ref AS e_ref, e.size AS e_size,"
        + " e.attrs AS e_attrs, "
        + (inline.VIEW_COLUMN if with_inline else "NULL AS e_inline")
        + _FROM
        + " LEFT JOIN manifest_entries e ON e.file_id = f.file_id AND e.slot IN ('chunk', 'thumb')"
        + (inline.VIEW_JOIN if with_inline else "")
        + " WHERE f.file_id = ? AND f.company_id = ? ORDER BY e.slot, e.idx"
    )


_VIEW = _view(with_inline=False)
_CONTENT_VIEW = _view(with_inline=True)


async def get_view(
    db: Engine, company_id: str, file_id: str, *, content: bool = False
) -> tuple[FileRow, list[Entry], list[Entry]] | None:
    """The file with its chunk and thumbnail entries (each in index order), or None when it is
    not in this company.  ``content``: each entry kept inline comes with its stored bytes."""
    rows = await db.query(_CONTENT_VIEW if content else _VIEW, file_id, company_id)
    if not rows:
        return None
    chunks: list[Entry] = []
    thumbs: list[Entry] = []
    for r in rows:
        slot = r["e_slot"]
        if slot is not None:
            entry = manifests.decode_entry(r["e_idx"], r["e_ref"], r["e_size"], r["e_attrs"])
            stored = r["e_inline"]
            if stored is not None:
                entry = replace(entry, inline=bytes(stored))
            (chunks if slot == "chunk" else thumbs).append(entry)
    return _row(rows[0]), chunks, thumbs


async def chunk_stored(db: Engine, company_id: str, file_id: str, number: int) -> bool | None:
    """Whether chunk ``number`` of the file is stored; None when the file is not in this
    company.  One statement: one round trip."""
    rows = await db.query(
        "SELECT EXISTS (SELECT 1 FROM manifest_entries e WHERE e.file_id = f.file_id"
        " AND e.slot = 'chunk' AND e.idx = ?)"
        " FROM files f WHERE f.file_id = ? AND f.company_id = ?",
        number,
        file_id,
        company_id,
    )
    return bool(rows[0][0]) if rows else None


async def insert_many(tx: Tx, batch: Sequence[NewRow]) -> None:
    """New files' rows, one statement for the batch (their manifests exist already)."""
    await tx.executemany_later(
        "INSERT INTO files (file_id, company_id, user_id, application_id, name, mime,"
        " created_at, updated_at, thumbnails_status, etag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                f.file_id,
                f.company_id,
                f.user_id,
                f.application_id,
                f.name,
                f.mime,
                f.now_ms,
                f.now_ms,
                f.thumbnails_status,
                f.etag,
            )
            for f in batch
        ],
    )


async def update_meta(
    tx: Tx,
    file_id: str,
    *,
    name: str | None,
    fallback_name: str | None,
    mime: str | None,
    now_ms: int,
) -> None:
    """A name or type given as a query parameter replaces the stored one; a multipart part's
    filename only fills a name that is still missing."""
    await tx.execute(
        "UPDATE files SET name = COALESCE(?, name, ?), mime = COALESCE(?, mime), updated_at = ?"
        " WHERE file_id = ?",
        name,
        fallback_name,
        mime,
        now_ms,
        file_id,
    )


async def set_completed(tx: Tx, file_id: str, *, etag: str, now_ms: int) -> None:
    """Record new complete content (its thumbnail job is queued in the same transaction)."""
    await tx.execute(
        "UPDATE files SET etag = ?, updated_at = ?, thumbnails_status = 'waiting',"
        " thumbnails_error = NULL WHERE file_id = ?",
        etag,
        now_ms,
        file_id,
    )


async def set_thumbnail_status(
    tx: Tx, file_id: str, status: ThumbStatus, error: str | None = None
) -> None:
    """Record the thumbnail outcome the resource reports, and why it failed if it did."""
    await tx.execute(
        "UPDATE files SET thumbnails_status = ?, thumbnails_error = ? WHERE file_id = ?",
        status,
        error,
        file_id,
    )


async def count(tx: Tx) -> int:
    """How many files there are (every company)."""
    row = await tx.fetchrow("SELECT COUNT(*) FROM files")
    return int(row[0]) if row is not None else 0
