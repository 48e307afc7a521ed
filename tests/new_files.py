"""A new file's row as the upload path hands it to the group commit (filesvc/creates.py), for
the tests that drive the batcher directly."""

from __future__ import annotations

import uuid

from filesvc.creates import NewFile


def new_file() -> NewFile:
    """An empty, incomplete file of company ``c1`` under a fresh id."""
    return NewFile(
        file_id=str(uuid.uuid4()),
        company_id="c1",
        user_id="u1",
        application_id=None,
        name="x",
        mime="text/plain",
        now_ms=1,
        expected_chunks=None,
        expected_size=None,
        entry=None,
        complete=False,
        etag=None,
        thumbnails_status="waiting",
        thumbnail_job=False,
    )
