"""Shared fixtures: an app on a temp data dir, tokens, and a guard against loop blocking."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

from bench.pgserver import PgServer, remove, start_postgres
from bench.seaweedfs import KEY_ID, REGION, SECRET_KEY, SeaweedFS, start_seaweedfs
from blobstore.port import BlobBackend
from blobstore.s3 import S3Backend, S3Location
from filesvc.app import create_app
from filesvc.appkeys import READY
from filesvc.auth import mint
from filesvc.setting_defaults import DEFAULT_INLINE_MAX
from filesvc.settings import Settings
from filesvc.thumbnails.jobs import Renderer
from tests.helpers import SECRET, Api

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
        # The one blocking call allowed on the loop: SQLite's bounded inline reads (a statement
        # over its step budget is interrupted and goes to a thread; see Database.query).
        for name in ("sqlite3.Connection.execute", "sqlite3.Cursor.fetchall"):
            bb.functions[name].can_block_in("blobstore/engine/sqlite.py", "_query_inline")
        yield bb


ENGINES = ("sqlite", "postgresql")


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


@pytest.fixture
async def s3_backend(s3_location: S3Location) -> AsyncIterator[S3Backend]:
    """An S3 backend on a fresh corner of the test bucket, closed after the test."""
    chosen = S3Backend(s3_location)
    yield chosen
    await chosen.close()


# The HTTP suite runs on the two configurations the service is deployed in: the embedded
# default (SQLite, local blobs) and the scaled-out one (PostgreSQL, S3).  The rest of the suite
# uses the engine fixture on both engines with local blobs (crash, fsck, gc on a data
# directory: the embedded default).
HTTP_SUITE_BACKENDS = ["local", "s3"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``sqlite_only`` keeps a test on the embedded engine (it opens the SQLite file itself);
    ``local_blobs`` keeps it on the local blob backend (it breaks it on purpose)."""
    names = metafunc.fixturenames
    engines = list(ENGINES)
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        engines = engines[:1]
    blobs = list(HTTP_SUITE_BACKENDS)
    if metafunc.definition.get_closest_marker("local_blobs") is not None:
        blobs = blobs[:1]
    http_suite = metafunc.module.__name__.startswith(("tests.test_api_", "tests.test_tus_"))
    if "engine" in names and "blob_kind" in names and http_suite:
        pairs = (
            list(zip(engines, blobs, strict=True))
            if len(engines) == len(blobs)
            else [(e, b) for e in engines for b in blobs]
        )
        metafunc.parametrize(
            ("engine", "blob_kind"), pairs, indirect=True, ids=[f"{e}-{b}" for e, b in pairs]
        )
    elif "engine" in names:
        metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL for the whole session, started on first use."""
    server = start_postgres()
    try:
        yield server
    finally:
        remove(server)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str | None:
    """The metadata engine's URL for this test: None (SQLite in the data dir), or a freshly
    emptied database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: PgServer = request.getfixturevalue("pg_server")
    return server.fresh_shared_database()


@pytest.fixture
def blob_kind(request: pytest.FixtureRequest) -> str:
    """Which blob backend the app under test uses: ``local`` unless parametrized."""
    return str(getattr(request, "param", "local"))


# A test that uploads with thumbnail_sync=1 asserts on the thumbnails, not on the wait's cap
# (test_api_thumbnails covers the cap): the wait still ends when the job does, but a loaded CI
# machine (a first render starts a worker process and loads libvips) may pass the default 10 s.
# Under the 300 s test timeout, so that a job that never ends fails on its status.
THUMB_SYNC_WAIT_S = 240.0


@pytest.fixture
def settings(
    tmp_path: Path, engine: str | None, blob_kind: str, request: pytest.FixtureRequest
) -> Settings:
    blob = request.getfixturevalue("s3_location") if blob_kind == "s3" else None
    # A test that reaches into stored blobs keeps them all in the blob store; every other test
    # runs the default, small blobs kept inline in the metadata database.
    inline_max = 0 if request.node.get_closest_marker("blob_files") else DEFAULT_INLINE_MAX
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        max_upload_bytes=64 << 20,
        body_idle_timeout=1.0,
        db_url=engine,
        # No preallocated reserve in each of the many test apps (the full-disk tests set one).
        disk_reserve_bytes=0,
        blob=blob,
        thumb_sync_timeout=THUMB_SYNC_WAIT_S,
        inline_max=inline_max,
    )


AppFactory = Callable[..., Awaitable[Api]]
# How long make_api waits for the app to report ready before handing it over anyway.
READY_WAIT_S = 10.0


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
        api = Api(await aiohttp_client(app))
        # PostgreSQL is connected (and migrated) in the background after start.  An app that
        # cannot get ready (an engine down on purpose) is handed over after the same wait.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app[READY].wait(), READY_WAIT_S)
        return api

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
