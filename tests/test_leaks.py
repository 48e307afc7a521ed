"""No descriptor, thread or child process outlives the app (Datasette's habit): every resource
opened in a cleanup_ctx is closed at shutdown, even after uploads, downloads and thumbnails."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import psutil
import pyvips
from aiohttp.test_utils import TestClient, TestServer

from filesvc.app import create_app
from filesvc.settings import Settings
from tests.helpers import SECRET, Api


async def one_lifetime(data_dir: Path) -> None:
    app = create_app(Settings(data_dir=data_dir, jwt_secret=SECRET))
    async with TestClient(TestServer(app)) as client:
        api = Api(client)
        image = bytes(pyvips.Image.black(300, 200, bands=3).jpegsave_buffer())
        res = await api.upload(image, filename="a.jpg", params={"thumbnail_sync": "1"})
        assert res["metadata"]["thumbnails_status"] == "done"
        big = os.urandom(900_000)
        fid = (await api.upload(big))["id"]
        assert await api.content(fid) == big
        resp = await api.download(fid, Range="bytes=10-20")
        assert await resp.read() == big[10:21]


def counts() -> tuple[int, int, frozenset[int]]:
    me = psutil.Process()
    # The loop's default executor (threads "asyncio_N") grows on demand up to its bound and
    # lives as long as the loop: not ours to close.
    ours = [t for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    # Children are compared by pid with those before the app's lifetimes: the test run's own
    # servers (SeaweedFS, PostgreSQL: session fixtures) are not the app's.
    children = frozenset(p.pid for p in me.children(recursive=True) if _alive(p))
    return me.num_fds(), len(ours), children


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def settled(
    before: tuple[int, int, frozenset[int]],
) -> tuple[int, int, frozenset[int]]:
    """The counts once closing has finished: a closed aiosqlite connection's thread, or a
    worker process already told to exit, may still be on its way out for a moment after the
    awaited close returns. Anything still there after five seconds is a leak."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        now = await asyncio.to_thread(counts)
        leaked = now[0] > before[0] or now[1] > before[1] or bool(now[2] - before[2])
        if not leaked or asyncio.get_running_loop().time() > deadline:
            return now
        await asyncio.sleep(0.1)


async def test_nothing_outlives_the_app(tmp_path: Path) -> None:
    await one_lifetime(tmp_path / "warm")  # the loop's default executor threads start here
    before = await asyncio.to_thread(counts)
    for i in range(3):
        await one_lifetime(tmp_path / f"run{i}")
    after = await settled(before)
    assert after[0] <= before[0], f"file descriptors {before[0]} -> {after[0]}"
    assert after[1] <= before[1], f"threads {before[1]} -> {after[1]}: {threading.enumerate()}"
    assert not after[2] - before[2], "a thumbnail worker process outlived the app"
