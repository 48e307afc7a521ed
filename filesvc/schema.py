"""The service's schema track: the steps of its tables, each defined by the table's owner."""

from __future__ import annotations

from blobstore.engine.migrate import Step, Track
from blobstore.schema import TRACK as BLOBSTORE_TRACK
from filesvc import jobqueue, repo
from filesvc.tus import table as tus_table

STEP_TABLES = Step(
    1,
    "files and thumbnail_jobs",
    {
        "sqlite": (*repo.TABLE_SQL["sqlite"], *jobqueue.TABLE_SQL["sqlite"]),
        "postgresql": (*repo.TABLE_SQL["postgresql"], *jobqueue.TABLE_SQL["postgresql"]),
    },
)

TRACK = Track(
    "filesvc", (STEP_TABLES, jobqueue.STEP_LEASES, tus_table.STEP_TABLE, repo.STEP_THUMBNAILS_ERROR)
)

# In order: the service's tables reference the blob store's.
TRACKS = (BLOBSTORE_TRACK, TRACK)
