"""The S3 engine lost while serving: 503 with Retry-After and the envelope, nothing
half-committed, metadata still served, and service resumes when the engine returns."""

from __future__ import annotations

import io
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bench.seaweedfs import KEY_ID, REGION, SECRET_KEY, SeaweedFS, start_seaweedfs
from blobstore.s3 import RETRY_AFTER_S, S3Location
from filesvc import repo
from filesvc.app import create_app
from filesvc.appkeys import DATABASE
from filesvc.settings import Settings
from tests.helpers import SECRET, Api, error_of

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
    resp = await api.download(first["id"])
    assert await error_of(resp) == UNAVAILABLE
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
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
