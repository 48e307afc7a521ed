"""The storage port: what a blob backend must do, with each edge case stated.

Backends only move bytes.  Hashing, size caps and dedup decisions live in one verifying choke
point, :class:`blobstore.store.ContentStore`, so a backend trusts the ref it is handed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from blobstore.refs import BlobRef


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


class BlobReader(Protocol):
    """The read side, all a download needs."""

    async def stat(self, ref: BlobRef) -> int | None:
        """The blob's size, or None when it is not stored."""

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes ``[start, end)`` of the blob (``end`` None: to the end), in pieces.
        Raises BlobNotFound when the blob is not stored."""


class BlobBackend(BlobReader, Protocol):
    """A place that keeps blobs."""

    async def stage(self) -> Staging:
        """Start writing a new blob."""

    async def delete(self, ref: BlobRef) -> None:
        """Remove the blob.  Removing a missing blob is not an error.  Only gc deletes, under
        the lock commits take (:mod:`blobstore.confirmations`)."""

    def scan(self) -> AsyncIterator[BlobInfo]:
        """Yield every stored blob once, in no particular order.  Temporary files are not blobs."""

    async def close(self) -> None:
        """Release resources.  Idempotent."""


@runtime_checkable
class LocalFiles(Protocol):
    """Optional ability: the blob is a local file, so it can be sent with sendfile."""

    def local_path(self, ref: BlobRef) -> Path:
        """Where the blob lives on disk (it may have been removed since)."""


@runtime_checkable
class TempFiles(Protocol):
    """Optional ability: the backend leaves temporary files that a crash may orphan."""

    def temp_files(self) -> list[tuple[Path, int, float]]:
        """(path, size, mtime) of every temporary file left in the store."""
