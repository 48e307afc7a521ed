"""The cache of small blobs: bounded by bytes, least recently used out first, only blobs up to
its size limit, nothing at all when disabled, and counted."""

from __future__ import annotations

import pytest

from blobstore.blobcache import DEFAULT_MAX_BLOB, BlobCache
from blobstore.refs import BlobRef

KiB = 1024


def ref(n: int) -> BlobRef:
    return BlobRef(f"{n:032x}")


def test_the_bound_is_in_bytes_and_the_least_recently_used_go_first() -> None:
    cache = BlobCache(10 * KiB, max_blob=4 * KiB)
    for n in range(3):
        cache.put(ref(n), bytes([n]) * (3 * KiB))
    assert cache.size == 9 * KiB and len(cache) == 3
    assert cache.get(ref(0)) == b"\x00" * (3 * KiB)  # now the most recently used
    cache.put(ref(3), b"\x03" * (2 * KiB))  # 11 KiB: one must go, the least recently used
    assert ref(1) not in cache
    assert [n for n in range(4) if ref(n) in cache] == [0, 2, 3]
    assert cache.size == 8 * KiB <= cache.limit
    assert cache.stats.evictions == 1
    cache.put(ref(4), b"\x04" * (4 * KiB))  # 12 KiB: evicts 2 (3 KiB), leaving 9
    assert [n for n in range(5) if ref(n) in cache] == [0, 3, 4]
    assert cache.size == 9 * KiB


def test_blobs_over_the_size_limit_are_not_cached() -> None:
    cache = BlobCache(1 << 20, max_blob=4 * KiB)
    cache.put(ref(1), b"x" * (4 * KiB + 1))
    assert ref(1) not in cache and cache.size == 0
    cache.put(ref(2), b"x" * (4 * KiB))
    assert cache.get(ref(2)) == b"x" * (4 * KiB)


def test_a_blob_larger_than_the_whole_cache_is_never_held() -> None:
    cache = BlobCache(2 * KiB)  # max_blob is capped by the limit
    assert cache.max_blob == 2 * KiB < DEFAULT_MAX_BLOB
    cache.put(ref(1), b"y" * (3 * KiB))
    assert len(cache) == 0 and cache.size == 0


def test_disabled_holds_nothing() -> None:
    cache = BlobCache(0)
    assert not cache.enabled
    cache.put(ref(1), b"z")
    assert cache.get(ref(1)) is None
    assert cache.size == 0 and len(cache) == 0


def test_hits_and_misses_are_counted_and_a_discarded_blob_is_a_miss() -> None:
    cache = BlobCache(64 * KiB)
    assert cache.get(ref(1)) is None
    cache.put(ref(1), b"abc")
    assert cache.get(ref(1)) == b"abc"
    cache.discard(ref(1))
    cache.discard(ref(1))  # idempotent
    assert cache.get(ref(1)) is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)
    assert cache.size == 0


def test_putting_a_blob_again_does_not_count_it_twice() -> None:
    cache = BlobCache(64 * KiB)
    cache.put(ref(1), b"a" * 100)
    cache.put(ref(1), b"a" * 100)
    assert cache.size == 100 and len(cache) == 1


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BlobCache(-1)
