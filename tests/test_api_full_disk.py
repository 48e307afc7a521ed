"""A full disk, on a real ``filesvc serve`` whose data directory is a 48 MiB tmpfs of its own.

Every write refused for lack of space is a 507 with the envelope; DELETE works on a full disk
(the space reserve), also after kill -9; gc then frees space and uploads resume without a
restart; /readyz says when the disk is low; nothing acknowledged is lost and ``blobstore fsck
--full`` is clean after every step.  Run with ``-s`` to see the figures of each step.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from blobstore.cli import main as blobstore_main
from filesvc.space import RESERVE_FILE
from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server

MiB = 1 << 20
DISK = 48 * MiB
FLOOR = 8 * MiB
RESERVE = 4 * MiB
BLOB = 1 * MiB


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs mounted for this test alone (the tests run as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def blobstore(*args: str) -> int:
    """The ``blobstore`` command, run in a thread of this process (its output is captured by
    pytest and shown on failure)."""
    return await asyncio.to_thread(blobstore_main, list(args))


async def assert_fsck_clean(data: Path) -> None:
    assert await blobstore("fsck", "--data-dir", str(data), "--full") == 0


def fill(path: Path, name: str) -> int:
    """Fill the file system as another process would: write until ENOSPC."""
    written = 0
    fd = os.open(path / name, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (MiB, 4096, 1):
            block = b"\1" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return written


def start(data: Path) -> ServerProcess:
    return start_server(
        data,
        env={
            "FILESVC_MIN_FREE_BYTES": str(FLOOR),
            "FILESVC_DISK_RESERVE_BYTES": str(RESERVE),
            "FILESVC_THUMB_WORKERS": "1",
        },
    )


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.files = f"{url}{PREFIX}/companies/acme/files"
        self.headers = bearer(token())

    async def envelope(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        assert resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
        assert set(body) == {"statusCode", "error", "message"}, body
        assert body["statusCode"] == resp.status
        return body

    async def upload(self, data: bytes) -> tuple[int, str | None]:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="f.bin", content_type="application/octet-stream")
        async with self.session.post(self.files, data=form, headers=self.headers) as resp:
            if resp.status == 200:
                return 200, (await resp.json())["resource"]["id"]
            body = await self.envelope(resp)
            assert resp.status == 507, body
            return resp.status, None

    async def status_of(self, method: str, url: str, **kw: Any) -> int:
        kw.setdefault("headers", self.headers)
        async with self.session.request(method, url, **kw) as resp:
            if resp.status >= 400:
                await self.envelope(resp)
            return resp.status

    async def content(self, file_id: str) -> bytes:
        async with self.session.get(f"{self.files}/{file_id}/download", headers=self.headers) as r:
            assert r.status == 200, await r.text()
            return await r.read()

    async def ready(self) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.url}/readyz") as resp:
            body: dict[str, Any] = await resp.json()
            return resp.status, body

    async def wait_ready(self, want: int) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            status, body = await self.ready()
            if status == want or time.monotonic() > deadline:
                assert status == want, body
                return body
            await _sleep(0.2)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def recover(c: Client, data: Path, note: Callable[[str], None]) -> None:
    """Remove what filled the disk from outside, gc the deleted files' blobs (the server keeps
    running), and wait for /readyz to say ready again: free space is sampled every second."""
    for filler in data.glob("filler-*"):
        filler.unlink()
    assert await blobstore("gc", "--data-dir", str(data), "--grace", "0s") == 0
    note("fillers removed, blobstore gc --grace 0s")
    await assert_fsck_clean(data)
    assert (await c.wait_ready(200))["checks"]["disk"] == {"ok": True}
    assert (data / RESERVE_FILE).stat().st_size == RESERVE
    note("reserve held again, /readyz 200")


async def check_acked(c: Client, acked: dict[str, str]) -> None:
    """Nothing acknowledged was lost."""
    for fid, digest in acked.items():
        assert hashlib.sha256(await c.content(fid)).hexdigest() == digest


@pytest.mark.slow
async def test_full_disk_refuses_with_507_deletes_and_recovers_without_restart(
    disk: Path,
) -> None:
    data = disk
    figures: list[str] = []
    began = time.monotonic()

    def note(step: str) -> None:
        figures.append(f"{time.monotonic() - began:5.1f}s {step}: free {free(disk) / MiB:.2f} MiB")

    acked: dict[str, str] = {}  # file id -> sha256 of what the server acknowledged
    server = start(data)
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(session, server.url)
            assert (await c.wait_ready(200))["checks"] == {
                "database": {"ok": True},
                "blob_store": {"ok": True},
                "data_dir_writable": {"ok": True},
                "disk": {"ok": True},
                "thumbnail_workers": {"ok": True},
            }
            assert (data / RESERVE_FILE).stat().st_size == RESERVE
            note("start, reserve held, /readyz 200")

            # An upload in two chunks, left half done: its second chunk comes on a full disk.
            async with session.post(
                c.files, params={"total_chunks": "2"}, headers=c.headers
            ) as resp:
                assert resp.status == 200
                chunked = (await resp.json())["resource"]["id"]
            half = os.urandom(1000)
            raw = {**c.headers, "Content-Type": "application/octet-stream"}
            chunk_url = f"{c.files}/{chunked}"
            assert (
                await c.status_of(
                    "POST", chunk_url, params={"chunk_number": "1"}, data=half, headers=raw
                )
                == 200
            )

            # 1. Fill through the API until the floor: every refusal is a 507 envelope.
            # Then smaller ones, down to the floor itself.
            for size in (BLOB, 64 << 10):
                statuses: dict[int, int] = {}
                refused = 0
                while refused < 3:
                    payload = os.urandom(size)
                    status, fid = await c.upload(payload)
                    statuses[status] = statuses.get(status, 0) + 1
                    if fid is not None:
                        acked[fid] = hashlib.sha256(payload).hexdigest()
                    else:
                        refused += 1
                figures.append(f"uploads of {size >> 10} KiB until refused: {statuses}")
            assert len(acked) >= 20
            note("at the floor")
            body = await c.wait_ready(503)
            assert body["checks"]["database"] == {"ok": True}
            assert "floor" in body["checks"]["disk"]["reason"]
            assert await c.status_of("POST", c.files, params={"filename": "x"}) == 507
            assert (
                await c.status_of(
                    "POST", chunk_url, params={"chunk_number": "2"}, data=b"x", headers=raw
                )
                == 507
            )
            figures.append("create without body 507, chunk 507, /readyz 503 (disk)")
            await assert_fsck_clean(data)

            # 2. Something else takes the rest of the disk while the server runs.
            fill(disk, "filler-1")
            note("another process filled the disk")
            assert free(disk) < 64 << 10
            assert (await c.upload(os.urandom(4096)))[0] == 507
            assert await c.status_of("POST", c.files) == 507
            assert (
                await c.status_of(
                    "POST", chunk_url, params={"chunk_number": "2"}, data=b"x", headers=raw
                )
                == 507
            )

            # 3. DELETE works on the full disk: it gives the reserve back and commits.
            doomed = list(acked)[:16]
            before = free(disk)
            for fid in doomed:
                assert await c.status_of("DELETE", f"{c.files}/{fid}") == 200
                del acked[fid]
            assert not (data / RESERVE_FILE).exists()
            used = before + RESERVE - free(disk)
            figures.append(
                f"upload, create, chunk 507; 16 DELETEs 200, reserve released, they used"
                f" {used / 1024:.0f} KiB of it"
            )
            note("after the DELETEs")
            assert "below the floor" in (await c.wait_ready(503))["checks"]["disk"]["reason"]
            await assert_fsck_clean(data)

            # 4. gc frees the deleted files' blobs; uploads resume without a restart.
            await recover(c, data, note)
            payload = os.urandom(BLOB)
            status, fid = await c.upload(payload)
            assert status == 200 and fid is not None
            acked[fid] = hashlib.sha256(payload).hexdigest()
            second = os.urandom(500)
            assert (
                await c.status_of(
                    "POST", chunk_url, params={"chunk_number": "2"}, data=second, headers=raw
                )
                == 200
            )
            assert await c.content(chunked) == half + second
            figures.append("upload 200 and the pending chunk 200, no restart")
            await check_acked(c, acked)
            await assert_fsck_clean(data)

        # 5. Full again, then the server dies (kill -9), then full again and a clean stop (SQLite
        # removes its log files on close and needs room to make them again): each time it
        # starts, gives the reserve back at once, and DELETE works.
        for round_, how in enumerate(("kill -9", "clean stop"), 2):
            fill(disk, f"filler-{round_}")
            if how == "kill -9":
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait()
            else:
                server.stop()
            assert (data / RESERVE_FILE).exists() and free(disk) < 64 << 10
            server = start(data)
            async with aiohttp.ClientSession() as session:
                c = Client(session, server.url)
                assert not (data / RESERVE_FILE).exists()
                gone = list(acked)[:4]
                for fid in gone:
                    assert await c.status_of("DELETE", f"{c.files}/{fid}") == 200
                    del acked[fid]
                figures.append(f"full, {how}, restart: reserve released at start, 4 DELETEs 200")
                await check_acked(c, acked)
                await assert_fsck_clean(data)
                await recover(c, data, note)
                assert (await c.upload(b"after the " + how.encode()))[0] == 200
                await check_acked(c, acked)
        for fid in doomed:
            async with aiohttp.ClientSession() as session:
                c = Client(session, server.url)
                assert await c.status_of("GET", f"{c.files}/{fid}") == 404
    finally:
        server.stop()
        print("\nfull-disk figures:\n  " + "\n  ".join(figures))
