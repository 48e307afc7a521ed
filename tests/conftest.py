"""Shared fixtures: an app on a temp data dir, tokens, and a guard against loop blocking."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

from blobstore.port import BlobBackend
from blobstore.s3 import S3Location
from filesvc.app import create_app
from filesvc.auth import mint
from filesvc.settings import Settings
from filesvc.thumbjobs import Renderer
from tests.helpers import SECRET, Api
from tests.seaweedfs import KEY_ID, REGION, SECRET_KEY, SeaweedFS, start_seaweedfs

S3_BUCKET = "filesvc-test"


def pytest_report_header() -> list[str]:
    import aiohttp
    import pyvips

    return [
        f"SQLite {sqlite3.sqlite_version}, aiohttp {aiohttp.__version__}, "
        f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    ]


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose service code makes a blocking call on the event loop."""
    with blockbuster_ctx(["filesvc", "blobstore"]) as bb:
        yield bb


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real SeaweedFS for the whole run (it starts in about a second); each test isolates
    itself under its own key prefix."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), [S3_BUCKET])
    yield server
    server.stop()


@pytest.fixture
def s3_location(seaweedfs: SeaweedFS) -> S3Location:
    """A fresh, empty corner of the test bucket."""
    return S3Location(
        bucket=S3_BUCKET,
        endpoint=seaweedfs.endpoint,
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET_KEY,
        prefix=f"t-{uuid.uuid4().hex}/",
    )


# The HTTP suite runs on each blob backend the service can be configured with; the rest of
# the suite (crash, fsck, gc on a data directory) on the embedded default.
HTTP_SUITE_BACKENDS = ["local", "s3"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        metafunc.module.__name__.startswith("tests.test_api_")
        and "blob_kind" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("local_blobs") is None
    ):
        metafunc.parametrize("blob_kind", HTTP_SUITE_BACKENDS, indirect=True)


@pytest.fixture
def blob_kind(request: pytest.FixtureRequest) -> str:
    """Which blob backend the app under test uses: ``local`` unless parametrized."""
    return str(getattr(request, "param", "local"))


@pytest.fixture
def settings(tmp_path: Path, blob_kind: str, request: pytest.FixtureRequest) -> Settings:
    blob = request.getfixturevalue("s3_location") if blob_kind == "s3" else None
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        max_upload_bytes=64 << 20,
        body_idle_timeout=1.0,
        # No preallocated reserve in each of the many test apps (the full-disk tests set one).
        disk_reserve_bytes=0,
        blob=blob,
    )


AppFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(
    aiohttp_client: Callable[
        [web.Application], Awaitable[TestClient[web.Request, web.Application]]
    ],
    settings: Settings,
) -> AsyncIterator[AppFactory]:
    async def factory(
        *,
        settings_: Settings | None = None,
        backend: BlobBackend | None = None,
        renderer: Renderer | None = None,
    ) -> Api:
        app = create_app(settings_ or settings, backend=backend, renderer=renderer)
        return Api(await aiohttp_client(app))

    yield factory


@pytest.fixture
async def api(make_api: AppFactory) -> Api:
    return await make_api()


@pytest.fixture
def user_token() -> str:
    return mint(SECRET, company="acme", user="alice")


@pytest.fixture
def app_token() -> str:
    return mint(SECRET, company="acme", app="sync-bot")
