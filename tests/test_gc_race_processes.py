"""gc against uploads of the same content on two real server processes (one data directory, one
metadata database): the shared blob keeps becoming garbage and being deduplicated against, and no
file that exists ever loses it.  On both engines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.helpers import MASTER_KEY, PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server

BLOBSTORE = Path(sys.executable).parent / "blobstore"
HEADERS = bearer(token())
FILES = f"{PREFIX}/companies/acme/files"
ROUNDS = 8


def run_gc(data_dir: Path, env: dict[str, str]) -> int:
    """One ``blobstore gc --grace 0s`` run; the number of blobs it freed."""
    proc = subprocess.run(
        [str(BLOBSTORE), "gc", "--data-dir", str(data_dir), "--grace", "0s", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return int(json.loads(proc.stdout)["freed_blobs"])


async def upload(session: aiohttp.ClientSession, server: ServerProcess, data: bytes) -> str:
    """Upload, sending again when the store reclaimed the blob before the commit (503)."""
    for _ in range(20):
        form = aiohttp.FormData()
        form.add_field("file", data, filename="same.bin")
        async with session.post(f"{server.url}{FILES}", data=form, headers=HEADERS) as resp:
            if resp.status == 503:
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")) / 10)
                continue
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["resource"]["id"])
    raise AssertionError("upload kept failing")


async def test_gc_never_takes_a_blob_two_servers_keep_deduplicating(
    tmp_path: Path, engine: str | None
) -> None:
    data_dir = tmp_path / "data"
    env = {"FILESVC_DB_URL": engine, "FILESVC_MASTER_KEY": MASTER_KEY} if engine else {}
    # Even rounds upload `churn` and delete every copy (it becomes garbage, then is uploaded
    # again); odd rounds upload `kept_content` and keep one copy.  Each comes in a size the
    # blob store keeps (a file) and one the database keeps (an inline row, under the default
    # FILESVC_INLINE_MAX).
    churn = (os.urandom(48 * 1024), os.urandom(3 * 1024))
    kept_content = (os.urandom(40 * 1024), os.urandom(2 * 1024))
    a, b = await asyncio.gather(
        asyncio.to_thread(start_server, data_dir, env=env),
        asyncio.to_thread(start_server, data_dir, env=env),
    )
    freed = runs = 0
    stop = asyncio.Event()

    async def collector() -> None:
        nonlocal freed, runs
        while not stop.is_set():
            freed += await asyncio.to_thread(run_gc, data_dir, env)
            runs += 1

    kept: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            collecting = asyncio.create_task(collector())
            try:
                for i in range(ROUNDS):
                    contents = [c for c in (kept_content if i % 2 else churn) for _ in range(4)]
                    servers = (a, b) * 4
                    ids = await asyncio.gather(
                        *(upload(session, s, c) for s, c in zip(servers, contents, strict=True))
                    )
                    # every one reads back whole, through the other server
                    for file_id, content in zip(ids, contents, strict=True):
                        for server in (b, a):
                            url = f"{server.url}{FILES}/{file_id}/download"
                            async with session.get(url, headers=HEADERS) as resp:
                                assert resp.status == 200, await resp.text()
                                assert await resp.read() == content, f"{file_id} lost its blob"
                    keep = (ids[0], ids[4]) if i % 2 == 1 else ()
                    for n, file_id in enumerate(ids):
                        if file_id in keep:
                            kept.append(file_id)
                            continue
                        server = (a, b)[n % 2]
                        url = f"{server.url}{FILES}/{file_id}"
                        async with session.delete(url, headers=HEADERS) as resp:
                            assert resp.status == 200
                    if not keep:
                        # No file holds the content now: give gc a whole run to take it.
                        target = runs + 1
                        while runs <= target:
                            await asyncio.sleep(0.05)
            finally:
                stop.set()
                await collecting
            for n, file_id in enumerate(kept):
                for server in (a, b):
                    url = f"{server.url}{FILES}/{file_id}/download"
                    async with session.get(url, headers=HEADERS) as resp:
                        assert resp.status == 200 and await resp.read() == kept_content[n % 2]
    finally:
        await asyncio.gather(asyncio.to_thread(a.stop), asyncio.to_thread(b.stop))
    # gc really took the shared blobs (file and row) in the gaps, and uploads put them back
    assert freed >= 4
    fsck = subprocess.run(
        [str(BLOBSTORE), "fsck", "--data-dir", str(data_dir), "--full", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert fsck.returncode == 0, fsck.stdout
    stat = subprocess.run(
        [str(BLOBSTORE), "stat", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert stat.returncode == 0, stat.stderr
    assert json.loads(stat.stdout)["inline_blobs"] == 1  # the small kept content's row
