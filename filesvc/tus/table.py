"""The ``tus_uploads`` table: which files are tus partial or final (concatenated) uploads.

A plain tus upload needs no row: it is a file whose manifest fills up.  A partial upload is
never offered as a file of its own (no thumbnails) and a final upload answers its
``Upload-Concat`` on HEAD.  Rows cascade with the manifest, so gc and delete need no extra step.
"""

from __future__ import annotations

import aiosqlite

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS tus_uploads (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        concat TEXT NOT NULL
    )""",
)


async def insert(conn: aiosqlite.Connection, file_id: str, concat: str) -> None:
    """Record ``concat`` (``partial`` or ``final;<urls>``) for a new upload."""
    await conn.execute("INSERT INTO tus_uploads (file_id, concat) VALUES (?, ?)", (file_id, concat))


async def concat_of(conn: aiosqlite.Connection, file_id: str) -> str | None:
    """The upload's ``Upload-Concat`` value, or None for a plain upload."""
    rows = list(
        await conn.execute_fetchall("SELECT concat FROM tus_uploads WHERE file_id = ?", (file_id,))
    )
    return str(rows[0][0]) if rows else None
