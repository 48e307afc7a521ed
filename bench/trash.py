"""Data directories of finished runs, kept until the bench process ends, so that no measured run
pays for the clean-up of the one before it.

On an ext4 without a journal (this machine's disk), creating a file skips every inode deleted in
the last ~30 s (``recently_deleted`` in the kernel's inode allocator; up to 330 s while the
deleted inodes' table blocks are still dirty) and reads each one's table entry on the way:
right after a run's data directory of thousands of 4 KiB blobs was deleted, each new file cost
~1,000 µs of system CPU instead of ~50 (bench/README.md, "Deleted files and the next run").  A
small upload creates one file per blob, so a 4 KiB upload run measured right after such a
delete measured the delete.  Journaled ext4 and xfs do not do this, and neither do peers that
append to a few volume files.

So a finished run's data directory is *retired*: its large files are deleted at once (few
inodes, most of the space), the rest stays until :func:`empty` at the end of the process, which
then syncs, so that the deleted inodes' table blocks are clean and the window is the short one.
A bench process also records when it emptied its trash (a stamp file in the temp directory), and
one starting soon after waits out the window before it measures (:func:`settle`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

# Files at least this large are deleted as soon as their run ends: a 1 GiB run's bytes are in a
# handful of them, and keeping them could fill the disk.
LARGE = 1 << 20
# How long after a mass delete the allocator still skips the deleted inodes once their table
# blocks are written (``vm.dirty_expire_centisecs``, 30 s by default), plus a margin.
WINDOW = 35.0
# Files deleted at once that count as a mass delete (a 4 KiB run leaves thousands).
MANY = 500

_kept: list[Path] = []


def stamp_path() -> Path:
    return Path(tempfile.gettempdir()) / "filesvc-bench-last-mass-delete"


def retire(path: Path) -> None:
    """A finished run's data directory: its large files go now, the rest at :func:`empty`."""
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if os.lstat(p).st_size >= LARGE:
                    os.unlink(p)
            except OSError:
                continue  # gone already, or not ours to judge: empty() deletes the rest
    _kept.append(path)


def kept() -> list[Path]:
    """The retired directories still on disk, oldest first."""
    return list(_kept)


def empty() -> int:
    """Delete every retired directory (the process is done measuring), then sync; returns how
    many files were deleted, and records a mass delete for :func:`settle`."""
    deleted = 0
    while _kept:
        path = _kept.pop(0)
        for _dirpath, _dirs, files in os.walk(path):
            deleted += len(files)
        shutil.rmtree(path, ignore_errors=True)
    if deleted >= MANY:
        os.sync()
        stamp_path().write_text(f"{time.time():.3f}\n")
    return deleted


def settle(*, now: float | None = None, sleep: bool = True) -> float:
    """Wait until the last mass delete recorded by a bench process is ``WINDOW`` seconds old;
    returns the seconds waited (or to wait, without ``sleep``)."""
    try:
        last = float(stamp_path().read_text())
    except (OSError, ValueError):
        return 0.0
    wait = last + WINDOW - (time.time() if now is None else now)
    if wait <= 0:
        return 0.0
    wait = min(wait, WINDOW)  # a clock that jumped never makes it wait longer
    if sleep:
        print(f"waiting {wait:.0f} s: files deleted by a bench run moments ago (bench/trash.py)")
        time.sleep(wait)
    return wait
