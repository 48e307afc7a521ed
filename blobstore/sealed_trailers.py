"""Sealed blobs' trailers already checked against their ref, with the blob's cipher: a bounded
LRU that the whole reads of local blobs (:mod:`blobstore.sealed_whole`) and the ranged reads of
remote ones (:mod:`blobstore.sealed_remote`) keep, so that a trailer seen again needs neither the
binding's HMAC nor the blob key's derivation.

A remembered trailer is only a shortcut: whoever uses one still authenticates every segment it
opens with it, and checks that the stored blob is the size the trailer was verified with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from blobstore.refs import BlobRef, ref_digest
from blobstore.sealing import Opener, ScopeKey, read_trailer

# Verified trailers remembered (a few hundred bytes each, with the blob's cipher).
TRAILERS = 4096


@dataclass(frozen=True)
class Verified:
    """A trailer checked against its ref: the key it was checked under, its bytes, the stored
    size it was checked with, the plaintext size it gives, and the blob's cipher."""

    key: ScopeKey
    stored: int
    raw: bytes
    plain: int
    opener: Opener


class VerifiedTrailers:
    """Trailers checked against their ref, with the blob's cipher: a bounded LRU shared by the
    threads that read (hence the lock)."""

    def __init__(self, limit: int = TRAILERS) -> None:
        self._limit = limit
        self._items: OrderedDict[BlobRef, Verified] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, ref: BlobRef) -> Verified | None:
        """What was verified last for ``ref`` (now the most recently used), if anything."""
        with self._lock:
            hit = self._items.get(ref)
            if hit is not None:
                self._items.move_to_end(ref)
        return hit

    def forget(self, ref: BlobRef) -> None:
        with self._lock:
            self._items.pop(ref, None)

    def verify(self, ref: BlobRef, key: ScopeKey, scope: str, raw: bytes, stored: int) -> Verified:
        """The trailer ``raw`` of the blob ``ref`` whose file holds ``stored`` bytes, checked
        (unless this very trailer was, under this key, with this size) and remembered;
        BlobCorrupt when it does not belong to ``ref``."""
        hit = self.get(ref)
        if hit is not None and hit.key is key and hit.stored == stored and hit.raw == raw:
            return hit
        trailer = read_trailer(key, raw, stored=stored, digest=ref_digest(ref), scope=scope)
        verified = Verified(key, stored, bytes(raw), trailer.plain, Opener(key, trailer))
        with self._lock:
            self._items[ref] = verified
            self._items.move_to_end(ref)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return verified
