"""A thumbnail's inline blob name taken by another content between the thumbnail's put and its
job's commit (planted hash collisions racing): the commit rolls back and the job stores its
thumbnails again under a name of their own; a job that keeps losing ends ``error`` with a
reason saying so, never stuck and never pointing at someone else's bytes.  On both engines."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blobstore import inline, manifests
from blobstore.engine.base import Engine, Tx
from blobstore.manifest_model import NewManifest
from blobstore.memory import MemoryBackend
from blobstore.refs import BlobRef, ref_variant
from blobstore.store import ContentStore, InlineStore, PutResult
from filesvc import jobqueue, repo
from filesvc.thumbnails.jobs import NAME_RACE_REASON, ThumbnailRunner
from filesvc.thumbnails.result import Rendered, Thumbnail
from tests.engines import migrated

JPEG_HEAD = b"\xff\xd8\xff\xe0" + b"\x00" * 60
THUMB = Thumbnail(data=b"the thumbnail's bytes", mime="image/webp", width=2, height=2)


class Planted:
    """A hasher that names every content alike."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        pass

    def hexdigest(self) -> str:
        return "1" * 32


@dataclass
class Setup:
    db: Engine
    store: ContentStore
    runner: ThumbnailRunner
    file_id: str


async def render(path: Path) -> Rendered:
    return Rendered("done", thumbnails=(THUMB,))


@pytest.fixture
async def setup(engine: str | None, tmp_path: Path) -> AsyncIterator[Setup]:
    async with migrated(engine, tmp_path / "meta") as db:
        backend = MemoryBackend()
        store = ContentStore(backend, Planted, inline=InlineStore(db, 4096, None))
        # A row too (a backend blob of the planted name would send every later put there).
        content = await store.put_bytes(JPEG_HEAD, inline=True)
        file_id = str(uuid.uuid4())
        now = int(time.time() * 1000)
        async with db.write() as tx:
            await inline_add(tx, content)
            await manifests.create_many(
                tx,
                [NewManifest(file_id, "acme", 1, content.size, True, now, (1, content.ref, 64))],
            )
            await repo.insert_many(
                tx,
                [
                    repo.NewRow(
                        file_id, "acme", "alice", None, "x.jpg", "image/jpeg", now, "waiting", None
                    )
                ],
            )
            await jobqueue.enqueue_new(tx, [(file_id, now)])
        runner = ThumbnailRunner(
            db, store, render, work_dir=tmp_path / "work", workers=1, lease=30.0, poll=0.05
        )
        yield Setup(db, store, runner, file_id)


def racing(setup: Setup, monkeypatch: pytest.MonkeyPatch, losses: int) -> list[bytes]:
    """Make the first ``losses`` thumbnail puts lose their name: right after each, another
    content is committed under the same name by another instance.  Returns the contents that won."""
    real = setup.store.put_bytes
    # Another instance's store: it knows nothing of this one's puts in flight.
    rival = ContentStore(setup.store.backend, Planted, inline=setup.store.inline)
    winners: list[bytes] = []

    async def put_bytes(
        data: bytes, *, scope: str | None = None, inline: bool = False
    ) -> PutResult:
        put = await real(data, scope=scope, inline=inline)
        if data == THUMB.data and len(winners) < losses:
            other = b"another content %d" % len(winners)
            taken = await rival.put_bytes(other, scope=scope, inline=True)
            assert taken.ref == put.ref and taken.inline is not None
            async with setup.db.write() as tx:
                await inline_add(tx, taken)
            winners.append(other)
        return put

    monkeypatch.setattr(setup.store, "put_bytes", put_bytes)
    return winners


async def inline_add(tx: Tx, put: PutResult) -> None:
    assert put.inline is not None
    await inline.add(tx, [put.inline], now_ms=int(time.time() * 1000))


async def run_job(setup: Setup) -> tuple[str, str | None]:
    async with setup.db.write() as tx:
        job = await jobqueue.claim(tx, "test", now_ms=int(time.time() * 1000), lease_ms=30_000)
    assert job is not None
    await setup.runner._run(job)
    async with setup.db.read() as tx:
        row = await repo.get(tx, "acme", setup.file_id)
        assert row is not None
        return row.thumbnails_status, row.thumbnails_error


async def test_a_thumbnail_that_loses_its_name_is_stored_again_under_its_own(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    winners = racing(setup, monkeypatch, losses=1)
    assert await run_job(setup) == ("done", None)
    assert len(winners) == 1
    async with setup.db.read() as tx:
        assert not await jobqueue.claimable(tx, now_ms=int(time.time() * 1000) + 10**9)
    async with setup.db.read() as tx:
        [entry] = await manifests.entries(tx, setup.file_id, "thumb")
    # Variant 0 is the file's content, 1 the content that won the race.
    assert ref_variant(entry.ref) == 2
    assert await setup.store.read(entry.ref) == THUMB.data
    assert await setup.store.read(BlobRef(entry.ref[:-1] + "1")) == winners[0]


async def test_a_job_that_keeps_losing_the_race_ends_in_error_with_its_reason(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    racing(setup, monkeypatch, losses=100)
    assert await run_job(setup) == ("error", NAME_RACE_REASON)
    async with setup.db.read() as tx:
        assert await manifests.entries(tx, setup.file_id, "thumb") == []
        # Finished, not left open for another attempt: nothing is claimable, even much later.
        assert not await jobqueue.claimable(tx, now_ms=int(time.time() * 1000) + 10**9)
