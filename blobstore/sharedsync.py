"""One ``syncfs`` shared by every process serving a store (``filesvc serve --workers N``).

``syncfs`` flushes the whole file system, so a flush made by one worker also makes every other
worker's finished writes durable.  Each worker's :class:`~blobstore.groupsync.GroupSync` runs
its rounds back to back; without this, N workers ran N flushes of the same file system at once,
each waiting for the same writes and each asking the device to empty its cache.  Here the
flushes are numbered in a small shared file beside the blobs (``syncfs.seq``: the number of the
last flush started, and of the last one finished) and taken one at a time under ``flock``.
A worker that wants its writes durable reads the started number *after* its writes, and then
under the lock needs only a flush numbered higher than that to have finished: such a flush was
numbered, and so started, after its writes.  If one has, it has nothing left to do.

The lock is held during the flush, so a worker whose flush is not covered waits for the one
running and then flushes; the next worker usually finds its writes covered by that one.  Where
the file cannot be made (a read-only store, a file system without ``flock``), each flush is a
plain ``syncfs`` of its own, as before.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Callable
from pathlib import Path

SEQ_FILE = "syncfs.seq"
_SIZE = 16  # two little-endian 64-bit counters: started, finished


class SharedSync:
    """Flushes of one file system, shared by the processes that open the same ``root``."""

    def __init__(self, root: Path | str, flush: Callable[[], None]) -> None:
        self._path = os.path.join(root, SEQ_FILE)
        self._flush = flush
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._counters: memoryview | None = None
        self._unshared = False

    def _open(self) -> memoryview | None:
        if self._counters is not None or self._unshared:
            return self._counters
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self._unshared = True
            return None
        try:
            if os.fstat(fd).st_size < _SIZE:
                # Grown under the lock, so two processes never both lay it out.
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < _SIZE:
                        os.ftruncate(fd, _SIZE)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            mapped = mmap.mmap(fd, _SIZE)
        except OSError:
            os.close(fd)
            self._unshared = True
            return None
        self._fd, self._map = fd, mapped
        self._view = memoryview(mapped)
        # An aligned 8-byte item read or written through a cast view is one load or store.
        self._counters = self._view.cast("Q")
        return self._counters

    def flush(self) -> None:
        """Return once a flush that started after the call has finished (in this process or
        another); raises what the flush raised."""
        counters = self._open()
        if counters is None or self._fd is None:
            self._flush()
            return
        seen = counters[0]
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if counters[1] > seen:
                return  # one numbered after ``seen`` started after the caller's writes
            number = counters[0] + 1
            counters[0] = number
            self._flush()
            counters[1] = number
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for view in (self._counters, self._view):
            if view is not None:
                view.release()
        self._counters = self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
