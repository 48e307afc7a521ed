"""Shared fixtures: an app on a temp data dir, tokens, and a guard against loop blocking."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

from bench.pgserver import PgServer, remove, start_postgres
from blobstore.port import BlobBackend
from filesvc.app import create_app
from filesvc.auth import mint
from filesvc.settings import Settings
from filesvc.thumbjobs import Renderer
from tests.helpers import SECRET, Api


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


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use the ``engine`` fixture (through ``settings``, ``api``...) run on both
    metadata engines, unless marked ``sqlite_only`` (they open the SQLite file themselves)."""
    if "engine" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    metafunc.parametrize("engine", ENGINES[:1] if only else ENGINES, indirect=True)


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
    """The metadata engine's URL for this test: None (SQLite in the data dir), or a fresh
    database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: PgServer = request.getfixturevalue("pg_server")
    return server.fresh_shared_database()


@pytest.fixture
def settings(tmp_path: Path, engine: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        max_upload_bytes=64 << 20,
        body_idle_timeout=1.0,
        db_url=engine,
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
        api = Api(await aiohttp_client(app))
        # PostgreSQL is connected (and migrated) in the background after start.
        for _ in range(200):
            if (await api.client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.05)
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
