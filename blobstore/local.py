"""Local-filesystem backend: the embedded default.

Layout under the store root: ``ab/cd/xxh3_128-abcd...`` (two-level fan-out by digest) and
``tmp/`` for staged bytes.  The durable write follows restic: temp file beside the target, write,
check the byte count, make it durable, link into place (never replacing), make the name durable.
"Durable" is a shared ``syncfs`` round (:class:`GroupSync`), so concurrent uploads pay for one.
No path is ever built from anything but a validated ref.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from blobstore.errors import BlobNotFound, translate_oserror
from blobstore.groupsync import GroupSync
from blobstore.local_maps import MAP_WINDOW, Window
from blobstore.local_pump import PumpThreads, SocketPump
from blobstore.local_staging import READ_SIZE, LocalStaging
from blobstore.port import BlobInfo
from blobstore.refs import BlobRef, is_ref, ref_digest
from blobstore.streams import read_opened

T = TypeVar("T")

# Reads up to this many bytes are done on the caller's thread (ReadWhole), larger ones in one
# hand-off to the store's threads.
INLINE_READ = 64 * 1024
# Store file I/O runs on its own small pool, so a slow disk cannot starve the loop's default
# executor (which DNS and others share).  Writes of one blob are serialised anyway.
IO_THREADS = 8
# Downloads sent by a thread of their own at once (blobstore/local_pump.py), each from a mapped
# 4 MiB window of its blob, unless the backend is given another count (FILESVC_DOWNLOAD_THREADS);
# a download beyond them is sent as mapped windows by the event loop.
PUMP_THREADS = 16
TEMP_DIR = "tmp"


# Release 0.1.0's gc moved a blob aside under this prefix while it decided on it; a gc killed
# mid-way left it there, and ``blobstore fsck --repair`` still puts such a blob back.
GC_PARKED_PREFIX = "gc-"


def parked_ref(name: str) -> BlobRef | None:
    """The ref a parked temp file holds, or None when the name is not a parked blob's."""
    if not name.startswith(GC_PARKED_PREFIX):
        return None
    ref = name[len(GC_PARKED_PREFIX) :].split(".", 1)[0]
    return BlobRef(ref) if is_ref(ref) else None


def _sizes(paths: list[str]) -> list[int | None]:
    sizes: list[int | None] = []
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except FileNotFoundError:
            sizes.append(None)
    return sizes


