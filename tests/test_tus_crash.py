"""tus uploads against a real ``filesvc serve``: a PATCH cut off mid-body keeps exactly the bytes
that arrived (the next HEAD says so), and kill -9 at any moment of a tus upload loses no
acknowledged offset; the store is clean (fsck) right after the kill."""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server

pytestmark = pytest.mark.slow

BLOBSTORE = Path(sys.executable).parent / "blobstore"
UPLOADS = f"{PREFIX}/companies/acme/uploads"
FILES = f"{PREFIX}/companies/acme/files"
TUS = {"Tus-Resumable": "1.0.0", **bearer(token())}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
PIECE = 64 << 10


async def _offset(session: aiohttp.ClientSession, url: str) -> int:
    async with session.head(url, headers=TUS) as resp:
        assert resp.status == 200
        return int(resp.headers["Upload-Offset"])


async def _create(session: aiohttp.ClientSession, base: str, length: int) -> str:
    async with session.post(base + UPLOADS, headers={**TUS, "Upload-Length": str(length)}) as r:
        assert r.status == 201
        return base + r.headers["Location"]


def test_a_cut_patch_keeps_exactly_the_bytes_received(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        asyncio.run(_cut_patch(server))
    finally:
        server.stop()


async def _cut_patch(server: ServerProcess) -> None:
    data = random.Random(5).randbytes(1 << 20)
    async with aiohttp.ClientSession() as session:
        url = await _create(session, server.url, len(data))
        sent = 300_001
        path = url[len(server.url) :]
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in {**PATCH, "Upload-Offset": "0"}.items())
            + "\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + data[:sent])
            await asyncio.sleep(0.3)
        # the server notices the cut, stores what arrived and only then lets HEAD answer
        for _ in range(50):
            if await _offset(session, url) == sent:
                break
            await asyncio.sleep(0.1)
        assert await _offset(session, url) == sent
        async with session.patch(
            url, data=io.BytesIO(data[sent:]), headers={**PATCH, "Upload-Offset": str(sent)}
        ) as resp:
            assert resp.status == 204
        file_id = url.rsplit("/", 1)[1]
        async with session.get(f"{server.url}{FILES}/{file_id}/download", headers=TUS) as resp:
            assert await resp.read() == data


async def _slow(data: bytes, started: asyncio.Event) -> AsyncIterator[bytes]:
    for i in range(0, len(data), PIECE):
        if i >= len(data) // 2:
            started.set()
        yield data[i : i + PIECE]
        await asyncio.sleep(0.01)


def fsck_clean(data_dir: Path) -> None:
    done = subprocess.run(
        [str(BLOBSTORE), "fsck", "--data-dir", str(data_dir), "--full", "--json"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    findings = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    assert done.returncode == 0, findings


@pytest.mark.parametrize("moment", ["mid-patch", "after-ack", "mid-creation"])
def test_kill_9_loses_no_acknowledged_offset(tmp_path: Path, moment: str) -> None:
    asyncio.run(_kill_round(tmp_path / "data", moment))


async def _kill_round(data_dir: Path, moment: str) -> None:
    data = random.Random(moment).randbytes(3 << 20)
    chunk = 512 << 10
    server = start_server(data_dir)
    acked = 0
    url = ""
    try:
        async with aiohttp.ClientSession() as session:
            if moment == "mid-creation":
                started = asyncio.Event()
                post = session.post(
                    server.url + UPLOADS,
                    data=_slow(data, started),
                    headers={**PATCH, "Upload-Length": str(len(data))},
                )
                task = asyncio.ensure_future(post)
                await asyncio.wait_for(started.wait(), 30)
                server.proc.send_signal(signal.SIGKILL)
                with pytest.raises(aiohttp.ClientError):
                    await task
            else:
                url = await _create(session, server.url, len(data))
                for start in range(0, len(data) - chunk, chunk):
                    part = data[start : start + chunk]
                    async with session.patch(
                        url, data=io.BytesIO(part), headers={**PATCH, "Upload-Offset": str(start)}
                    ) as resp:
                        assert resp.status == 204
                        acked = int(resp.headers["Upload-Offset"])
                    if acked >= len(data) // 2:
                        break
                if moment == "after-ack":
                    server.proc.send_signal(signal.SIGKILL)
                else:
                    started = asyncio.Event()
                    patch = session.patch(
                        url,
                        data=_slow(data[acked:], started),
                        headers={**PATCH, "Upload-Offset": str(acked)},
                    )
                    task = asyncio.ensure_future(patch)
                    await asyncio.wait_for(started.wait(), 30)
                    server.proc.send_signal(signal.SIGKILL)
                    with pytest.raises(aiohttp.ClientError):
                        await task
        server.proc.wait(30)
        fsck_clean(data_dir)
    finally:
        server.stop()
    if not url:
        return  # a creation killed mid-body was never acknowledged: nothing to keep
    server = start_server(data_dir)
    try:
        async with aiohttp.ClientSession() as session:
            path = url[url.index(PREFIX) :]
            live = server.url + path
            offset = await _offset(session, live)
            assert offset >= acked
            async with session.patch(
                live,
                data=io.BytesIO(data[offset:]),
                headers={**PATCH, "Upload-Offset": str(offset)},
            ) as resp:
                assert resp.status == 204
            file_id = path.rsplit("/", 1)[1]
            async with session.get(f"{server.url}{FILES}/{file_id}/download", headers=TUS) as r:
                assert await r.read() == data
    finally:
        server.stop()
