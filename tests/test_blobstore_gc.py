"""gc: the pure plan (property-tested), reclaiming, abandoned-upload expiry, and races with uploads."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blobstore import confirmations, gc, manifests
from blobstore.confirmations import BlobGone
from blobstore.engine.base import Tx
from blobstore.gc import GcPlan, plan_expiry, plan_gc
from blobstore.manifest_model import NewManifest
from blobstore.manifests import PendingUpload, Slot
from blobstore.port import BlobInfo
from blobstore.refs import BlobRef, make_ref
from blobstore.store import PutResult
from tests.test_blobstore_fsck import Store, add_file, opened

HOUR = 3600.0
DAY = 86400.0
NO_EXPIRY = 1000 * DAY


# --- the pure plan -----------------------------------------------------------------------------

refs_st = st.integers(0, 40).map(lambda n: make_ref(f"{n:032x}"))
blob_st = st.builds(BlobInfo, refs_st, st.integers(0, 10**9))


@given(
    blobs=st.lists(blob_st, unique_by=lambda b: b.ref, max_size=40),
    referenced=st.sets(refs_st),
    seen=st.dictionaries(refs_st, st.integers(0, 2 * 10**12)),
    now_ms=st.integers(0, 2 * 10**12),
    grace_ms=st.integers(0, 10**10),
)
def test_plan_gc_deletes_exactly_the_unreferenced_whose_grace_ran_out(
    blobs: list[BlobInfo],
    referenced: set[BlobRef],
    seen: dict[BlobRef, int],
    now_ms: int,
    grace_ms: int,
) -> None:
    plan = plan_gc(referenced, blobs, seen, now_ms=now_ms, grace_ms=grace_ms)
    planned = {b.ref for b in plan.delete}
    for b in blobs:
        # Never seen: first seen now, so gone now only without any grace.
        stale = now_ms - seen[b.ref] >= grace_ms if b.ref in seen else grace_ms == 0
        assert (b.ref in planned) == (b.ref not in referenced and stale)
    assert set(plan.first_seen) == {b.ref for b in blobs if b.ref not in referenced} - set(seen)
    assert plan.kept_referenced == sum(b.ref in referenced for b in blobs)
    assert len(plan.delete) + plan.kept_referenced + plan.kept_young == len(blobs)
    assert plan.delete_bytes + plan.kept_referenced_bytes + plan.kept_young_bytes == sum(
        b.size for b in blobs
    )


pending_st = st.builds(
    PendingUpload,
    st.uuids().map(str),
    st.just("acme"),
    st.sampled_from(["upload", "overwrite"]),
    st.integers(0, 2 * 10**12),
    st.lists(st.tuples(st.integers(1, 9), refs_st), max_size=4).map(tuple),
)


@given(
    uploads=st.lists(pending_st, max_size=10),
    now=st.floats(0, 2e9),
    after=st.floats(0, 1e7),
)
def test_plan_expiry_takes_only_uploads_idle_long_enough(
    uploads: list[PendingUpload], now: float, after: float
) -> None:
    expired = plan_expiry(uploads, now=now, abandon_after=after)
    for u in uploads:
        assert (u in expired) == (now - u.updated_at / 1000 >= after)


# --- against a real store ----------------------------------------------------------------------


async def age(store: Store, ref: BlobRef, seconds: float) -> None:
    """Make the blob's last confirmation (or gc's first sighting) ``seconds`` old."""
    past_ms = int((time.time() - seconds) * 1000)
    async with store.db.write() as tx:
        await confirmations.forget(tx, [ref])
        await confirmations.sight(tx, [ref], now_ms=past_ms)


async def exists(store: Store, ref: BlobRef) -> bool:
    return await store.backend.stat(ref) is not None


async def read(store: Store, ref: BlobRef) -> bytes:
    return b"".join([piece async for piece in store.backend.read(ref)])


async def test_gc_reclaims_deleted_files_and_keeps_shared_blobs(tmp_path: Path) -> None:
    shared = b"shared" * 1000
    async with opened(tmp_path) as store:
        a = await add_file(store, "a", [b"only in a" * 500, shared])
        b = await add_file(store, "b", [shared, b"only in b" * 70])
        async with store.db.write() as tx:
            assert await manifests.delete(tx, "a")
        for ref in {*a, *b}:
            await age(store, ref, 2 * HOUR)

        dry = await gc.collect(store.db, store.backend, grace=HOUR, dry_run=True)
        assert [x.ref for x in dry.plan.delete] == [a[0]]
        assert dry.plan.delete_bytes == 4500 and dry.freed == 0
        assert await exists(store, a[0])

        report = await gc.collect(store.db, store.backend, grace=HOUR)
        assert (report.freed, report.freed_bytes) == (1, 4500)
        assert not await exists(store, a[0])
        assert await read(store, b[0]) == shared and await exists(store, b[1])
        async with store.db.read() as tx:
            assert await confirmations.confirmed_at(tx, [a[0]]) == {}  # its row went too

        again = await gc.collect(store.db, store.backend, grace=HOUR)
        assert again.freed == 0 and again.plan.delete == ()


async def test_gc_keeps_unreferenced_blobs_confirmed_within_the_grace(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        young = (await store.content.put_bytes(b"confirmed a while ago, file deleted")).ref
        old = (await store.content.put_bytes(b"long forgotten")).ref
        await age(store, young, HOUR - 60)
        await age(store, old, HOUR + 60)
        report = await gc.collect(store.db, store.backend, grace=HOUR)
        assert [b.ref for b in report.plan.delete] == [old]
        assert report.plan.kept_young == 1
        assert await exists(store, young) and not await exists(store, old)


async def test_a_blob_never_seen_gets_its_grace_from_the_first_sighting(tmp_path: Path) -> None:
    """A blob written by an upload that has not committed yet is in no table: gc records when
    it first saw it and takes it only once the grace has run from then."""
    async with opened(tmp_path) as store:
        fresh = (await store.content.put_bytes(b"written, commit pending")).ref
        first = await gc.collect(store.db, store.backend, grace=HOUR)
        assert first.plan.first_seen == (fresh,) and first.freed == 0
        again = await gc.collect(store.db, store.backend, grace=HOUR)
        assert again.plan.first_seen == () and again.freed == 0 and await exists(store, fresh)
        await age(store, fresh, HOUR + 1)
        last = await gc.collect(store.db, store.backend, grace=HOUR)
        assert last.freed == 1 and not await exists(store, fresh)


async def test_a_commit_after_gc_took_its_blob_fails_and_commits_nothing(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        put = await store.content.put_bytes(b"slow upload")
        report = await gc.collect(store.db, store.backend, grace=0)
        assert report.freed == 1
        with pytest.raises(BlobGone):
            async with store.db.write() as tx:
                await manifests.create(
                    tx, "late", "acme", expected_chunks=1, expected_size=11, now_ms=0
                )
                await confirmations.confirm(tx, store.backend, [put.ref], now_ms=0)
        # The same in a write unit (the group commit's), whose check runs under its lock.
        assert confirmations.can_confirm_in_unit(store.backend)
        with pytest.raises(BlobGone):
            async with store.db.write_unit() as tx:
                await manifests.create_many(
                    tx, [NewManifest("late", "acme", 1, 11, True, 0, (1, put.ref, 11))]
                )
                await confirmations.confirm(tx, store.backend, [put.ref], now_ms=0)
        async with store.db.read() as tx:
            assert await manifests.head(tx, "late") is None
            assert await confirmations.confirmed_at(tx, [put.ref]) == {}


async def test_a_blob_a_manifest_took_after_planning_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(tmp_path) as store:
        ref = (await store.content.put_bytes(b"about to be committed")).ref
        await age(store, ref, 2 * HOUR)
        real_live_refs = manifests.live_refs
        calls: list[int] = []

        async def live_then_commit(
            tx: Tx, *, excluding: Mapping[str, Slot | None] | None = None
        ) -> set[BlobRef]:
            live = await real_live_refs(tx, excluding=excluding)
            calls.append(len(live))
            if len(calls) != 2:
                return live  # the first read is before the scan; the second one plans
            async with store.db.write() as w:
                await confirmations.confirm(w, store.backend, [ref], now_ms=0)
                await manifests.create(
                    w, "late", "acme", expected_chunks=1, expected_size=21, now_ms=0
                )
                await manifests.put_entry(w, "late", "chunk", 1, ref, 21)
            return live

        monkeypatch.setattr(manifests, "live_refs", live_then_commit)
        report = await gc.collect(store.db, store.backend, grace=0)
        assert [b.ref for b in report.plan.delete] == [ref]
        assert (report.freed, report.kept_rereferenced) == (0, 1)
        assert await exists(store, ref)


async def test_a_blob_confirmed_after_planning_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload deduplicated against the blob and confirmed it while gc was planning (its
    manifest may come in a later transaction): the delete's re-check keeps it."""
    async with opened(tmp_path) as store:
        ref = (await store.content.put_bytes(b"popular bytes" * 100)).ref
        await age(store, ref, 2 * HOUR)
        real_confirmed_at = confirmations.confirmed_at
        calls: list[int] = []

        async def confirmed_then_confirm(tx: Tx, refs: object) -> dict[BlobRef, int]:
            seen = await real_confirmed_at(tx, refs)  # type: ignore[arg-type]
            calls.append(1)
            if len(calls) == 1:
                async with store.db.write() as w:
                    await confirmations.confirm(
                        w, store.backend, [ref], now_ms=int(time.time() * 1000) + 5000
                    )
            return seen

        monkeypatch.setattr(confirmations, "confirmed_at", confirmed_then_confirm)
        report = await gc.collect(store.db, store.backend, grace=HOUR)
        assert [b.ref for b in report.plan.delete] == [ref]
        assert (report.freed, report.kept_confirmed) == (0, 1)
        assert await exists(store, ref)


