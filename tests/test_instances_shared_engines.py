"""Two instances of ``filesvc serve``, each on its own data directory, pointed at the same
PostgreSQL and the same S3 bucket, behave as one service: the chunks of one file go through
either, metadata and bytes come from either, each thumbnail is made once (by whichever instance
leased the job), and a file deleted through one is gone through the other."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.pgserver import PgServer
from bench.seaweedfs import SeaweedFS
from blobstore.s3 import S3Location
from tests.deployments import scaled_env, wait_ready
from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server
from tests.thumbnail_media import solid

HEADERS = bearer(token())
FILES = f"{PREFIX}/companies/acme/files"
MiB = 1 << 20


@pytest.fixture
async def pair(
    tmp_path: Path, pg_server: PgServer, seaweedfs: SeaweedFS, s3_location: S3Location
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    env = {**scaled_env(pg_server, seaweedfs, s3_location), "FILESVC_THUMB_WORKERS": "1"}
    a, b = await asyncio.gather(
        asyncio.to_thread(start_server, tmp_path / "a", env=env),
        asyncio.to_thread(start_server, tmp_path / "b", env=env),
    )
    try:
        await asyncio.gather(wait_ready(a.url), wait_ready(b.url))
        yield a, b
    finally:
        await asyncio.gather(asyncio.to_thread(a.stop), asyncio.to_thread(b.stop))


async def resource(s: aiohttp.ClientSession, server: ServerProcess, file_id: str) -> Any:
    async with s.get(f"{server.url}{FILES}/{file_id}", headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["resource"]


async def body_of(s: aiohttp.ClientSession, url: str) -> bytes:
    async with s.get(url, headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def jobs_finished(s: aiohttp.ClientSession, server: ServerProcess) -> float:
    """The thumbnail jobs this instance ran, whatever their outcome."""
    async with s.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "filesvc_thumbnail_jobs"
        for sample in family.samples
        if sample.name == "filesvc_thumbnail_jobs_total"
    )


async def test_two_instances_on_shared_engines_are_one_service(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    # 9 MiB takes the S3 multipart path, the others the one-PUT path.
    chunks = [os.urandom(9 * MiB), os.urandom(MiB), os.urandom(100_000)]
    total = sum(len(c) for c in chunks)
    params = {"filename": "split.bin", "total_chunks": "3", "total_size": str(total)}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{a.url}{FILES}", params=params, headers=HEADERS) as resp:
            assert resp.status == 200, await resp.text()
            file_id = (await resp.json())["resource"]["id"]

        async def send(server: ServerProcess, number: int) -> None:
            q = {**params, "chunk_number": str(number)}
            headers = {**HEADERS, "Content-Type": "application/octet-stream"}
            url = f"{server.url}{FILES}/{file_id}"
            async with s.post(
                url, params=q, data=io.BytesIO(chunks[number - 1]), headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()

        await send(b, 1)
        await asyncio.gather(send(a, 2), send(b, 3))
        for _ in range(600):  # the file's thumbnail job settles it (not an image: no thumbnail)
            seen_a = await resource(s, a, file_id)
            if seen_a["metadata"]["thumbnails_status"] != "waiting":
                break
            await asyncio.sleep(0.1)
        assert seen_a == await resource(s, b, file_id)
        assert seen_a["upload_data"] == {
            "size": total,
            "chunks": 3,
            "uploaded_size": total,
            "uploaded_chunks": 3,
            "complete": True,
        }
        for server in (a, b):
            assert await body_of(s, f"{server.url}{FILES}/{file_id}/download") == b"".join(chunks)

        # Images uploaded through both: each thumbnail job is run once, by one of them.
        images = [solid(300 + 10 * i, 200, (i * 40, 90, 200)).pngsave_buffer() for i in range(4)]
        ids = []
        for i, image in enumerate(images):
            form = aiohttp.FormData()
            form.add_field("file", image, filename=f"p{i}.png", content_type="image/png")
            async with s.post(f"{(a, b)[i % 2].url}{FILES}", data=form, headers=HEADERS) as resp:
                assert resp.status == 200, await resp.text()
                ids.append((await resp.json())["resource"]["id"])
        for n, image_id in enumerate(ids):
            other = (b, a)[n % 2]
            for _ in range(600):  # a loaded machine starts thumbnail workers slowly
                meta = await resource(s, other, image_id)
                if meta["metadata"]["thumbnails_status"] != "waiting":
                    break
                await asyncio.sleep(0.1)
            assert meta["metadata"]["thumbnails_status"] == "done", meta["metadata"]
            assert len(meta["thumbnails"]) == 1
            url = f"{FILES}/{image_id}/thumbnails/0"
            assert await body_of(s, a.url + url) == await body_of(s, b.url + url)
        # A job is counted just after its result commits: wait for the count to reach them all.
        for _ in range(300):
            ran = await jobs_finished(s, a) + await jobs_finished(s, b)
            if ran >= len(images):
                break
            await asyncio.sleep(0.1)
        assert ran == len(images)

        # Deleted through one: gone through the other, metadata and bytes.
        async with s.delete(f"{b.url}{FILES}/{file_id}", headers=HEADERS) as resp:
            assert resp.status == 200, await resp.text()
        for server in (a, b):
            for path in ("", "/download"):
                async with s.get(f"{server.url}{FILES}/{file_id}{path}", headers=HEADERS) as resp:
                    assert resp.status == 404, await resp.text()
