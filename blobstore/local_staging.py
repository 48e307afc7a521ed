"""A blob being written to the local backend: held in memory while small, else written to a temp
file beside the store; published by linking it into place, after its bytes and then its name
are durable (see :mod:`blobstore.local` for the layout and the order)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import os
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from blobstore.errors import StorageFailure, translate_oserror
from blobstore.refs import BlobRef
from blobstore.write_lane import WriteLane

if TYPE_CHECKING:
    from blobstore.local import LocalBackend

T = TypeVar("T")

# Bytes per read of a blob when streaming it; matches the write batch.
READ_SIZE = 1 << 20
# A staged blob is held in memory, not written, while it is at most this long: most uploads are
# small, and one that fits costs no thread hand-off of its own at all (see LocalStaging).
HOLD_BYTES = 1 << 20
# A large blob's bytes are handed to the disk in steps of this many bytes as they are written
# (``sync_file_range``: write-back started, not waited for), so the flush that makes the blob
# durable at publish finds at most a step or two still to write, rather than the whole blob:
# the disk works while the rest of the upload arrives (bench/README.md, single-stream upload).
WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-back of the range's dirty pages, no wait
# Every this many bytes, the step is an ``fdatasync`` instead, waited for in the write-back
# thread while the upload goes on: started write-back only hands the bytes to the device, whose
# own write cache (a virtual disk's host) then holds them until a flush; the publish's flush of a
# whole 1 GiB blob so found them all still to persist, 0.7-1.6 s after the last byte (this VM),
# and now finds at most a step's worth (bench/README.md, single-stream tus PATCH).
FLUSH_STEP = 64 << 20
# Writes of one blob in flight at once: the one the store's thread is doing and those queued
# behind it (blobstore/write_lane.py), each a batch of about 1 MiB held until written.
WRITES_IN_FLIGHT = 3


def _load_sync_file_range() -> Callable[[int, int, int], object] | None:
    """libc's ``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``, or None where
    there is none (it is Linux's): write-back then starts at the publish's flush, as it would
    anyway.  Called through ctypes, it runs without the GIL."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start(fd: int, offset: int, nbytes: int) -> object:
        # Advisory: a failure here (an I/O error) is reported by the flush that follows.
        return fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)

    return start


_start_writeback = _load_sync_file_range()


