"""The S3 engine lost while serving (between requests, and in the middle of a large upload's
multipart stream), and not there at all when the server starts: 503 with Retry-After and the
envelope, /readyz not ready, nothing half-committed, metadata still served, and service resumes
when the engine returns, with no restart."""

from __future__ import annotations

import asyncio
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bench.seaweedfs import KEY_ID, REGION, SECRET_KEY, SeaweedFS, start_seaweedfs
from blobstore.s3 import PART_SIZE, RETRY_AFTER_S, S3Location
from filesvc import repo
from filesvc.app import create_app
from filesvc.appkeys import DATABASE
from filesvc.settings import Settings
from tests.deployments import wait_ready
from tests.helpers import PREFIX, SECRET, Api, bearer, error_of, token
from tests.server_proc import start_server

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
UNAVAILABLE = (503, "the file store is unavailable; retry later")


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own, since the test stops and restarts it."""
    server = start_seaweedfs(tmp_path / "engine", ["lost"])
    yield server
    server.stop()


async def count_files(api: Api) -> int:
    app = api.client.app
    assert app is not None
    async with app[DATABASE].read() as tx:
        return await repo.count(tx)


async def test_engine_lost_then_back(
    weed: SeaweedFS, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    location = S3Location("lost", weed.endpoint, REGION, KEY_ID, SECRET_KEY)
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=SECRET, blob=location)
    api = Api(await aiohttp_client(create_app(settings)))
    small, large = b"kept bytes", os.urandom(12 << 20)
    first = await api.upload(small)
    resp = await api.client.post(
        api.files(),
        data=io.BytesIO(large),
        params={"filename": "large"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert resp.status == 200
    second = (await resp.json())["resource"]

    weed.stop()
    resp = await api.client.post(api.files(), data=b"x" * 1000, headers=api.headers())
    assert await error_of(resp) == UNAVAILABLE
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
    resp = await api.client.post(
        api.files(),
        data=io.BytesIO(os.urandom(10 << 20)),
        params={"filename": "big"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert await error_of(resp) == UNAVAILABLE
    resp = await api.download(second["id"])
    assert await error_of(resp) == UNAVAILABLE
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
    # A small blob this server uploaded is in its memory (FILESVC_BLOB_CACHE_BYTES): still
    # served, the right bytes, since the manifest that names it is in the database.
    assert await api.content(first["id"]) == small
    assert (await api.meta(first["id"])).status == 200
    assert await count_files(api) == 2  # nothing half-committed
    ready = await api.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["blob_store"] == {
        "ok": False,
        "reason": "the blob store does not answer",
    }

    weed.start()
    assert (await api.client.get("/readyz")).status == 200
    third = await api.upload(b"after the engine came back")
    assert await api.content(first["id"]) == small
    assert await api.content(second["id"]) == large
    assert await api.content(third["id"]) == b"after the engine came back"
    assert await count_files(api) == 3


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_engine_lost_in_the_middle_of_a_large_upload(
    weed: SeaweedFS, tmp_path: Path, aiohttp_client: ClientFactory, framing: str
) -> None:
    """Chunked, the body streams to the engine as a multipart upload; with its length known,
    as one PUT.  Either way: 503, nothing half-committed, and uploads work again after."""
    location = S3Location("lost", weed.endpoint, REGION, KEY_ID, SECRET_KEY)
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=SECRET, blob=location)
    api = Api(await aiohttp_client(create_app(settings)))
    kept = await api.upload(b"before")
    head, tail = os.urandom(PART_SIZE + (1 << 20)), os.urandom(4 << 20)
    length = {"Content-Length": str(len(head) + len(tail))} if framing == "length" else {}
    past_a_part = asyncio.Event()
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(head), 1 << 20):
            yield head[i : i + (1 << 20)]
        past_a_part.set()  # the upload to a staging key is under way
        await go_on.wait()
        yield tail

    sending = asyncio.create_task(
        api.client.post(
            api.files(),
            data=body(),
            params={"filename": "cut.bin"},
            headers=api.headers(**{"Content-Type": "application/octet-stream", **length}),
        )
    )
    await past_a_part.wait()
    await asyncio.sleep(0.2)  # let the first part reach the engine
    await asyncio.to_thread(weed.stop)
    go_on.set()
    resp = await sending
    assert await error_of(resp) == UNAVAILABLE
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert await count_files(api) == 1  # nothing half-committed

    await asyncio.to_thread(weed.start)
    again = await api.client.post(
        api.files(),
        data=io.BytesIO(head + tail),
        params={"filename": "again.bin"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert again.status == 200, await again.text()
    assert await api.content((await again.json())["resource"]["id"]) == head + tail
    assert await api.content(kept["id"]) == b"before"


def _get(url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our test server
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


async def test_engine_unreachable_at_start_is_waited_for_while_not_ready(
    weed: SeaweedFS, tmp_path: Path
) -> None:
    await asyncio.to_thread(weed.stop)
    env = {**weed.env, "FILESVC_BLOB_URL": weed.url("lost")}
    server = await asyncio.to_thread(start_server, tmp_path / "data", env=env)
    try:
        status, body, _ = await asyncio.to_thread(_get, f"{server.url}/readyz")
        assert status == 503 and body["status"] == "not ready"
        assert body["checks"]["blob_store"] == {
            "ok": False,
            "reason": "the blob store does not answer",
        }
        assert (await asyncio.to_thread(_get, f"{server.url}/healthz"))[0] == 200
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                f"{server.url}{PREFIX}/companies/acme/files",
                data=b"x" * 1000,
                headers={**bearer(token()), "Content-Type": "application/octet-stream"},
            )
            assert await error_of(resp) == UNAVAILABLE
            assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)

            await asyncio.to_thread(weed.start)
            await wait_ready(server.url, timeout=30)
            form = aiohttp.FormData()
            form.add_field("file", b"after the engine came", filename="a.bin")
            url = f"{server.url}{PREFIX}/companies/acme/files"
            async with session.post(url, data=form, headers=bearer(token())) as resp:
                assert resp.status == 200, await resp.text()
                file_id = (await resp.json())["resource"]["id"]
            async with session.get(f"{url}/{file_id}/download", headers=bearer(token())) as resp:
                assert await resp.read() == b"after the engine came"
        assert server.proc.poll() is None
    finally:
        await asyncio.to_thread(server.stop)
