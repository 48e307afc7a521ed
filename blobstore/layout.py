"""Where things live in a data directory: the one place the service and the CLI agree on.

``D/blobs/`` is the :class:`~blobstore.local.LocalBackend` root (blobs at ``ab/cd/<ref>``, staged
bytes in ``tmp/``, blobs fsck set aside in ``quarantine/``); ``D/meta.sqlite3`` is the SQLite
database holding the manifests and the service's own tables.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOBS_DIR = "blobs"
DB_FILE = "meta.sqlite3"
# Under the blob root; LocalBackend.scan only walks two-letter fan-out directories, so a
# quarantined blob is no longer a blob: fsck and gc do not see it, and nothing deletes it.
QUARANTINE_DIR = "quarantine"


def blobs_dir(data_dir: Path) -> Path:
    """The local blob store's root."""
    return data_dir / BLOBS_DIR


def db_path(data_dir: Path) -> Path:
    """The SQLite database file."""
    return data_dir / DB_FILE


def quarantine_dir(data_dir: Path) -> Path:
    """Where ``blobstore fsck --repair`` moves blobs whose content does not match their ref."""
    return blobs_dir(data_dir) / QUARANTINE_DIR


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable (a file just moved into or created in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
