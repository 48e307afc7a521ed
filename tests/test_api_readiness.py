"""``/readyz``: named checks, no token, no tenant data; 503 naming the disk when space is low."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from blobstore.errors import StoreFull
from filesvc.app import create_app
from filesvc.appkeys import SERVICE, SPACE
from filesvc.settings import ConfigError, Settings
from filesvc.space import RESERVE_FILE
from tests.helpers import SECRET, Api, error_of


async def test_ready_without_a_token(api: Api) -> None:
    resp = await api.client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True},
            "blob_store": {"ok": True},
            "data_dir_writable": {"ok": True},
            "disk": {"ok": True},
            "thumbnail_workers": {"ok": True},
        },
    }
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
    assert body["status"] == "not ready" and body["checks"]["database"] == {"ok": True}
    assert body["checks"]["disk"] == {
        "ok": False,
        "reason": "free space is below the floor: uploads are refused until space is freed",
    }
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
        with pytest.raises(
            ConfigError,
            match=f"{key} \\(environment\\) must be from 0 to 9223372036854775807, got -1",
        ):
            Settings.from_env({"FILESVC_JWT_SECRET": SECRET, key: "-1"}, data_dir=tmp_path)


async def test_delete_meeting_a_full_database_releases_the_reserve_and_commits(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk filled since the last sample: the first commit fails for lack of space, the
    reserve is given back, and the same DELETE commits (one retry, not a 507)."""
    held = Settings(data_dir=tmp_path / "d", jwt_secret=SECRET, disk_reserve_bytes=1 << 20)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(held))
    api = Api(client)
    fid = (await api.upload(b"doomed"))["id"]
    reserve = tmp_path / "d" / RESERVE_FILE
    assert reserve.exists()
    service = client.app[SERVICE]
    real_delete = service.delete
    attempts: list[bool] = []

    space = client.app[SPACE]

    async def delete(company: str, file_id: str) -> None:
        attempts.append(space.state.reserve_held)
        if space.state.reserve_held:
            raise StoreFull("no space left for the metadata database")
        await real_delete(company, file_id)

    monkeypatch.setattr(service, "delete", delete)
    resp = await client.delete(f"{api.files()}/{fid}", headers=api.headers())
    assert resp.status == 200, await resp.text()
    assert attempts == [True, False] and not reserve.exists()
    assert (await api.meta(fid)).status == 404
    # With no reserve left to give, the next such failure is a 507.
    monkeypatch.setattr(service, "delete", _always_full)
    other = (await api.upload(b"kept"))["id"]
    resp = await client.delete(f"{api.files()}/{other}", headers=api.headers())
    assert await error_of(resp) == (
        507,
        "the file store is full: nothing was saved; retry once space is freed",
    )


async def _always_full(company: str, file_id: str) -> None:
    raise StoreFull("no space left for the metadata database")
