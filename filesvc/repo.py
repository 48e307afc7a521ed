"""The service's own tables, next to the blob store's manifests in the same database.

``files`` and ``thumbnail_jobs`` reference ``manifests`` with ON DELETE CASCADE, so when the blob
store's gc expires an abandoned upload, the file is gone from the API too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import aiosqlite

from blobstore import manifests

ThumbStatus = Literal["waiting", "done", "error"]

SCHEMA: tuple[str, ...] = (
    *manifests.SCHEMA,
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
        etag TEXT,
        thumbnails_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS files_company ON files(company_id)",
    """CREATE TABLE IF NOT EXISTS thumbnail_jobs (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    )""",
)


async def upgrade(conn: aiosqlite.Connection) -> None:
    """Bring a database made by an earlier release up to SCHEMA (idempotent): add the columns
    SCHEMA has and the table lacks."""
    columns = {r[1] for r in await conn.execute_fetchall("PRAGMA table_info(files)")}
    if "thumbnails_error" not in columns:
        await conn.execute("ALTER TABLE files ADD COLUMN thumbnails_error TEXT")


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


_SELECT = (
    "SELECT f.*, m.expected_chunks, m.expected_size, m.complete, m.damaged"
    " FROM files f JOIN manifests m ON m.file_id = f.file_id"
)


def _row(r: aiosqlite.Row) -> FileRow:
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


async def get(conn: aiosqlite.Connection, company_id: str, file_id: str) -> FileRow | None:
    """The file, if it exists in this company (another company's file is None: a 404)."""
    # execute_fetchall: one hand-off to the database thread instead of three.
    rows = list(
        await conn.execute_fetchall(
            _SELECT + " WHERE f.file_id = ? AND f.company_id = ?", (file_id, company_id)
        )
    )
    return _row(rows[0]) if rows else None


async def update_meta(
    conn: aiosqlite.Connection,
    file_id: str,
    *,
    name: str | None,
    fallback_name: str | None,
    mime: str | None,
    now_ms: int,
) -> None:
    """A name or type given as a query parameter replaces the stored one; a multipart part's
    filename only fills a name that is still missing."""
    await conn.execute(
        "UPDATE files SET name = COALESCE(?, name, ?), mime = COALESCE(?, mime), updated_at = ?"
        " WHERE file_id = ?",
        (name, fallback_name, mime, now_ms, file_id),
    )


async def set_completed(conn: aiosqlite.Connection, file_id: str, *, etag: str, now_ms: int) -> int:
    """Record new complete content and queue its thumbnail job; return the job's generation.

    In the same transaction as the manifest change, so a crash cannot lose the job."""
    await conn.execute(
        "UPDATE files SET etag = ?, updated_at = ?, thumbnails_status = 'waiting',"
        " thumbnails_error = NULL WHERE file_id = ?",
        (etag, now_ms, file_id),
    )
    async with conn.execute(
        "INSERT INTO thumbnail_jobs (file_id, generation, state, updated_at)"
        " VALUES (?, 1, 'pending', ?)"
        " ON CONFLICT (file_id) DO UPDATE SET generation = generation + 1, state = 'pending',"
        " attempts = 0, updated_at = excluded.updated_at"
        " RETURNING generation",
        (file_id, now_ms),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def set_thumbnail_status(
    conn: aiosqlite.Connection, file_id: str, status: ThumbStatus, error: str | None = None
) -> None:
    """Record the thumbnail outcome the resource reports, and why it failed if it did."""
    await conn.execute(
        "UPDATE files SET thumbnails_status = ?, thumbnails_error = ? WHERE file_id = ?",
        (status, error, file_id),
    )
