"""The S3 client's errors, mapped once to the store's typed errors (no secret, no URL)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TypeVar

from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError

from blobstore.errors import BlobNotFound, StorageFailure, StoreFull, StoreUnavailable

T = TypeVar("T")

# What a client is told to wait before retrying when the engine is unreachable.
RETRY_AFTER_S = 5

_STATUS_RE = re.compile(r"status code: (\d{3})")
# Servers say "out of space" in their own words; these are the ones S3 engines use.
_FULL_MARKERS = ("QuotaExceeded", "InsufficientStorage", "no free volume", "NoFreeVolume")
# An engine that gave up waiting for a body's bytes (AWS answers 400 RequestTimeout after about
# 20 s of silence): the client paused longer than the engine waits, and it may try again.
_GAVE_UP_MARKERS = ("RequestTimeout",)


def translate(exc: BaseException) -> Exception:
    """One switch from the client's errors to the store's typed errors (no secret, no URL)."""
    if isinstance(exc, (NotFoundError, FileNotFoundError)):
        return BlobNotFound("blob not stored")
    text = str(exc)
    m = _STATUS_RE.search(text)
    return by_status(int(m.group(1)) if m else None, text)


def by_status(status: int | None, text: str = "") -> Exception:
    """The typed error for an engine's answer ``status`` (None: no answer) with body ``text``."""
    if any(marker in text for marker in _FULL_MARKERS):
        return StoreFull("no space left in the blob store")
    if status == 507:
        return StoreFull("no space left in the blob store")
    gave_up = any(marker in text for marker in _GAVE_UP_MARKERS)
    if status is None or status >= 500 or status == 429 or gave_up:
        # Connection refused or reset, a timeout, or the engine's own overload: come back later.
        return StoreUnavailable("the blob store cannot be reached", retry_after=RETRY_AFTER_S)
    return StorageFailure(f"the blob store refused a request (HTTP {status})")


async def call(op: Awaitable[T]) -> T:
    try:
        return await op
    except (BaseError, OSError, TimeoutError) as exc:
        if isinstance(exc, AlreadyExistsError):
            raise
        raise translate(exc) from None