async def test_gc_expires_abandoned_uploads_and_frees_their_blobs(tmp_path: Path) -> None:
    shared = b"also in a complete file" * 10
    async with opened(tmp_path) as store:
        async with store.db.write() as tx:
            # Rows of another component hang off the manifest; deleting it removes them too.
            await tx.execute(
                "CREATE TABLE files (id TEXT PRIMARY KEY"
                " REFERENCES manifests(file_id) ON DELETE CASCADE)"
            )
        done = await add_file(store, "done", [shared])
        idle = await add_file(store, "idle", [b"idle chunk 1" * 9, shared], complete=False)
        fresh = await add_file(store, "fresh", [b"fresh chunk 1" * 9], complete=False)
        overwrite = (await store.content.put_bytes(b"staged overwrite" * 9)).ref
        old_ms = int((time.time() - 2 * DAY) * 1000)
        async with store.db.write() as tx:
            for fid in ("done", "idle", "fresh"):
                await tx.execute("INSERT INTO files (id) VALUES (?)", fid)
            await confirmations.confirm(tx, store.backend, [overwrite], now_ms=old_ms)
            await manifests.start_staged(
                tx, "done", chunks=2, size=999, owner="an-app", now_ms=old_ms
            )
            await manifests.put_entry(tx, "done", "staged", 1, overwrite, 144)
            await tx.execute(
                "UPDATE manifests SET updated_at = ? WHERE file_id IN ('done', 'idle')", old_ms
            )
        for ref in {*done, *idle, overwrite}:
            await age(store, ref, 2 * DAY)

        dry = await gc.collect(store.db, store.backend, grace=HOUR, abandon_after=DAY, dry_run=True)
        assert sorted((u.file_id, u.kind) for u in dry.expired) == [
            ("done", "overwrite"),
            ("idle", "upload"),
        ]
        assert sorted(b.ref for b in dry.plan.delete) == sorted([idle[0], overwrite])

        report = await gc.collect(store.db, store.backend, grace=HOUR, abandon_after=DAY)
        assert sorted((u.file_id, u.kind) for u in report.expired) == [
            ("done", "overwrite"),
            ("idle", "upload"),
        ]
        assert report.freed == 2
        assert not await exists(store, idle[0]) and not await exists(store, overwrite)
        assert await exists(store, shared_ref := done[0]) and shared_ref == idle[1]
        async with store.db.read() as tx:
            assert [r[0] for r in await tx.fetch("SELECT id FROM files ORDER BY id")] == [
                "done",
                "fresh",
            ]
            head = await manifests.head(tx, "done")
            assert head is not None and head.complete
            assert await manifests.entries(tx, "done", "staged") == []
            session = await manifests.staged_session(tx, "done")
            assert (session.chunks, session.size) == (None, None)
        assert fresh


