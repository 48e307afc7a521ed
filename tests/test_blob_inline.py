"""Small blobs kept in the metadata database (blobstore.inline), on both engines, plain and
sealed: a put names the row and writes nothing to the backend, the commit that references it
inserts it, reads find it, dedup compares bytes (planted collisions stay apart, across the
inline/backend boundary too), a race of two contents for one name fails the later commit,
gc, fsck and stat treat the rows as blobs, and fsck --repair quarantines a damaged row."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from blobstore import confirmations, fsck, gc, inline, manifests, stats
from blobstore.engine.base import Engine
from blobstore.errors import NameInBackend, NameTaken
from blobstore.findings import Kind, rehash_all
from blobstore.keyring import KeyRing
from blobstore.local import LocalBackend
from blobstore.refs import is_sealed, ref_variant
from blobstore.repair import Repairer, RepairReport, repairable
from blobstore.sealed import SealedBackend, seal_backend
from blobstore.sealing import TAG, TRAILER
from blobstore.store import ContentStore, InlineStore, PutResult, inline_refs, unchecked_refs
from tests.engines import migrated

SCOPE = "c" * 32
LIMIT = 4096


class Fixed:
    """A hasher that names every content alike: planted collisions."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 32


@dataclass
class Store:
    db: Engine
    backend: SealedBackend
    keys: KeyRing
    sealed: bool

    def content(self, *, limit: int = LIMIT, planted: bool = False) -> ContentStore:
        inline_store = InlineStore(self.db, limit, self.keys)
        if planted:
            return ContentStore(self.backend, hasher=Fixed, inline=inline_store)
        return ContentStore(self.backend, inline=inline_store)


@pytest.fixture(params=["plain", "sealed"])
async def store(
    request: pytest.FixtureRequest, engine: str | None, tmp_path: Path
) -> AsyncIterator[Store]:
    async with migrated(engine, tmp_path / "meta") as db:
        keys = KeyRing(db, os.urandom(32))
        await keys.check(record=True)
        local = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
        sealed = request.param == "sealed"
        try:
            yield Store(db, seal_backend(local, keys, sealing=sealed), keys, sealed)
        finally:
            await local.close()


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def commit(store: Store, file_id: str, puts: Sequence[PutResult]) -> None:
    """A manifest for the puts, their inline rows inserted in the same transaction."""
    now = int(time.time() * 1000)
    async with store.db.write() as tx:
        rows = [p.inline for p in puts if p.inline is not None]
        if rows:
            await inline.add(tx, rows, now_ms=now)
        await confirmations.confirm(
            tx,
            store.backend,
            [p.ref for p in puts],
            now_ms=now,
            inserted=inline_refs(*puts),
            unchecked=unchecked_refs(*puts),
        )
        await manifests.create(
            tx,
            file_id,
            "acme",
            expected_chunks=len(puts),
            expected_size=sum(p.size for p in puts),
            now_ms=now,
        )
        for i, put in enumerate(puts, 1):
            await manifests.put_entry(tx, file_id, "chunk", i, put.ref, put.size)
        await manifests.mark(tx, file_id, now_ms=now, complete=True)


async def put(content: ContentStore, data: bytes) -> PutResult:
    return await content.put(one(data), scope=SCOPE, inline=True)


async def test_a_small_put_becomes_a_row_and_nothing_reaches_the_backend(store: Store) -> None:
    content = store.content()
    data = b"tiny-file-MARKER-" * 10
    result = await put(content, data)
    assert result.inline is not None and result.created
    assert is_sealed(result.ref) == store.sealed
    assert await store.backend.stat(result.ref) is None
    assert await content.read(result.ref) is None  # not committed: no row yet
    await commit(store, "f1", [result])
    assert await content.read(result.ref) == data
    assert await content.read(result.ref, 5, 20) == data[5:20]
    assert b"".join([p async for p in content.read_any(result.ref)]) == data
    row = await inline.lookup(store.db, result.ref)
    assert row is not None and row.size == len(data)
    assert (b"MARKER" in row.data) == (not store.sealed)  # sealed rows hold no plaintext
    assert [p async for p in store.backend.inner.scan()] == []


