"""``/readyz``: named checks, no token, no tenant data; 503 naming the disk when space is low."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from filesvc.app import create_app
from filesvc.settings import Settings
from filesvc.space import RESERVE_FILE
from tests.helpers import SECRET, Api


async def test_ready_without_a_token(api: Api) -> None:
    resp = await api.client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"database": "ok", "disk": "ok"}}
    assert (await api.client.get("/health")).status == 200


async def test_low_space_is_503_naming_the_disk_and_uploads_are_507(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    # A floor above any disk's free space: the state of a full disk, without filling one.
    starved = Settings(data_dir=tmp_path / "d", jwt_secret=SECRET, min_free_bytes=1 << 62)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(starved))
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
    assert body["checks"]["disk"].startswith("free space is below the floor")
    # The reserve is never made when there is no room for it.
    assert not (tmp_path / "d" / RESERVE_FILE).exists()
    api = Api(client)
    resp = await client.post(api.files(), headers=api.headers())
    assert resp.status == 507
    assert (await resp.json())["message"].startswith("the file store is full")


def test_space_settings_from_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "FILESVC_JWT_SECRET": SECRET,
            "FILESVC_MIN_FREE_BYTES": "123",
            "FILESVC_DISK_RESERVE_BYTES": "0",
            "FILESVC_METRICS_TOKEN": "m-token",
        },
        data_dir=tmp_path,
    )
    assert (settings.min_free_bytes, settings.disk_reserve_bytes) == (123, 0)
    assert settings.metrics_token == "m-token" and "m-token" not in repr(settings)
    defaults = Settings.from_env({"FILESVC_JWT_SECRET": SECRET}, data_dir=tmp_path)
    assert defaults.min_free_bytes == 256 << 20 and defaults.disk_reserve_bytes == 16 << 20
    assert defaults.metrics_token is None
    for key in ("FILESVC_MIN_FREE_BYTES", "FILESVC_DISK_RESERVE_BYTES"):
        with pytest.raises(SystemExit, match=f"{key} must be a byte count of 0 or more, got -1"):
            Settings.from_env({"FILESVC_JWT_SECRET": SECRET, key: "-1"}, data_dir=tmp_path)
