"""A bounded in-process cache of small blobs' stored bytes, for a backend behind a network (S3);
downloads read the inline rows of such a deployment through it too (:mod:`blobstore.inline_cached`).

Blobs are content-addressed and never replaced, so a cached blob is never stale: the bytes a
ref named when they were cached are the bytes it names for as long as it is stored.  (A sealed
blob that gc deleted and an upload stored again has the same plaintext under a new blob key; the
cache holds the old ciphertext whole, trailer included, which still decrypts to that plaintext,
and :mod:`blobstore.sealed_remote` reads a cached blob's trailer from the cached bytes.)

Whether a blob may be served at all is metadata's decision: a download reads the file's manifest
first and asks for its refs only then, so a blob whose last manifest is gone (and which gc may
have deleted) is never asked for.  The cache serves reads only, never ``stat``: publishing is a
conditional create in the engine, and a commit confirms every ref it uses by a ``stat`` in the
engine under the lock gc takes (:mod:`blobstore.confirmations`), so an upload never commits a
manifest to a blob that is only in some process's cache.  (A dedup comparison of a sealed blob
reads through the cache: it compares with the bytes the ref names, which is the question.)  A
blob gc deletes in this process is dropped from the cache too (:meth:`BlobCache.discard`).

Bounded by bytes (the sum of the cached blobs' sizes), holding only blobs up to ``max_blob``
bytes, least recently used first out.  It lives on the event loop: no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from blobstore.refs import BlobRef

# Blobs up to this many stored bytes are cached: thumbnails, avatars, small attachments.  A
# larger one would evict dozens of small ones, and its reads are long enough that one GET more
# is a small part of their cost.
DEFAULT_MAX_BLOB = 256 << 10


@dataclass
class CacheStats:
    """What the cache has done since it was made (for metrics)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


class BlobCache:
    """Stored bytes of small blobs by ref, at most ``limit`` bytes in all."""

    def __init__(self, limit: int, max_blob: int = DEFAULT_MAX_BLOB) -> None:
        if limit < 0 or max_blob < 0:
            raise ValueError("cache bounds must not be negative")
        self.limit = limit
        self.max_blob = min(max_blob, limit)
        self.stats = CacheStats()
        self._items: OrderedDict[BlobRef, bytes] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, ref: BlobRef) -> bool:
        return ref in self._items

    def get(self, ref: BlobRef) -> bytes | None:
        """The blob's stored bytes, or None (counted as a hit or a miss)."""
        data = self._items.get(ref)
        if data is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(ref)
        self.stats.hits += 1
        return data

    def fits(self, size: int) -> bool:
        """Whether a blob of ``size`` stored bytes would be cached."""
        return self.limit > 0 and size <= self.max_blob

    def put(self, ref: BlobRef, data: bytes) -> None:
        """Remember the whole stored bytes of ``ref`` (ignored when too large or disabled)."""
        if not self.fits(len(data)):
            return
        old = self._items.pop(ref, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[ref] = data
        self._bytes += len(data)
        while self._bytes > self.limit:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)
            self.stats.evictions += 1

    def discard(self, ref: BlobRef) -> None:
        """Forget ``ref`` (deleted, or found not to match what the engine holds)."""
        old = self._items.pop(ref, None)
        if old is not None:
            self._bytes -= len(old)