async def test_the_same_content_again_is_a_dedup_hit_carrying_the_row(store: Store) -> None:
    content = store.content()
    first = await put(content, b"same bytes")
    await commit(store, "f1", [first])
    again = await put(content, b"same bytes")
    assert again.ref == first.ref and not again.created
    assert again.inline is not None  # re-inserted by its commit, should gc take it meanwhile
    await commit(store, "f2", [again])
    assert await content.read(again.ref) == b"same bytes"


async def test_the_limit_counts_stored_bytes_and_0_turns_it_off(store: Store) -> None:
    overhead = TAG + TRAILER if store.sealed else 0
    fits = await put(store.content(), b"x" * (LIMIT - overhead))
    assert fits.inline is not None
    over = await put(store.content(), b"y" * (LIMIT - overhead + 1))
    assert over.inline is None and await store.backend.stat(over.ref) == len(over_data(over))
    off = await put(store.content(limit=0), b"z")
    assert off.inline is None and await store.backend.stat(off.ref) == 1
    caller_cannot_commit = await store.content().put(one(b"w"), scope=SCOPE)
    assert caller_cannot_commit.inline is None


def over_data(result: PutResult) -> bytes:
    return b"y" * result.size


async def test_planted_collisions_get_variants_and_a_hit_compares_bytes(store: Store) -> None:
    content = store.content(planted=True)
    a = await put(content, b"content a")
    await commit(store, "fa", [a])
    b = await put(content, b"content b")
    assert ref_variant(b.ref) == 1 and b.created
    await commit(store, "fb", [b])
    a2 = await put(content, b"content a")
    assert a2.ref == a.ref and not a2.created
    assert await content.read(a.ref) == b"content a"
    assert await content.read(b.ref) == b"content b"


async def test_two_contents_racing_for_one_name_fail_the_later_commit(store: Store) -> None:
    content = store.content(planted=True)
    a = await put(content, b"content a")
    b = await put(content, b"content b")  # before a commits: the same free name
    assert a.ref == b.ref
    same = await put(content, b"content a")
    await commit(store, "fa", [a])
    await commit(store, "fa2", [same])  # the same content: the row is kept, no error
    with pytest.raises(NameTaken), inline.name_races():
        await commit(store, "fb", [b])
    assert await content.read(a.ref) == b"content a"
    async with store.db.read() as tx:
        assert await manifests.head(tx, "fb") is None  # nothing of the losing commit stayed


async def test_names_are_never_shared_across_the_backend_and_the_rows(store: Store) -> None:
    planted = store.content(planted=True)
    a = await put(planted, b"content a")
    assert ref_variant(a.ref) == 0 and a.inline is not None
    await commit(store, "fa", [a])
    # A caller that cannot commit rows puts another content: the row's name is passed over.
    b = await planted.put(one(b"content b"), scope=SCOPE)
    assert ref_variant(b.ref) == 1 and b.inline is None
    # The same content put inline deduplicates against the backend's blob.
    b2 = await put(planted, b"content b")
    assert b2.ref == b.ref and b2.inline is None and not b2.created
    # A third content passes both names.
    c = await put(planted, b"content c")
    assert ref_variant(c.ref) == 2 and c.created
    assert await planted.read(a.ref) == b"content a"
    assert await planted.read(b.ref) is None  # in the backend, not a row
    assert b"".join([p async for p in planted.read_any(b.ref)]) == b"content b"


async def test_a_name_taken_unchecked_is_checked_by_the_commit_and_put_again(
    store: Store,
) -> None:
    planted = store.content(planted=True)
    held = await planted.put(one(b"content b"), scope=SCOPE)  # a backend blob, variant 0
    assert held.inline is None and ref_variant(held.ref) == 0
    for data in (b"content b", b"content c"):
        quick = await planted.put(one(data), scope=SCOPE, inline=True, defer_name_check=True)
        assert quick.unchecked and quick.ref == held.ref  # the backend was not asked
        with pytest.raises(NameInBackend):
            await commit(store, "fq", [quick])
        assert await planted.read(held.ref) is None  # nothing of it was committed
        again = await planted.recheck(quick, scope=SCOPE)
        assert not again.unchecked
        if data == b"content b":  # the backend's blob is the same content: a dedup hit
            assert again.ref == held.ref and again.inline is None and not again.created
        else:  # another content: the next name (in the backend, as a checked put does)
            assert ref_variant(again.ref) == 1 and again.created
        await commit(store, f"f-{data.decode()}", [again])
        assert b"".join([p async for p in planted.read_any(again.ref)]) == data
    # A free name taken unchecked commits as a checked one does.
    free = await put(store.content(), b"nobody has this")
    fresh = await store.content().put(
        one(b"nobody else"), scope=SCOPE, inline=True, defer_name_check=True
    )
    assert fresh.unchecked and not free.unchecked
    await commit(store, "ff", [free, fresh])
    assert await store.content().read(fresh.ref) == b"nobody else"


