"""The storage port: what a blob backend must do, in role-sized protocols, each edge case stated.

Backends only move bytes.  Hashing, size caps and dedup decisions live in one verifying choke
point, :class:`blobstore.store.ContentStore`, so a backend trusts the ref it is handed.

Roles: a download needs a :class:`BlobReader`; an upload a :class:`BlobWriter`; fsck and gc a
:class:`BlobLister` and :class:`BlobRemover`.  :class:`BlobBackend` is all of them.  Special powers
of one backend are optional capabilities that callers test for with ``isinstance``:
:class:`ReadWhole` (a reader that reads a body of up to a MiB whole in at most one hand-off,
none when it is small),
:class:`FileRange` (an opened blob is a range of a local file: the decrypting wrapper reads it
in its own pieces), :class:`Views` (an opened blob's pieces as views of buffers it reuses, no
copy), :class:`Mapped` (an opened blob's bytes mapped from its file, for a socket write),
:class:`Pumps` (an opened blob sends its bytes to a socket from a thread of the store),
:class:`WriteFrom` (a staging that runs a wrapper's transform in its own writer thread),
:class:`WriteMany` (a staging that appends several pieces without joining them),
:class:`LocalFiles` and :class:`TempFiles` (the local backend's files, for
fsck and repair),
:class:`Leftovers` (what interrupted writes left in a store behind a network, for fsck and
repair), :class:`Probe` (a backend behind a network can be asked whether it answers: the health
route), :class:`StatMany` (many blobs stat'ed at once, for a commit that confirms a batch of them).
On a request's path, test with :func:`supports` (remembered per class) rather than ``isinstance``,
which inspects every member of a runtime protocol on every call.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from blobstore.refs import BlobRef

_SUPPORTS: dict[tuple[type, type], bool] = {}


def supports(obj: object, ability: type) -> bool:
    """``isinstance(obj, ability)`` for a runtime-checkable protocol whose members are methods
    or properties of the class, remembered per class: the protocol check costs about as much as
    a small upload's own work in the store (py-spy, bench/README.md).  Callers ``cast``."""
    key = (type(obj), ability)
    found = _SUPPORTS.get(key)
    if found is None:
        found = _SUPPORTS[key] = isinstance(obj, ability)
    return found


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob as a scan sees it.  (How old a blob is, and whether an upload still
    needs it, is kept in metadata: :mod:`blobstore.confirmations`.)"""

    ref: BlobRef
    size: int


class Staging(Protocol):
    """Bytes being written for a blob whose name is not known until the stream ends."""

    async def write(self, data: bytes) -> None:
        """Append ``data``.  May return before the bytes reach the medium; a failure of an
        earlier write surfaces at the latest from :meth:`publish`."""

    async def publish(self, ref: BlobRef) -> bool:
        """Make the staged bytes durable and visible under ``ref``, whole or not at all.

        Returns True when the blob was created.  Returns False, and keeps the staged bytes,
        when a blob named ``ref`` already exists: publish never replaces an existing blob.
        Raises StoreFull or StorageFailure; then whatever is visible under ``ref`` is whole (a
        blob whose bytes were made durable may stay, unreferenced, for gc)."""

    async def same_as(self, ref: BlobRef) -> bool:
        """True when the blob stored under ``ref`` has exactly the staged bytes and is durable
        (it may be another upload's, published a moment ago).  False when it differs or is
        gone."""

    async def discard(self) -> None:
        """Drop the staged bytes.  Idempotent, and safe after publish (then it does nothing)."""


class BlobStream(Protocol):
    """An opened byte range of one blob, read as an async stream of pieces.

    Memory stays bounded whatever the blob's size: each piece is at most a backend-chosen size
    (about a MiB), and at most one piece is read ahead of the piece being yielded."""

    @property
    def length(self) -> int:
        """How many bytes the stream yields in total (the range, clipped to the blob)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The bytes, in order, in non-empty pieces.  Iterate once.  Raises BlobNotFound if
        the blob vanished after :meth:`BlobReader.open` (gc), StorageFailure if the backend
        fails mid-way; a caller that has sent some bytes already must then cut its output,
        never fill the gap."""

    async def aclose(self) -> None:
        """Release what the stream holds (a descriptor, a connection).  Idempotent; call it
        whether or not the stream was read to the end."""


@runtime_checkable
class FileRange(Protocol):
    """Optional ability of a :class:`BlobStream`: its bytes are a range of a local file, so a
    wrapper that transforms them (decryption) may read that range itself in the pieces it
    needs, into buffers it keeps, instead of iterating the stream's own pieces."""

    def file_range(self) -> tuple[int, int, int]:
        """``(fd, offset, count)``: the stream's bytes are ``count`` bytes of the open file
        ``fd`` from ``offset``.  The fd stays owned by the stream (closed by ``aclose``); the
        caller must not close it, and must not also iterate the stream."""


@runtime_checkable
class Views(Protocol):
    """Optional ability of a :class:`BlobStream`: its pieces as memoryviews of buffers the stream
    reuses, so a caller that only writes them out (a download) saves a copy per piece.

    A buffer is reused only once no view of it is alive (the stream checks; it makes another
    buffer otherwise), so a caller may keep a view, or hand it to a transport that sends it
    later, and never sees it change: keeping views only costs memory."""

    def views(self) -> AsyncIterator[memoryview]:
        """The bytes, in order, as iterating the stream would yield them (iterate one or the
        other, once)."""


@runtime_checkable
class Mapped(Protocol):
    """Optional ability of a :class:`BlobStream`: its bytes as views of the file mapped into
    memory (the local backend), for a caller that hands them to a transport sending from them as
    they are, with no copy and no read into a buffer of its own (a download on uvloop).

    The views must be read by the kernel only (a socket write): a file truncated under a mapping
    makes a read of the lost pages in user space a SIGBUS, where the kernel's read fails the
    write instead.  The stream never maps past the file's end when it maps; if the file is found
    shorter than the range, the views end short (the caller counts and cuts its connection)."""

    def mapped(self) -> AsyncIterator[memoryview]:
        """The bytes, in order, as iterating the stream would yield them (iterate one or the
        other, once)."""


class Pump(Protocol):
    """A blob's range being sent to a socket by a thread of the store (:class:`Pumps`)."""

    sent: int  # bytes the socket took so far

    async def run(self) -> int:
        """Send the range: the bytes sent, fewer than the range when the blob is found shorter
        (the caller cuts its connection).  Raises ``TimeoutError`` once the client took no
        byte for the stall timeout, a ``ConnectionError`` when it went away or :meth:`stop`
        was called, the store's error when a read failed.  Cancelled, it stops the thread."""

    def stop(self) -> None:
        """Make the sending thread give up now (harmless once it is done)."""


@runtime_checkable
class Pumps(Protocol):
    """Optional ability of a :class:`BlobStream`: send its bytes to a connected socket itself,
    from a thread that sends them straight from the file mapped a window at a time (the local
    backend): a large download's fastest way on this VM, with no work on the event loop
    (docs/measured.md).

    The caller hands over a duplicate of its connection's fd (a non-blocking TCP socket whose
    transport holds no unsent bytes and gets none until the pump is done); the pump closes it.
    The caller must not write to the connection meanwhile."""

    def pump(self, sock: socket.socket, stall_timeout: float) -> Pump | None:
        """The pump for the stream's bytes, to run at once; None when no pump thread is free
        (``sock`` then stays the caller's, who sends another way).  Iterate the stream or
        pump it, not both."""


@runtime_checkable
class ReadWhole(Protocol):
    """Optional ability of a :class:`BlobReader`: read a range whole, with no thread hand-off
    when it is small and at most one when it is larger (open, read, close and, for a sealed
    blob, its checks and decryption in one go).

    A download answers bodies up to a MiB from it: the stream's machinery (an open, a read
    ahead, pieces regrouped) costs several hand-offs per request.  A reader behind a network
    does not offer it: callers then use :meth:`BlobReader.open`."""

    async def read_whole(self, ref: BlobRef, start: int, end: int) -> bytes | bytearray:
        """The bytes ``[start, end)`` of the blob (fewer when the blob is shorter).  Raises
        BlobNotFound when the blob is not stored, BlobCorrupt when a sealed blob fails its
        checks, StorageFailure (or StoreFull's kin) when the read fails."""


class BlobReader(Protocol):
    """The read role: all a download, fsck's re-hash or ``blobstore cat`` needs."""

    async def stat(self, ref: BlobRef) -> int | None:
        """The blob's size, or None when it is not stored."""

    async def open(self, ref: BlobRef, start: int = 0, end: int | None = None) -> BlobStream:
        """Open the bytes ``[start, end)`` of the blob (``end`` None or past the end: to the
        end; ``start`` at or past the end: an empty stream).  Raises BlobNotFound at once, before
        any byte, when the blob is not stored, so a caller can still answer an error instead of
        a cut body.  The caller must ``aclose`` the stream."""

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Shorthand for :meth:`open` then iterate then close: yield the bytes ``[start, end)``
        in pieces.  Raises BlobNotFound (when first iterated) when the blob is not stored."""


class BlobWriter(Protocol):
    """The write role: what :class:`~blobstore.store.ContentStore` needs to put a blob."""

    async def stage(self, size: int | None = None) -> Staging:
        """Start writing a new blob.  Nothing is visible to readers before ``publish``.

        ``size``: the exact number of bytes that will be written, when it is known before the
        first (a raw body's Content-Length): a backend may then send them as one request (S3).
        Writing more, or publishing fewer, is an error then."""


class BlobLister(Protocol):
    """The listing role, for fsck, gc and stats."""

    def scan(self) -> AsyncIterator[BlobInfo]:
        """Yield every stored blob once, in no particular order.  Staged (temporary) bytes are
        not blobs.  A blob published or deleted during the scan may or may not be seen."""


class BlobRemover(Protocol):
    """The removal role, for gc and repair."""

    async def delete(self, ref: BlobRef) -> None:
        """Remove the blob.  Removing a missing blob is not an error.  Only gc deletes, under
        the lock commits take (:mod:`blobstore.confirmations`)."""


class BlobBackend(BlobReader, BlobWriter, BlobLister, BlobRemover, Protocol):
    """A place that keeps blobs: every role, and closing.  (The guard between gc and dedup is
    kept in metadata, :mod:`blobstore.confirmations`, not in the backend.)"""

    async def close(self) -> None:
        """Release resources.  Idempotent."""


@runtime_checkable
class Probe(Protocol):
    """Optional ability: a backend behind a network can be asked whether it answers."""

    async def check(self) -> None:
        """Return when the backend answers a cheap request; raise StoreUnavailable when it
        cannot be reached, StorageFailure when it refuses (credentials, bucket)."""


@runtime_checkable
class StatMany(Protocol):
    """Optional ability: stat several blobs for the price of one call (the local backend does
    them in one thread hand-off rather than one each)."""

    async def stat_many(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """Each ref's size, or None where it is not stored, in the order given."""


@runtime_checkable
class StatManyBlocking(Protocol):
    """Optional ability: :meth:`StatMany.stat_many` as a plain blocking call, for a caller
    already on a worker thread (a commit checks its blobs inside a SQLite write unit, on the
    database's thread, under the writer lock: :mod:`blobstore.confirmations`)."""

    def stat_many_blocking(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """Each ref's size, or None where it is not stored, in the order given."""


@runtime_checkable
class LocalFiles(Protocol):
    """Optional ability: each blob is a local file, for tools that want a path (the thumbnail
    worker's input, fsck's re-hash in threads, repair's quarantine)."""

    def local_path(self, ref: BlobRef) -> Path:
        """Where the blob lives on disk (it may have been removed since)."""


@runtime_checkable
class TempFiles(Protocol):
    """Optional ability: the backend leaves temporary files that a crash may orphan."""

    def temp_files(self) -> list[tuple[Path, int, float]]:
        """(path, size, mtime) of every temporary file left in the store."""


@runtime_checkable
class Readback(Protocol):
    """Optional ability of a :class:`Staging`: its staged bytes can be read back, for a wrapper
    whose stored bytes differ from the content (the sealing layer compares a dedup candidate by
    its plaintext, :mod:`blobstore.sealed`)."""

    def staged(self) -> AsyncIterator[bytes]:
        """The bytes written so far, in order.  Call it after the last write, before discard."""

    async def found_durable(self, ref: BlobRef) -> None:
        """Return once the blob stored under ``ref`` is durable (it may be another upload's,
        published a moment ago): a dedup hit counts only then.  Raises StorageFailure."""


@runtime_checkable
class WriteFrom(Protocol):
    """Optional ability of a :class:`Staging` written from its own thread (the local backend):
    append bytes that a function makes in that thread, as one operation.  A wrapper that
    transforms what it writes (sealing) then needs no thread hand-off of its own, its work
    overlaps the network, and its output buffer is written before the next function is called,
    so the wrapper reuses one buffer with no copy."""

    async def write_from(self, make: Callable[[], bytes | memoryview]) -> None:
        """Like :meth:`Staging.write` of ``make()``'s result, with ``make`` called in the
        staging's thread after every earlier write, and its result written before any later
        operation starts.  It may return before ``make`` has run (the staging queues a few
        writes): ``make`` keeps what it uses until then.  A failure of ``make`` surfaces like a
        failed write, from a later write or from publish, and nothing after it is written."""


@runtime_checkable
class WriteMany(Protocol):
    """Optional ability of a :class:`Staging`: append several pieces as one write, without
    joining them first.  A large upload arrives in the HTTP parser's pieces (about 250 KB
    each); joining a batch of them into one buffer was a copy of every byte on the event loop,
    where a staging written from its own thread hands the pieces to the kernel as they are
    (``writev``) or seals them there."""

    async def write_many(self, pieces: Sequence[bytes]) -> None:
        """Like :meth:`Staging.write` of the pieces joined.  The staging keeps the sequence and
        its pieces until the write is done: the caller hands them over and does not change
        them."""


@runtime_checkable
class SealingWriter(Protocol):
    """Optional ability of a backend: it encrypts what it stores under a dedup scope's key
    (:mod:`blobstore.sealed`).  :class:`~blobstore.store.ContentStore` asks it which puts to seal
    and names their blobs as sealed refs."""

    @property
    def sealing(self) -> bool:
        """True when new blobs are sealed (encryption on)."""

    async def stage_sealed(self, scope: str, size: int | None = None) -> Staging:
        """Start writing a new blob sealed under ``scope``'s key; publish it under a sealed
        ref of that scope.  ``size``: the plaintext's exact size when known (see ``stage``)."""


@dataclass(frozen=True)
class Leftover:
    """Bytes an interrupted write left behind in a store behind a network (an S3 staging object,
    an incomplete multipart upload).  ``name`` is what :meth:`Leftovers.remove_leftover` takes;
    ``written`` is when bytes were last added to it (epoch seconds)."""

    name: str
    what: str
    size: int
    written: float


@runtime_checkable
class Leftovers(Protocol):
    """Optional ability: list and remove what interrupted writes left (a crash, a kill -9, an
    engine lost mid-upload).  A running upload's staging shows too: callers leave young ones."""

    async def leftovers(self) -> list[Leftover]:
        """Every leftover of this store."""

    async def remove_leftover(self, name: str) -> None:
        """Remove one leftover; removing one already gone is not an error."""
