"""Typed storage errors.  They carry no HTTP status: the service maps them once, in one place."""

from __future__ import annotations

import errno


class BlobStoreError(Exception):
    """Base class of every error this package raises on purpose."""


class BlobNotFound(BlobStoreError):
    """The ref names no stored blob."""


class StoreFull(BlobStoreError):
    """The backend has no space left (ENOSPC, EDQUOT).  Permanent until space is freed."""


class StorageFailure(BlobStoreError):
    """The backend failed in a way the caller cannot fix (I/O error, permission, lost device)."""


class StoreUnavailable(StorageFailure):
    """The backend cannot be reached or says it is overloaded (connection refused, timeout,
    5xx).  Nothing was stored; retrying after ``retry_after`` seconds may succeed."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(BlobStoreError):
    """The stream passed the size limit the caller set; nothing was stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"stream exceeds {limit} bytes")
        self.limit = limit


class CollisionLimit(BlobStoreError):
    """Too many different contents share one fast hash: someone is planting collisions."""


class BlobCorrupt(BlobStoreError):
    """A sealed blob's bytes failed authentication (flipped, cut, moved or swapped): nothing of
    it may be served.  The message says what failed, never a key."""


class KeyUnavailable(BlobStoreError):
    """The key a sealed blob needs cannot be had: the master key is not the one the store was
    sealed with, or a scope's key is missing or damaged.  The message is one line, no secret."""


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def translate_oserror(exc: OSError) -> Exception:
    """One switch from OS errors to the store's typed errors (no path in the message)."""
    if exc.errno in _FULL_ERRNOS:
        return StoreFull("no space left in the blob store")
    return StorageFailure(f"blob store I/O failed: {errno.errorcode.get(exc.errno or 0, 'EIO')}")


class NameTaken(BlobStoreError):
    """Another content took a small blob's name (its inline row) between the put and the
    commit: a planted collision racing this upload.  Nothing was committed; sent again, the
    upload takes the next collision variant."""


class NameInBackend(BlobStoreError):
    """A small blob's row was to take a name the put did not look up in the backend
    (:meth:`ContentStore.put <blobstore.store.ContentStore.put>` with ``defer_name_check``),
    and the commit found a backend blob under it.  Nothing was committed; the caller puts the
    bytes again with the backend asked (:meth:`ContentStore.recheck`)."""