class LocalStaging:
    """A temp file being written; a few writes in flight (:class:`WriteLane`), so network and
    disk overlap.

    The first batch (and what follows while the whole stays within ``HOLD_BYTES``) is only held
    in memory.  Publishing writes what is held, checks the byte count and links the file into
    place as operations carried by the store's shared sync rounds (:meth:`GroupSync.carry`):
    many small uploads finishing together share one thread hand-off and one flush per step, and
    a duplicate of a stored blob is compared from memory without ever touching the disk."""

    def __init__(self, backend: LocalBackend, path: str) -> None:
        self._backend = backend
        self._path = path
        self._fd: int | None = None
        self._held: bytes | None = None
        # Bytes given to write and write_many (counted on the event loop), and bytes made by
        # write_from's functions (counted in the writing thread): both are read only once the
        # writes have settled.
        self._given = 0
        self._made = 0
        # Whether anything was handed to the lane (else everything given is held).
        self._handed = False
        # Bytes in the file, and how many of them have had their write-back started (both
        # touched only by the operation in flight).
        self._filled = 0
        self._kicked = 0
        self._flushed = 0
        self._kick_error: Exception | None = None
        self._kicking: concurrent.futures.Future[None] | None = None
        # The writes, in order; then the thread operation in flight (a publish step, a
        # comparison), if any.  Each touches the fd, so nothing else may until they are over;
        # a cancelled caller leaves them for :meth:`discard` to wait for (a thread cannot be
        # stopped).
        self._lane = WriteLane(backend.run, WRITES_IN_FLIGHT)
        self._pending: asyncio.Future[Any] | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(
                self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
        return self._fd

    def _write_all(self, data: bytes | memoryview) -> None:
        self._write_pieces((data,))

    def _write_pieces(self, pieces: Sequence[bytes | memoryview]) -> None:
        """In the store's thread: append what is held, then the pieces, in one ``writev`` (or
        more if the kernel takes less), and start the write-back of every whole step."""
        fd = self._open()
        if self._held is not None:
            pieces, self._held = (self._held, *pieces), None
        views = [memoryview(p) for p in pieces if len(p)]
        self._backend.check_floor(fd, sum(len(v) for v in views))
        while views:
            n = os.writev(fd, views)
            self._filled += n
            while views and n >= len(views[0]):
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]
        self._kick(fd, WRITEBACK_STEP)

    def _kick(self, fd: int, step: int) -> None:
        """Start the write-back of the bytes written since the last start, once there are at
        least ``step`` of them, in the backend's write-back thread: ``sync_file_range`` blocks
        while the device's queue is full (tens to hundreds of ms seen), and the writer, and
        the upload's socket behind it, must not wait for that.  One start in flight at a time:
        while it runs, the next range grows.  It gets a descriptor of its own, so the file may
        be closed meanwhile."""
        if _start_writeback is None or self._filled - self._kicked < step:
            return
        if self._kicking is not None:
            if not self._kicking.done():
                return
            self._keep_kick_error(self._kicking)
        offset, nbytes = self._kicked, self._filled - self._kicked
        if self._filled - self._flushed >= FLUSH_STEP:
            self._kicking = self._backend.writeback.submit(_flush, os.dup(fd))
            self._flushed = self._filled
        else:
            self._kicking = self._backend.writeback.submit(_writeback, os.dup(fd), offset, nbytes)
        self._kicked = self._filled

    def _keep_kick_error(self, done: concurrent.futures.Future[None]) -> None:
        """An early flush's failure fails the publish (the descriptor it used shares the file's
        error state with ours, so the publish's own flush might not see it again)."""
        exc = done.exception()
        if isinstance(exc, Exception) and self._kick_error is None:
            self._kick_error = exc

    async def _settle(self) -> None:
        """Wait for the operations in flight.  Cancelling the wait does not cancel them: they
        stay recorded until they are over."""
        try:
            await self._lane.settle()
        except OSError as exc:
            raise translate_oserror(exc) from None
        pending = self._pending
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        except OSError as exc:
            raise translate_oserror(exc) from None
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None

    async def _carry(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` in the next sync round's thread as the one operation in flight; its result
        once the round's flush has made what it did durable."""
        await self._settle()
        carried = self._backend.syncer.carry(partial(fn, *args))
        self._pending = carried.ran
        await self._settle()
        return await carried.durable

    async def _push(self, op: Callable[[], object]) -> None:
        """Queue a write behind the earlier ones (waiting while too many are in flight)."""
        try:
            await self._lane.push(op)
        except OSError as exc:
            raise translate_oserror(exc) from None

    @property
    def _written(self) -> int:
        return self._given + self._made

    async def write(self, data: bytes) -> None:
        self._given += len(data)
        if not self._handed and (self._held is None or len(self._held) + len(data) <= HOLD_BYTES):
            self._held = data if self._held is None else self._held + data
            return
        self._handed = True
        await self._push(partial(self._write_all, data))

    async def write_many(self, pieces: Sequence[bytes]) -> None:
        if not self._handed:
            held = len(self._held) if self._held is not None else 0
            if held == 0 or held + sum(len(p) for p in pieces) <= HOLD_BYTES:
                # Still small enough to be held (a small blob's bytes are one piece: no copy).
                await self.write(b"".join(pieces))
                return
        self._given += sum(len(p) for p in pieces)
        self._handed = True
        await self._push(partial(self._write_pieces, pieces))

    async def write_from(self, make: Callable[[], bytes | memoryview]) -> None:
        self._handed = True
        await self._push(partial(self._make_and_write, make))

    def _make_and_write(self, make: Callable[[], bytes | memoryview]) -> None:
        data = make()
        self._made += len(data)
        self._write_all(data)

    async def publish(self, ref: BlobRef) -> bool:
        try:
            # 1. The bytes are written and made durable (the round's flush) before the name
            #    exists, so a blob is never visible partly written, even after a power cut.
            if not await self._carry(self._prepare, ref):
                return False  # exists: these bytes are about to be dropped
            # 2. Linked in a later round, so the name (and any new fan-out directory) is durable
            #    before anyone is told.  If that flush fails the blob stays: its bytes are
            #    durable and whole (step 1), a racing upload may already have deduplicated
            #    against it, and unreferenced it is only an orphan for gc.
            if not await self._carry(self._link, ref):
                return False
        except OSError as exc:
            raise translate_oserror(exc) from None
        return True

    def _prepare(self, ref: BlobRef) -> bool:
        """Write what is held and check the byte count, unless ``ref`` exists already."""
        if os.path.exists(self._backend.path_str(ref)):
            return False
        self._write_all(b"")
        if self._kicking is not None:
            # A start still queued is finished first: the round's flush writes everything
            # anyway, and this way none is left running on the file once it is published.
            concurrent.futures.wait([self._kicking])
            self._keep_kick_error(self._kicking)
        if self._kick_error is not None:
            raise self._kick_error
        assert self._fd is not None
        if os.fstat(self._fd).st_size != self._written:
            raise OSError(errno.EIO, "short write")
        return True

    def _link(self, ref: BlobRef) -> bool:
        target = self._backend.path_str(ref)
        self._backend.ensure_fanout(Path(target).parent)
        try:
            os.link(self._path, target)
        except FileExistsError:
            return False
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        os.unlink(self._path)
        return True

    async def same_as(self, ref: BlobRef) -> bool:
        # The blob may be another upload's, published a moment ago and not yet durable: a
        # dedup hit counts only once a sync that started after the comparison has finished.
        try:
            await self._settle()
            if self._fd is None:
                # Held in memory (at most HOLD_BYTES to compare): carried by a round, whose
                # flush comes after the comparison.
                return await self._carry(self._same_as_sync, ref)
            # A large blob's comparison reads it whole: in a hand-off of its own, so the
            # rounds every other upload waits on are not held up by it.
            task = asyncio.ensure_future(self._backend.run(self._same_as_sync, ref))
            self._pending = task
            await self._settle()
            if not task.result():
                return False
            await self._backend.syncer.sync()
        except OSError as exc:
            raise translate_oserror(exc) from None
        return True

    def _same_as_sync(self, ref: BlobRef) -> bool:
        target = self._backend.path_str(ref)
        try:
            with open(target, "rb") as stored:
                if os.fstat(stored.fileno()).st_size != self._written:
                    return False
                if self._held is not None and self._fd is None:
                    return stored.read() == self._held
                if self._fd is None:
                    return self._written == 0
                with open(self._path, "rb") as staged:
                    while True:
                        a = stored.read(READ_SIZE)
                        b = staged.read(READ_SIZE)
                        if a != b:
                            return False
                        if not a:
                            return True
        except FileNotFoundError:
            return False

    async def staged(self) -> AsyncIterator[bytes]:
        await self._settle()
        if self._fd is None:
            if self._held:
                yield self._held
            return
        pos = 0
        while pos < self._written:
            try:
                data = await self._backend.run(
                    _pread_path, self._path, min(READ_SIZE, self._written - pos), pos
                )
            except OSError as exc:
                raise translate_oserror(exc) from None
            if not data:
                raise StorageFailure("staged bytes are shorter than written")
            pos += len(data)
            yield data

    async def found_durable(self, ref: BlobRef) -> None:
        try:
            await self._backend.syncer.sync()
        except OSError as exc:
            raise translate_oserror(exc) from None

    async def discard(self) -> None:
        self._lane.abandon()
        if self._pending is not None or not self._lane.idle:
            # An operation still running (its caller was cancelled) finishes first: it uses the
            # fd.  A failure of it is moot: these bytes are being dropped.
            with contextlib.suppress(Exception):
                await self._settle()
        self._held = None
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        await self._backend.run(self._discard_sync, fd)

    def _discard_sync(self, fd: int) -> None:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


def _writeback(fd: int, offset: int, nbytes: int) -> None:
    try:
        assert _start_writeback is not None
        _start_writeback(fd, offset, nbytes)
    finally:
        os.close(fd)


def _flush(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _pread_path(path: str, size: int, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)
