"""New file ids: UUIDs of version 7 (RFC 9562), ordered by creation time.

A file id keys three B-trees of the metadata database (files, manifests, manifest entries).  A
random id (version 4) lands each new row on a random leaf of each, so every small upload dirties
three pages that a page cache of any fixed size stops holding as the database grows: each is
read back and written to the log again.  Time-ordered ids append at the right edge of the
trees, where the pages of a whole group commit are shared and stay cached (bench/README.md,
small uploads).  The 74 random bits of a version 7 UUID keep ids unguessable; the creation
time they reveal is the resource's ``created_at`` anyway."""

from __future__ import annotations

import uuid_utils


def new_file_id() -> str:
    """A fresh file id, later than every id this process made before (monotonic within a
    millisecond too)."""
    return str(uuid_utils.uuid7())