def _open_sized(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


def _close_sized_if_opened(fut: asyncio.Future[tuple[int, int]]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        os.close(fut.result()[0])


class LocalBlobStream:
    """A range of one blob file, held open, read in ``READ_SIZE`` pieces by the store's threads,
    one piece ahead of the one being sent; or sent to a socket by a thread of its own
    (:class:`~blobstore.port.Pumps`); or, for a caller that only hands the bytes to a socket
    (:class:`~blobstore.port.Mapped`), mapped a window at a time (docs/measured.md)."""

    def __init__(self, backend: LocalBackend, fd: int, start: int, end: int) -> None:
        self._backend = backend
        self._fd: int | None = fd
        self._start = start
        self._end = end
        # A pread (or mapping) in flight keeps running when its reader is cancelled; the fd is
        # closed only after it, or the number could be reused under it.
        self._pending: asyncio.Future[Any] | None = None
        self._pump: SocketPump | None = None

    @property
    def length(self) -> int:
        return self._end - self._start

    def _read_at(self, pos: int) -> asyncio.Future[bytes] | None:
        if pos >= self._end or self._fd is None:
            return None
        return asyncio.ensure_future(
            self._backend.run(os.pread, self._fd, min(READ_SIZE, self._end - pos), pos)
        )

    def file_range(self) -> tuple[int, int, int]:
        if self._fd is None:
            raise ValueError("stream is closed")
        return self._fd, self._start, self._end - self._start

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # The next piece is read while the caller sends this one: the page-cache read and the
        # socket write overlap, and memory stays at two pieces.
        pos = self._start
        try:
            self._pending = self._read_at(pos)
            while self._pending is not None:
                data = await asyncio.shield(self._pending)
                if not data:
                    self._pending = None
                    break
                pos += len(data)
                self._pending = self._read_at(pos)
                yield data
        except OSError as exc:
            self._pending = None
            raise translate_oserror(exc) from None

    def _map_at(self, pos: int) -> asyncio.Future[Window] | None:
        if pos >= self._end or self._fd is None:
            return None
        return asyncio.ensure_future(
            self._backend.run(Window, self._fd, pos, min(pos + MAP_WINDOW, self._end))
        )

    async def mapped(self) -> AsyncGenerator[memoryview]:
        # Each window is mapped (and read from the disk if need be) in a thread while the one
        # before is sent (blobstore/local_maps.py).  A file now shorter than the window: ValueError
        # from mmap, and the stream ends short.
        pos = self._start
        try:
            self._pending = self._map_at(pos)
            while self._pending is not None:
                try:
                    window = await asyncio.shield(self._pending)
                except ValueError:
                    self._pending = None
                    return
                pos += len(window.view)
                self._pending = self._map_at(pos)
                try:
                    yield window.view
                finally:
                    window.drop()
                    del window
        except OSError as exc:
            self._pending = None
            raise translate_oserror(exc) from None

    def pump(self, sock: socket.socket, stall_timeout: float) -> SocketPump | None:
        """A pump that sends the range to ``sock`` (a duplicate of the connection's fd, now the
        pump's), or None when every pump thread is busy (the caller sends another way; ``sock``
        stays the caller's).  Run it at once; iterate the stream or pump it, not both."""
        if self._fd is None:
            raise ValueError("stream is closed")
        pump = self._backend.pumps.new(self._fd, self._start, self._end, sock, stall_timeout)
        self._pump = pump
        return pump

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        pending, self._pending = self._pending, None
        if pending is None and self._pump is not None:
            self._pump.abandon()
            pending = self._pump.thread  # the fd is the pump thread's until it is out
        if pending is not None and fd is not None:
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                pending.add_done_callback(lambda _: os.close(fd))
                raise
            except Exception:  # noqa: S110 - the read's own caller saw it; we only close
                pass
        if fd is not None:
            os.close(fd)  # closing a read-only fd never waits on the disk


class LocalBackend:
    """Blobs as files under ``root``.

    ``min_free_bytes`` is a floor: a write that would leave the file system with less free space
    fails with StoreFull before a byte is written, so blobs never take the room the metadata
    database needs to record (and delete) what is stored.  Checked per write batch (1 MiB), so
    concurrent uploads can overshoot it by at most a batch each."""

    def __init__(
        self, root: Path, *, min_free_bytes: int = 0, pump_threads: int = PUMP_THREADS
    ) -> None:
        self.root = root
        self._root_str = str(root)
        self.min_free_bytes = min_free_bytes
        self.tmp = root / TEMP_DIR
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._tmp_str = str(self.tmp)
        self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="blobstore")
        # Starts the write-back of large blobs' bytes (``sync_file_range``), which can block
        # while the device's queue is full: in a thread of its own, so no writer waits for it.
        self.writeback = ThreadPoolExecutor(1, thread_name_prefix="blobstore-writeback")
        self.syncer = GroupSync(root, self.run)
        self._tmp_prefix = uuid.uuid4().hex
        self._tmp_counter = itertools.count()
        self._known_dirs: set[Path] = set()
        # Whether reads may ask for page-cache-only (RWF_NOWAIT); cleared where unsupported.
        self._nowait = True
        self.pumps = PumpThreads(pump_threads)

    def check_floor(self, fd: int, adding: int) -> None:
        """Raise ENOSPC (StoreFull) when writing ``adding`` bytes would go below the floor.
        One ``fstatvfs``, about a microsecond, in the writing thread."""
        if self.min_free_bytes <= 0:
            return
        st = os.fstatvfs(fd)
        if st.f_bavail * st.f_frsize - adding < self.min_free_bytes:
            raise OSError(errno.ENOSPC, "below the blob store's free-space floor")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def local_path(self, ref: BlobRef) -> Path:
        digest = ref_digest(ref)
        return self.root / digest[:2] / digest[2:4] / ref

    def path_str(self, ref: BlobRef) -> str:
        """:meth:`local_path` as a string: pathlib's joins cost more than the file operations
        of a small blob."""
        digest = ref_digest(ref)
        return f"{self._root_str}/{digest[:2]}/{digest[2:4]}/{ref}"

    def ensure_fanout(self, directory: Path) -> None:
        """Create the fan-out directories (made durable by the publish's second sync)."""
        if directory in self._known_dirs:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self._known_dirs.add(directory)

    async def stage(self, size: int | None = None) -> LocalStaging:
        # Unique without a getrandom call per blob: this process's random prefix and a counter
        # (and O_EXCL when the file is made).
        return LocalStaging(
            self, f"{self._tmp_str}/{self._tmp_prefix}-{next(self._tmp_counter)}.tmp"
        )

    async def stat(self, ref: BlobRef) -> int | None:
        try:
            st = await self.run(os.stat, self.local_path(ref))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise translate_oserror(exc) from None
        return st.st_size

    async def stat_many(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """A commit confirms a whole group of uploads' blobs while it holds the database's writer:
        one thread hand-off for all of them, not one each."""
        return await self.run(self.stat_many_blocking, refs)

    def stat_many_blocking(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """:meth:`stat_many` on the caller's thread (never call it on the event loop)."""
        try:
            return _sizes([self.path_str(ref) for ref in refs])
        except OSError as exc:
            raise translate_oserror(exc) from None

    async def open(self, ref: BlobRef, start: int = 0, end: int | None = None) -> LocalBlobStream:
        loop = asyncio.get_running_loop()
        # One hand-off opens the file and learns its size (to clip the range).
        fut = loop.run_in_executor(self._pool, _open_sized, self.local_path(ref))
        try:
            fd, size = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_close_sized_if_opened)
            raise
        except FileNotFoundError:
            raise BlobNotFound(ref) from None
        except OSError as exc:
            raise translate_oserror(exc) from None
        stop = size if end is None else min(end, size)
        return LocalBlobStream(self, fd, min(start, stop), stop)

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return read_opened(self.open(ref, start, end))

    def open_fd(self, ref: BlobRef) -> int:
        """The blob's file opened for reading, on the calling thread (the caller closes it)."""
        # local_path's path as a string: pathlib's joins cost more than the open itself.
        path = self.path_str(ref)
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(ref) from None
        except OSError as exc:
            raise translate_oserror(exc) from None

    def read_now(self, ref: BlobRef, start: int, end: int) -> bytes:
        fd = self.open_fd(ref)
        try:
            return os.pread(fd, max(0, end - start), start)
        except OSError as exc:
            raise translate_oserror(exc) from None
        finally:
            os.close(fd)

    def read_cached(self, ref: BlobRef, start: int, end: int) -> bytearray | None:
        """The range read on the calling thread if the page cache holds all of it, else None
        (``RWF_NOWAIT``: the read never waits on the disk)."""
        fd = self.open_fd(ref)
        try:
            buf = bytearray(max(0, end - start))
            got = os.preadv(fd, [buf], start, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                # A file system without RWF_NOWAIT (tmpfs): every read goes to a thread.
                self._nowait = False
                return None
            raise translate_oserror(exc) from None
        finally:
            os.close(fd)
        if got != len(buf):
            return None  # partly cached, or the blob is shorter: the thread's read tells
        return buf

    async def read_whole(self, ref: BlobRef, start: int, end: int) -> bytes | bytearray:
        # A page-cache read of a few dozen KiB costs less than the hand-off (docs/measured.md);
        # so does one of a MiB, when the page cache holds it (a range of a file just read).
        if end - start <= INLINE_READ:
            return self.read_now(ref, start, end)
        if self._nowait:
            cached = self.read_cached(ref, start, end)
            if cached is not None:
                return cached
        return await self.run(self.read_now, ref, start, end)

    async def delete(self, ref: BlobRef) -> None:
        try:
            await self.run(self.local_path(ref).unlink, True)
        except OSError as exc:
            raise translate_oserror(exc) from None

    async def scan(self) -> AsyncIterator[BlobInfo]:
        for top in await self.run(_listdir, self.root):
            if top == TEMP_DIR or len(top) != 2:
                continue
            # One hand-off per top-level directory (256 fan-out dirs), not per leaf: at 100k
            # blobs a hop per leaf directory cost ~7 s of the scan.
            for info in await self.run(_scan_top, self.root / top):
                yield info

    def temp_files(self) -> list[tuple[Path, int, float]]:
        out = []
        for entry in os.scandir(self.tmp):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            out.append((Path(entry.path), st.st_size, st.st_mtime))
        return out

    async def close(self) -> None:
        await self.pumps.close()
        await asyncio.to_thread(self._pool.shutdown, True)
        await asyncio.to_thread(self.writeback.shutdown, True)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _scan_top(path: Path) -> list[BlobInfo]:
    return [info for sub in _listdir(path) for info in _scan_dir(path / sub)]


def _scan_dir(path: Path) -> list[BlobInfo]:
    out = []
    for entry in _iter_entries(path):
        if not is_ref(entry.name):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        out.append(BlobInfo(BlobRef(entry.name), st.st_size))
    return out


def _iter_entries(path: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError):
        return
