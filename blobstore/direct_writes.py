"""Appending a large blob's bytes with ``O_DIRECT``: from an aligned buffer straight to the
device, past the page cache.

Written through the page cache, each byte of a large upload is copied into a freshly allocated
cache page and later written back by the kernel alongside the upload (``sync_file_range``),
which on this kind of VM costs about three times the CPU of the direct write of the same bytes
(bench/README.md, single-stream upload): the upload is CPU-bound, so that CPU is throughput.
A direct write still needs the store's flush (``syncfs``) to be durable: the device's write cache
and the file's allocation are made durable by it, exactly as for a buffered write.

Direct writes must start at an aligned offset and have an aligned length, from an aligned
address: the bytes are gathered in one page-aligned buffer and written whenever it is full; the
unaligned rest at the end goes through the page cache (``O_DIRECT`` cleared on the descriptor).
A file system that refuses direct writes (tmpfs, some FUSE) gets the same bytes written
through the page cache instead.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Sequence

# Alignment of offsets and lengths: the largest logical block size of common devices (4 KiB
# also covers 512-byte sectors).  mmap'd buffers are page-aligned.
ALIGN = 4096
# Bytes gathered before each direct write: the size of a write batch, so about one device write
# per batch, and the one extra buffer a large upload holds.
DIRECT_BUFFER = 1 << 20
O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def open_flags() -> int:
    """The extra ``os.open`` flag for a blob to be appended directly (0 where there is none)."""
    return O_DIRECT


class DirectAppender:
    """Appends to ``fd`` (opened with ``O_DIRECT``, empty) through one aligned buffer.  Used by
    one thread at a time; :meth:`finish` writes the rest and leaves ``fd`` an ordinary
    descriptor, :meth:`close` drops what is buffered (the blob is being discarded)."""

    def __init__(self, fd: int, size: int = DIRECT_BUFFER) -> None:
        if size <= 0 or size % ALIGN:
            raise ValueError("the buffer must be a positive multiple of ALIGN")
        self._fd = fd
        self._size = size
        self._buf: mmap.mmap | None = mmap.mmap(-1, size)
        self._view = memoryview(self._buf)
        self._used = 0
        self._offset = 0  # file offset of the buffer's first byte (aligned while direct)
        self.direct = True

    def append(self, pieces: Sequence[memoryview]) -> None:
        view, size = self._view, self._size
        for piece in pieces:
            while len(piece):
                n = min(len(piece), size - self._used)
                view[self._used : self._used + n] = piece[:n]
                self._used += n
                piece = piece[n:]
                if self._used == size:
                    self._write(size)

    def finish(self) -> None:
        """Write everything buffered: the aligned part directly, the rest buffered."""
        whole = self._used - self._used % ALIGN
        if whole:
            self._write(whole)
        if self._used:
            self._buffered()
            self._write(self._used)
        elif self.direct:
            self._buffered()
        self.close()

    def close(self) -> None:
        if self._buf is not None:
            self._view.release()
            self._buf.close()
            self._buf = None

    def _write(self, n: int) -> None:
        """Write the buffer's first ``n`` bytes at the buffer's offset; keep the rest."""
        data = self._view[:n]
        try:
            done = os.pwrite(self._fd, data, self._offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self.direct:
                raise
            # The file system takes no direct writes: through the page cache from now on.
            self._buffered()
            done = os.pwrite(self._fd, data, self._offset)
        finally:
            data.release()
        if done < n:
            self._buffered()  # the rest is no longer aligned
        while done < n:
            more = os.pwrite(self._fd, self._view[done:n], self._offset + done)
            if more <= 0:
                raise OSError(errno.EIO, "short write")
            done += more
        self._offset += n
        rest = self._used - n
        if rest:
            self._view[:rest] = self._view[n : self._used]
        self._used = rest

    def _buffered(self) -> None:
        if self.direct:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~O_DIRECT)
            self.direct = False
