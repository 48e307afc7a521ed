"""A file's content for a thumbnail worker, in memory: never a temporary file on a disk.

The content is written into an anonymous in-memory file (``memfd_create``) held by this process;
the worker, a separate process of the same user, opens it by the path
``/proc/<this pid>/fd/<fd>``, which every renderer takes like any path (libvips, PDFium, PyAV,
and LibreOffice through a symbolic link to it).  Closing the descriptor frees the memory; a
``kill -9`` frees it with the process.  Nothing is left behind anywhere.

Videos are not held to the input size limit (their first frame is near the start, their index
at the start or the end), so a large video is given as a sparse file of its first and last
:data:`VIDEO_WINDOW` bytes: the middle reads as zeros and takes no memory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from blobstore.manifest_model import Entry

# Bytes of a large video kept from its start and from its end.
VIDEO_WINDOW = 64 << 20

Reader = Callable[[Entry, int, int | None], AsyncIterator[bytes]]


class MemFile:
    """An in-memory file: ``path`` for another process of this user, until :meth:`close`."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("filesvc-thumbnail-input", os.MFD_CLOEXEC)
        self.path = Path(f"/proc/{os.getpid()}/fd/{self.fd}")

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


async def fill(
    chunks: Sequence[Entry], read: Reader, *, video: bool, run: Callable[..., Awaitable[object]]
) -> MemFile:
    """A MemFile holding the chunks' content (sparse in the middle for a large video)."""
    memfile = await run(MemFile)
    assert isinstance(memfile, MemFile)
    try:
        total = sum(e.size for e in chunks)
        windows = [(0, total)]
        if video and total > 2 * VIDEO_WINDOW:
            windows = [(0, VIDEO_WINDOW), (total - VIDEO_WINDOW, total)]
        await run(os.ftruncate, memfile.fd, total)
        offset = 0
        for entry in chunks:
            lo, hi = offset, offset + entry.size
            for start, end in windows:
                a, b = max(lo, start), min(hi, end)
                if a >= b:
                    continue
                pos = a
                async for data in read(entry, a - lo, b - lo):
                    await run(_pwrite_all, memfile.fd, data, pos)
                    pos += len(data)
            offset = hi
    except BaseException:
        memfile.close()
        raise
    return memfile
