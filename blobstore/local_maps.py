"""A local blob's bytes as windows of the file mapped into memory, for a download that only
hands them to the kernel (a socket write): no ``pread`` copy into a Python buffer, and one
thread hand-off per window instead of one per MiB.

Each window is mapped with ``MAP_POPULATE`` in one of the store's threads, one window ahead of
the one being sent, so a file that is not in the page cache is read from the disk there, never
on the event loop.  Memory per stream: the window being sent, the one mapped ahead, and the tail
of the previous one a socket may still hold (the caller's transport drains to its low-water mark
before the next write), so three windows of page-cache pages at most, none of it anonymous
memory.

The hazard of a mapping is a file truncated under it: touching a page past the new end in user
space is SIGBUS, which kills the process.  It is kept out of reach three ways.  Nothing is ever
mapped past the size the file has when the window is mapped (``mmap`` itself refuses, and the
stream ends short there: the caller sees fewer bytes than it asked for and cuts its
connection).  Blob files are never written or truncated in place once linked (fsck's repair and
gc rename or unlink them, which leaves a mapping whole).  And the bytes are only ever read by the
kernel, inside the socket write: a page that is gone there fails the write (EFAULT) instead of
raising a signal, so an operator's ``truncate`` on a blob being downloaded cuts that download's
connection and nothing else (tests/test_api_download_mapped.py does exactly that).  Hence the
contract of :class:`~blobstore.port.Mapped`: the views go to a transport that sends from them
as they are, and no code of this process reads them.
"""

from __future__ import annotations

import contextlib
import mmap

# Bytes mapped at once.  Measured on this VM (docs/measured.md): 8 MiB windows written whole
# cost the event loop about as much per GiB as aiohttp sending from memory; 4 MiB and 2 MiB
# cost more per GiB, 16 MiB little less for twice the memory.
MAP_WINDOW = 8 << 20
_PAGE = mmap.ALLOCATIONGRANULARITY


class Window:
    """One mapped window and the view of its requested bytes."""

    __slots__ = ("_map", "view")

    def __init__(self, fd: int, start: int, end: int) -> None:
        """Map ``[start, end)`` of ``fd`` (ValueError when the file is now shorter than ``end``:
        the mapping would reach past its end)."""
        base = start - start % _PAGE
        self._map = mmap.mmap(
            fd,
            end - base,
            flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
            prot=mmap.PROT_READ,
            offset=base,
        )
        self.view = memoryview(self._map)[start - base :]

    def drop(self) -> None:
        """Unmap now, unless something still views the bytes (a transport still sending them,
        or a caller's reference): then the mapping goes when the last view does, since only the
        views keep the map object alive once the stream lets go of it."""
        self.view = memoryview(b"")
        with contextlib.suppress(BufferError):
            self._map.close()
