"""End-to-end tests against the real server process: memory stays flat while a large upload
streams in and out (local blobs, and S3 through multipart staging) and a restarted server serves
what the first one stored, client aborts leave nothing behind, SIGTERM drains uploads in
flight."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import xxhash

from tests.deployments import s3_env
from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server

MiB = 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("blobs", "total"),
    # On S3, 256 MiB is 32 multipart parts of 8 MiB: well past what one part or two would hold.
    [("local", 1024 * MiB), ("s3", 256 * MiB)],
)
async def test_large_upload_keeps_rss_flat_and_is_served_after_a_restart(
    tmp_path: Path, request: pytest.FixtureRequest, blobs: str, total: int
) -> None:
    env: dict[str, str] = {}
    if blobs == "s3":
        env = s3_env(request.getfixturevalue("seaweedfs"), request.getfixturevalue("s3_location"))
    server = await asyncio.to_thread(start_server, tmp_path / "data", env=env)
    block = os.urandom(MiB)
    sent = xxhash.xxh3_128()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // MiB):
            sent.update(block)
            yield block

    files = f"{server.url}{PREFIX}/companies/acme/files"
    headers = {**bearer(token()), "Content-Type": "application/octet-stream"}
    try:
        baseline = await asyncio.to_thread(
            lambda: psutil.Process(server.proc.pid).memory_info().rss
        )
        async with aiohttp.ClientSession() as session:
            with RssSampler(server.proc.pid) as rss:
                async with session.post(
                    files, params={"filename": "big.bin"}, data=body(), headers=headers
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    fid = (await resp.json())["resource"]["id"]
                got = xxhash.xxh3_128()
                size = 0
                url = f"{files}/{fid}/download"
                async with session.get(url, headers=bearer(token())) as resp:
                    assert resp.status == 200
                    async for piece in resp.content.iter_chunked(4 * MiB):
                        got.update(piece)
                        size += len(piece)
        assert size == total and got.digest() == sent.digest()
        growth = max(rss.samples) - baseline
        assert growth < 64 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB"
    finally:
        await asyncio.to_thread(server.stop)

    again = await asyncio.to_thread(start_server, server.data_dir, env=env)
    try:
        start = 100 * MiB + 7
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{again.url}{PREFIX}/companies/acme/files/{fid}/download",
                headers={**bearer(token()), "Range": f"bytes={start}-{start + 99}"},
            ) as resp,
        ):
            assert resp.status == 206
            assert await resp.read() == (block * 2)[start % MiB : start % MiB + 100]
    finally:
        await asyncio.to_thread(again.stop)


async def test_client_abort_mid_upload_leaves_nothing(server: ServerProcess) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST {PREFIX}/companies/acme/files?filename=cut.bin HTTP/1.1\r\n"
        f"Host: x\r\nAuthorization: Bearer {token()}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n"
    )
    writer.write(head.encode() + os.urandom(3 * MiB))
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    tmp = server.data_dir / "blobs" / "tmp"
    for _ in range(100):
        leftover = await asyncio.to_thread(lambda: os.listdir(tmp))
        if not leftover:
            break
        await asyncio.sleep(0.05)
    assert leftover == []
    blobs = await asyncio.to_thread(
        lambda: [p for p in (server.data_dir / "blobs").rglob("xxh3_128-*")]
    )
    assert blobs == []


async def test_sigterm_drains_an_upload_in_flight(server: ServerProcess) -> None:
    files = f"{server.url}{PREFIX}/companies/acme/files"
    started = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        for i in range(20):
            if i == 2:
                started.set()
            yield b"s" * 100_000
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession() as session:
        upload = asyncio.create_task(
            session.post(
                files,
                params={"filename": "slow.bin"},
                data=slow_body(),
                headers={**bearer(token()), "Content-Type": "application/octet-stream"},
            )
        )
        await started.wait()
        server.proc.send_signal(signal.SIGTERM)
        resp = await upload
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["resource"]["upload_data"]["size"] == 2_000_000
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