# --- the race ----------------------------------------------------------------------------------

UPLOADERS = 4
ROUNDS = 25


async def test_gc_racing_dedup_uploads_keeps_every_committed_blob(tmp_path: Path) -> None:
    """Uploaders put the same bytes and commit manifests (confirming the blob, as the service
    does) while gc runs in a loop with no grace at all; most files are deleted again so the
    shared blob keeps becoming garbage.  A commit that finds its blob gone puts it again.
    Every committed file must read back whole."""
    content = b"everyone uploads this" * 512
    async with opened(tmp_path) as store:
        for i in range(200):
            await age(store, (await store.content.put_bytes(b"garbage %d" % i)).ref, 2 * HOUR)
        kept: list[str] = []
        retried = 0

        async def put_and_commit(file_id: str) -> PutResult:
            nonlocal retried
            while True:
                put = await store.content.put_bytes(content)
                await asyncio.sleep(random.random() * 0.01)  # the service's work in between
                try:
                    async with store.db.write() as tx:
                        now = int(time.time() * 1000)
                        await confirmations.confirm(tx, store.backend, [put.ref], now_ms=now)
                        await manifests.create(
                            tx,
                            file_id,
                            "acme",
                            expected_chunks=1,
                            expected_size=put.size,
                            now_ms=now,
                        )
                        await manifests.put_entry(tx, file_id, "chunk", 1, put.ref, put.size)
                        await manifests.mark(tx, file_id, now_ms=now, complete=True)
                except BlobGone:
                    retried += 1
                    continue
                return put

        async def uploader(n: int) -> None:
            for i in range(ROUNDS):
                file_id = f"u{n}-{i}"
                put = await put_and_commit(file_id)
                assert await read(store, put.ref) == content, f"{file_id} lost its blob"
                if i == ROUNDS - 1:
                    kept.append(file_id)
                else:
                    async with store.db.write() as tx:
                        await manifests.delete(tx, file_id)
                # Gaps in which no file holds the shared blob, so gc gets its chances.
                if i % 5 == 4:
                    await together.wait()
                    target = runs + 2
                    while runs < target and not stop.is_set():
                        await asyncio.sleep(0.001)
                await asyncio.sleep(random.random() * 0.002)

        freed = runs = 0
        stop = asyncio.Event()
        together = asyncio.Barrier(UPLOADERS)

        async def collector() -> None:
            nonlocal freed, runs
            while not stop.is_set():
                report = await gc.collect(store.db, store.backend, grace=0, abandon_after=NO_EXPIRY)
                freed += report.freed
                runs += 1

        collecting = asyncio.create_task(collector())
        try:
            await asyncio.gather(*(uploader(n) for n in range(UPLOADERS)))
        finally:
            stop.set()
            await collecting

        assert len(kept) == UPLOADERS
        async with store.db.read() as tx:
            committed = [(fid, ref) async for fid, ref, _ in manifests.referenced(tx)]
        assert sorted(fid for fid, _ in committed) == sorted(kept)
        for _, ref in committed:
            assert await read(store, ref) == content
        assert freed >= 200  # gc really ran alongside: the garbage went, and the shared blob too


async def test_gc_refuses_negative_durations(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        with pytest.raises(ValueError, match=">= 0"):
            await gc.collect(store.db, store.backend, grace=-1)


def test_empty_plan_frees_nothing() -> None:
    assert GcPlan().delete_bytes == 0