async def test_gc_takes_unreferenced_rows_after_the_grace_only(store: Store) -> None:
    content = store.content()
    kept = await put(content, b"kept")
    dropped = await put(content, b"dropped")
    await commit(store, "keep", [kept])
    await commit(store, "drop", [dropped])
    async with store.db.write() as tx:
        await manifests.delete(tx, "drop")
    young = await gc.collect(store.db, store.backend, grace=3600)
    assert young.freed == 0 and await inline.lookup(store.db, dropped.ref) is not None
    report = await gc.collect(store.db, store.backend, grace=0)
    assert report.freed == 1
    assert await inline.lookup(store.db, dropped.ref) is None
    assert await content.read(kept.ref) == b"kept"


async def test_a_row_its_commit_inserts_is_not_confirmed_and_gc_times_it_from_its_insert(
    store: Store,
) -> None:
    content = store.content()
    row = await put(content, b"short-lived")
    before = int(time.time() * 1000)
    await commit(store, "f", [row])
    async with store.db.read() as tx:
        assert await confirmations.confirmed_at(tx, [row.ref]) == {}
        stamps = await inline.added_at(tx, [row.ref])
    assert list(stamps) == [row.ref] and before <= stamps[row.ref] <= time.time() * 1000
    async with store.db.write() as tx:
        await manifests.delete(tx, "f")
    young = await gc.collect(store.db, store.backend, grace=3600)
    assert young.freed == 0 and young.plan.first_seen == ()
    # A minute later, with a grace of 30 s: its insert is old enough, no sighting needed first.
    later = await gc.collect(store.db, store.backend, grace=30, clock=lambda: time.time() + 60)
    assert later.freed == 1 and await inline.lookup(store.db, row.ref) is None


async def test_a_dedup_commit_of_an_existing_row_moves_its_stamp(store: Store) -> None:
    content = store.content()
    first = await put(content, b"shared bytes")
    await commit(store, "a", [first])
    async with store.db.write() as tx:
        await tx.execute("UPDATE inline_blobs SET added_at = 0 WHERE ref = ?", first.ref)
    again = await put(content, b"shared bytes")
    assert again.ref == first.ref and not again.created
    await commit(store, "b", [again])
    async with store.db.read() as tx:
        seen = {
            **await inline.added_at(tx, [first.ref]),
            **await confirmations.confirmed_at(tx, [first.ref]),
        }
    assert seen[first.ref] > 0


async def test_fsck_rehashes_rows_and_maps_a_damaged_one_to_its_file(store: Store) -> None:
    content = store.content()
    good = await put(content, b"good content")
    bad = await put(content, b"soon damaged")
    await commit(store, "good", [good])
    await commit(store, "bad", [bad])
    assert [f async for f in fsck.check(store.db, store.backend, rehash=rehash_all)] == []
    row = await inline.lookup(store.db, bad.ref)
    assert row is not None
    damaged = bytearray(row.data)
    damaged[0] ^= 0x01
    async with store.db.write() as tx:
        await tx.execute("UPDATE inline_blobs SET data = ? WHERE ref = ?", bytes(damaged), bad.ref)
    findings = [f async for f in fsck.check(store.db, store.backend, rehash=rehash_all)]
    assert [(f.kind, f.ref) for f in findings] == [(Kind.CORRUPT_BLOB, bad.ref)]
    assert [h.file_id for h in findings[0].holders] == ["bad"]
    async with store.db.write() as tx:
        await inline.delete(tx, [bad.ref])
    findings = [f async for f in fsck.check(store.db, store.backend, rehash=rehash_all)]
    assert [(f.kind, f.ref) for f in findings] == [(Kind.MISSING_BLOB, bad.ref)]


