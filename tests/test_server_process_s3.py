"""The real `filesvc serve` process with its blobs in S3 (a real SeaweedFS): a large upload
streams through multipart staging with the server's memory flat, downloads (whole and ranged)
are byte-identical, and a restarted server serves what the first one stored."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import xxhash

from blobstore.s3 import S3Location
from tests.helpers import PREFIX, bearer, token
from tests.seaweedfs import SeaweedFS
from tests.server_proc import ServerProcess, start_server
from tests.test_server_process import RssSampler

MiB = 1 << 20
TOTAL = 256 * MiB  # 32 parts of 8 MiB: well past what one part or two would hold


def s3_env(seaweedfs: SeaweedFS, loc: S3Location) -> dict[str, str]:
    url = f"s3://{loc.bucket}/{loc.prefix.rstrip('/')}?endpoint={loc.endpoint}&region={loc.region}"
    return {**seaweedfs.env, "FILESVC_BLOB_URL": url}


@pytest.fixture
def server(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_location: S3Location
) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data", env=s3_env(seaweedfs, s3_location))
    yield srv
    srv.stop()


@pytest.mark.slow
async def test_large_upload_to_s3_keeps_rss_flat_and_survives_a_restart(
    server: ServerProcess, seaweedfs: SeaweedFS, s3_location: S3Location
) -> None:
    block = os.urandom(MiB)
    sent = xxhash.xxh3_128()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(TOTAL // MiB):
            sent.update(block)
            yield block

    files = f"{server.url}{PREFIX}/companies/acme/files"
    headers = {**bearer(token()), "Content-Type": "application/octet-stream"}
    baseline = await asyncio.to_thread(lambda: psutil.Process(server.proc.pid).memory_info().rss)
    async with aiohttp.ClientSession() as session:
        with RssSampler(server.proc.pid) as rss:
            async with session.post(
                files, params={"filename": "big.bin"}, data=body(), headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
                fid = (await resp.json())["resource"]["id"]
            got = xxhash.xxh3_128()
            size = 0
            async with session.get(f"{files}/{fid}/download", headers=bearer(token())) as resp:
                assert resp.status == 200
                async for piece in resp.content.iter_chunked(4 * MiB):
                    got.update(piece)
                    size += len(piece)
    assert size == TOTAL and got.digest() == sent.digest()
    growth = max(rss.samples) - baseline
    assert growth < 64 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB"

    server.stop()
    again = start_server(server.data_dir, env=s3_env(seaweedfs, s3_location))
    try:
        url = f"{again.url}{PREFIX}/companies/acme/files/{fid}/download"
        start = 100 * MiB + 7
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                url, headers={**bearer(token()), "Range": f"bytes={start}-{start + 99}"}
            ) as resp,
        ):
            assert resp.status == 206
            assert await resp.read() == (block * 2)[start % MiB : start % MiB + 100]
    finally:
        again.stop()
