"""/healthz, /readyz and the /health alias: no token, no tenant data, named checks."""

from __future__ import annotations

from pathlib import Path

from blobstore.errors import StorageFailure
from blobstore.memory import MemoryBackend
from blobstore.refs import BlobRef
from filesvc.appkeys import DATABASE, THUMBS
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import Api

CHECK_NAMES = {"database", "blob_store", "data_dir_writable", "disk", "thumbnail_workers"}


class UnreachableStore(MemoryBackend):
    async def stat(self, ref: BlobRef) -> int | None:
        raise StorageFailure("connection refused by /secret/place")


async def test_healthz_and_its_alias_answer_without_a_token(api: Api) -> None:
    for path in ("/healthz", "/health"):
        resp = await api.client.get(path)
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
        assert resp.headers["Cache-Control"] == "no-store"


async def test_readyz_lists_every_check_when_ready(api: Api) -> None:
    await api.upload(b"tenant bytes", filename="secret-plan.txt")
    resp = await api.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"status": "ready", "checks": {name: {"ok": True} for name in CHECK_NAMES}}


async def test_readyz_is_503_when_the_data_directory_cannot_be_written(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    # Root ignores permission bits: take the directory away instead.
    settings.data_dir.rename(tmp_path / "moved")
    try:
        resp = await api.client.get("/readyz")
        body = await resp.json()
    finally:
        (tmp_path / "moved").rename(settings.data_dir)
    assert resp.status == 503
    assert body["status"] == "not ready"
    assert body["checks"]["data_dir_writable"] == {
        "ok": False,
        "reason": "failed; the server log says why",
    }
    assert body["checks"]["database"] == {"ok": True}
    assert str(tmp_path) not in await resp.text()


async def test_readyz_is_503_when_the_blob_store_fails(make_api: AppFactory) -> None:
    api = await make_api(backend=UnreachableStore())
    resp = await api.client.get("/readyz")
    text = await resp.text()
    assert resp.status == 503
    assert (await resp.json())["checks"]["blob_store"] == {
        "ok": False,
        "reason": "failed; the server log says why",
    }
    assert "/secret/place" not in text


async def test_readyz_is_503_when_thumbnail_workers_stopped(api: Api) -> None:
    app = api.client.app
    assert app is not None
    await app[THUMBS].stop()
    resp = await api.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["thumbnail_workers"] == {
        "ok": False,
        "reason": "the thumbnail workers are not running",
    }


async def test_readyz_is_503_when_the_database_is_closed(api: Api) -> None:
    app = api.client.app
    assert app is not None
    await app[DATABASE].close()
    resp = await api.client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["database"]["ok"] is False
    # /healthz consults nothing: the process still answers.
    assert (await api.client.get("/healthz")).status == 200
