"""Shared fixtures: an app on a temp data dir, tokens, and a guard against loop blocking."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

from blobstore.port import BlobBackend
from filesvc.app import create_app
from filesvc.auth import mint
from filesvc.settings import Settings
from filesvc.thumbnails.jobs import Renderer
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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        max_upload_bytes=64 << 20,
        body_idle_timeout=1.0,
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