async def test_stat_counts_rows_as_blobs(store: Store) -> None:
    content = store.content()
    await commit(store, "f", [await put(content, b"abc"), await put(content, b"defg")])
    s = await stats.gather(store.db, store.backend)
    assert (s.blobs, s.inline_blobs, s.inline_bytes, s.referenced_blobs) == (2, 2, 7, 2)


async def damage(store: Store, ref: str, sql: str, *args: object) -> None:
    async with store.db.write() as tx:
        await tx.execute(sql, *args, ref)


async def repair_all(store: Store, quarantine: Path) -> RepairReport:
    findings = [f async for f in fsck.check(store.db, store.backend, rehash=rehash_all)]
    return await Repairer(store.db, store.backend, quarantine=quarantine).apply(findings)


async def damaged_files(store: Store, ref: str) -> list[str]:
    async with store.db.read() as tx:
        return [h.file_id for h in await manifests.holders(tx, ref) if h.marked_damaged]


async def test_repair_quarantines_a_corrupt_row_and_marks_its_files(
    store: Store, tmp_path: Path
) -> None:
    content = store.content()
    good = await put(content, b"good content")
    bad = await put(content, b"soon damaged")
    await commit(store, "good", [good])
    await commit(store, "bad", [bad])
    await commit(store, "bad2", [await put(content, b"soon damaged")])
    row = await inline.lookup(store.db, bad.ref)
    assert row is not None
    flipped = bytes([row.data[0] ^ 0x01]) + row.data[1:]
    await damage(store, bad.ref, "UPDATE inline_blobs SET data = ? WHERE ref = ?", flipped)
    report = await repair_all(store, tmp_path / "quarantine")
    assert report.quarantined == [bad.ref]
    assert sorted(f for f, _ in report.marked) == ["bad", "bad2"]
    assert (tmp_path / "quarantine" / bad.ref).read_bytes() == flipped
    assert await inline.lookup(store.db, bad.ref) is None
    assert await damaged_files(store, bad.ref) == ["bad", "bad2"]
    assert await damaged_files(store, good.ref) == []
    # Nothing left to repair; the same content uploaded again is stored afresh, not a dedup
    # hit on the damaged bytes.
    findings = [f async for f in fsck.check(store.db, store.backend, rehash=rehash_all)]
    assert [(f.kind, f.ref) for f in findings] == [(Kind.MISSING_BLOB, bad.ref)]
    assert not any(repairable(f) for f in findings)
    again = await put(content, b"soon damaged")
    assert again.created and again.inline is not None
    await commit(store, "again", [again])
    assert await content.read(again.ref) == b"soon damaged"


async def test_repair_quarantines_a_row_whose_recorded_size_is_wrong(
    store: Store, tmp_path: Path
) -> None:
    content = store.content()
    bad = await put(content, b"twelve bytes")
    await commit(store, "bad", [bad])
    await damage(store, bad.ref, "UPDATE inline_blobs SET size = ? WHERE ref = ?", 11)
    report = await repair_all(store, tmp_path / "quarantine")
    assert report.quarantined == [bad.ref]
    assert await inline.lookup(store.db, bad.ref) is None
    assert await damaged_files(store, bad.ref) == ["bad"]


async def test_repair_keeps_a_sound_row_and_marks_only_the_files_claiming_another_size(
    store: Store, tmp_path: Path
) -> None:
    content = store.content()
    blob = await put(content, b"twelve bytes")
    await commit(store, "right", [blob])
    await commit(store, "wrong", [await put(content, b"twelve bytes")])
    async with store.db.write() as tx:
        await tx.execute("UPDATE manifest_entries SET size = 13 WHERE file_id = 'wrong'")
    report = await repair_all(store, tmp_path / "quarantine")
    assert report.quarantined == []
    assert [f for f, _ in report.marked] == ["wrong"]
    assert await inline.lookup(store.db, blob.ref) is not None
    assert not (tmp_path / "quarantine").exists()
