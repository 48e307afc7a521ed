"""Inline rows read through the blob cache (blobstore.inline_cached), on both engines, plain and
sealed: an entry's bytes come from the cache when it holds the ref, else from the row (then
cached), a damaged row is served as it is but never cached, and an entry with no row is left to
the backend."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blobstore import inline, inline_cached
from blobstore.blobcache import BlobCache
from blobstore.engine.base import Engine
from blobstore.keyring import KeyRing
from blobstore.manifest_model import Entry
from blobstore.memory import MemoryBackend
from blobstore.sealed import seal_backend
from blobstore.store import ContentStore, InlineStore, PutResult
from tests.engines import migrated

SCOPE = "d" * 32


@pytest.fixture(params=["plain", "sealed"])
async def setup(
    request: pytest.FixtureRequest, engine: str | None, tmp_path: Path
) -> AsyncIterator[tuple[Engine, ContentStore, KeyRing]]:
    async with migrated(engine, tmp_path / "meta") as db:
        keys = KeyRing(db, os.urandom(32))
        await keys.check(record=True)
        backend = seal_backend(MemoryBackend(), keys, sealing=request.param == "sealed")
        yield db, ContentStore(backend, inline=InlineStore(db, 4096, keys)), keys


async def stored(db: Engine, store: ContentStore, data: bytes) -> PutResult:
    put = await store.put_bytes(data, scope=SCOPE, inline=True)
    assert put.inline is not None
    async with db.write() as tx:
        await inline.add(tx, [put.inline], now_ms=int(time.time() * 1000))
    return put


async def test_rows_are_fetched_once_then_served_from_the_cache(
    setup: tuple[Engine, ContentStore, KeyRing],
) -> None:
    db, store, keys = setup
    a, b = await stored(db, store, b"first row"), await stored(db, store, b"second row")
    cache = BlobCache(1 << 20)
    chunks = [Entry(1, a.ref, a.size)]
    thumbs = [Entry(0, b.ref, b.size), Entry(1, a.ref, a.size)]
    await inline_cached.attach(db, cache, keys, [chunks, thumbs])
    assert a.inline is not None and b.inline is not None
    assert [e.inline for e in chunks + thumbs] == [a.inline.data, b.inline.data, a.inline.data]
    assert (cache.stats.hits, cache.stats.misses, len(cache)) == (0, 2, 2)
    # The rows gone from the database: the cache alone answers.
    async with db.write() as tx:
        await inline.delete(tx, [a.ref, b.ref])
    again = [Entry(1, a.ref, a.size), Entry(2, b.ref, b.size)]
    await inline_cached.attach(db, cache, keys, [again])
    assert [e.inline for e in again] == [a.inline.data, b.inline.data]
    assert cache.stats.hits == 2


async def test_a_damaged_row_is_served_as_it_is_but_never_cached(
    setup: tuple[Engine, ContentStore, KeyRing],
) -> None:
    db, store, keys = setup
    put = await stored(db, store, b"soon damaged")
    assert put.inline is not None
    flipped = bytes([put.inline.data[0] ^ 0x01]) + put.inline.data[1:]
    async with db.write() as tx:
        await tx.execute("UPDATE inline_blobs SET data = ? WHERE ref = ?", flipped, put.ref)
    cache = BlobCache(1 << 20)
    entries = [Entry(1, put.ref, put.size)]
    await inline_cached.attach(db, cache, keys, [entries])
    assert entries[0].inline == flipped
    assert put.ref not in cache


async def test_an_entry_without_a_row_is_left_to_the_backend(
    setup: tuple[Engine, ContentStore, KeyRing],
) -> None:
    db, store, keys = setup
    big = await store.put_bytes(b"x" * 8192, scope=SCOPE, inline=True)  # over the limit
    assert big.inline is None
    cache = BlobCache(1 << 20)
    entries = [Entry(1, big.ref, big.size)]
    await inline_cached.attach(db, cache, keys, [entries])
    assert entries[0].inline is None and len(cache) == 0
