"""Thumbnail jobs are claimed with a lease: any runner (process, instance) takes each job once,
and a job whose claimer died is taken over when its lease ends, at once when the claimer was a
dead process of this host.  On both engines."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from blobstore import manifests
from blobstore.engine.base import Engine, Tx
from blobstore.manifest_model import NewManifest
from blobstore.memory import MemoryBackend
from blobstore.store import ContentStore
from filesvc import jobqueue, repo
from filesvc.thumbnails.jobs import ThumbnailRunner
from filesvc.thumbnails.result import Rendered
from tests.engines import migrated

JPEG_HEAD = b"\xff\xd8\xff\xe0" + b"\x00" * 60


async def add_jobs(db: Engine, store: ContentStore, n: int) -> list[str]:
    """``n`` complete files whose content looks like a JPEG, each with a queued job."""
    put = await store.put_bytes(JPEG_HEAD)
    now = int(time.time() * 1000)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    async with db.write() as tx:
        await manifests.create_many(
            tx,
            [NewManifest(i, "acme", 1, put.size, True, now, (1, put.ref, put.size)) for i in ids],
        )
        await repo.insert_many(
            tx,
            [
                repo.NewRow(i, "acme", "alice", None, "x.jpg", "image/jpeg", now, "waiting", None)
                for i in ids
            ],
        )
        await jobqueue.enqueue_new(tx, [(i, now) for i in ids])
    return ids


class Recorder:
    """A renderer that counts which files it was asked to render."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = delay
        self.current = ""

    def for_runner(self, runner: ThumbnailRunner) -> None:
        self.runner = runner

    async def __call__(self, path: Path) -> Rendered:
        await asyncio.sleep(self.delay)
        return Rendered("done")


def runner(db: Engine, store: ContentStore, tmp_path: Path, renderer: object) -> ThumbnailRunner:
    return ThumbnailRunner(
        db,
        store,
        renderer,  # type: ignore[arg-type]
        work_dir=tmp_path / f"work-{uuid.uuid4().hex[:6]}",
        workers=2,
        lease=30.0,
        poll=0.05,
    )


async def statuses(db: Engine, ids: list[str]) -> list[str]:
    async with db.read() as tx:
        return [(await repo.get(tx, "acme", i)).thumbnails_status for i in ids]  # type: ignore[union-attr]


async def wait_done(db: Engine, ids: list[str], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(s == "done" for s in await statuses(db, ids)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs not done: {await statuses(db, ids)}")


def counting(rendered: Counter[str], run_job: object) -> object:
    return run_job


async def test_two_runners_take_each_job_exactly_once(tmp_path: Path, engine: str | None) -> None:
    store = ContentStore(MemoryBackend())
    async with migrated(engine, tmp_path) as db:
        ids = await add_jobs(db, store, 12)
        claims: Counter[str] = Counter()
        runners = []
        for _ in range(2):
            r = runner(db, store, tmp_path, Recorder(delay=0.02))
            real = r._run

            async def run(job: jobqueue.Claimed, real: object = real) -> None:
                claims[job.file_id] += 1
                await real(job)  # type: ignore[operator]

            r._run = run  # type: ignore[method-assign]
            runners.append(r)
        for r in runners:
            await r.start()
        try:
            await wait_done(db, ids)
        finally:
            for r in runners:
                await r.stop()
        assert claims == Counter({i: 1 for i in ids})


async def test_a_job_whose_claimer_vanished_is_taken_over_when_its_lease_ends(
    tmp_path: Path, engine: str | None
) -> None:
    store = ContentStore(MemoryBackend())
    async with migrated(engine, tmp_path) as db:
        [file_id] = await add_jobs(db, store, 1)
        until = int(time.time() * 1000) + 1500
        async with db.write() as tx:  # an instance on another machine claimed it, then died
            await jobqueue.force_lease(
                tx, file_id, owner="elsewhere/4242/feedbeef", until_ms=until, attempts=1
            )
        r = runner(db, store, tmp_path, Recorder())
        await r.start()
        try:
            await asyncio.sleep(0.6)
            assert await statuses(db, [file_id]) == ["waiting"]  # the lease still holds
            await wait_done(db, [file_id])
            assert time.time() * 1000 >= until
        finally:
            await r.stop()
        async with db.read() as tx:
            assert await jobqueue.state(tx, file_id, 1) == "done"


async def test_a_lease_of_a_dead_process_of_this_host_is_taken_over_at_once(
    tmp_path: Path, engine: str | None
) -> None:
    store = ContentStore(MemoryBackend())
    async with migrated(engine, tmp_path) as db:
        [file_id] = await add_jobs(db, store, 1)
        gone = subprocess.Popen(["true"])
        gone.wait()
        async with db.write() as tx:  # claimed by a process killed with -9 an hour into it
            await jobqueue.force_lease(
                tx,
                file_id,
                owner=f"{socket.gethostname()}/{gone.pid}/0123456789ab",
                until_ms=int(time.time() * 1000) + 3_600_000,
                attempts=1,
            )
        r = runner(db, store, tmp_path, Recorder())
        await r.start()
        try:
            await wait_done(db, [file_id], limit=5.0)
        finally:
            await r.stop()


async def test_a_job_notified_while_a_worker_looks_at_the_table_is_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload commits its job and notifies while an idle worker's look at the table is
    under way (its read saw no job): the notice is kept, so the job runs now rather than at the
    next poll (an hour here)."""
    store = ContentStore(MemoryBackend())
    async with migrated(None, tmp_path) as db:
        r = ThumbnailRunner(
            db, store, Recorder(), work_dir=tmp_path / "work", workers=1, lease=30.0, poll=3600
        )
        committed: list[str] = []
        real = jobqueue.claimable

        async def look(tx: Tx, *, now_ms: int) -> bool:
            found = await real(tx, now_ms=now_ms)
            if not committed:  # the first look: the job is committed and notified meanwhile
                committed.extend(await add_jobs(db, store, 1))
                r.notify(committed[0], 1)
            return found

        monkeypatch.setattr(jobqueue, "claimable", look)
        await r.start()
        try:
            while not committed:
                await asyncio.sleep(0.01)
            await wait_done(db, committed)
        finally:
            await r.stop()
