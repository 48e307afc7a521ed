"""The ``tus_uploads`` table: which files are tus partial or final (concatenated) uploads.

A plain tus upload needs no row: it is a file whose manifest fills up.  A partial upload is
never offered as a file of its own (no thumbnails) and a final upload answers its
``Upload-Concat`` on HEAD.  Rows cascade with the manifest, so gc and delete need no extra step.
"""

from __future__ import annotations

from blobstore.engine.base import Tx
from blobstore.engine.migrate import Step

_TABLE = """CREATE TABLE IF NOT EXISTS tus_uploads (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        concat TEXT NOT NULL
    )"""

STEP_TABLE = Step(
    3,
    "tus_uploads: which files are tus partial or final (concatenated) uploads",
    {"sqlite": (_TABLE,), "postgresql": (_TABLE,)},
)


async def insert(tx: Tx, file_id: str, concat: str) -> None:
    """Record ``concat`` (``partial`` or ``final;<urls>``) for a new upload."""
    await tx.execute("INSERT INTO tus_uploads (file_id, concat) VALUES (?, ?)", file_id, concat)


async def concat_of(tx: Tx, file_id: str) -> str | None:
    """The upload's ``Upload-Concat`` value, or None for a plain upload."""
    row = await tx.fetchrow("SELECT concat FROM tus_uploads WHERE file_id = ?", file_id)
    return None if row is None else str(row[0])
