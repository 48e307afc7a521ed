"""The ``blobstore`` command on a store whose blobs are in S3 (a real SeaweedFS): the same
settings as the server (``FILESVC_BLOB_URL`` or ``--blob-url``), and fsck, stat, cat and gc see
the bucket."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from bench.seaweedfs import KEY_ID, SECRET_KEY
from blobstore import manifests
from blobstore.s3 import S3Location
from filesvc.app import create_app
from filesvc.settings import Settings
from tests.helpers import SECRET, Api
from tests.test_blobstore_cli import BLOBSTORE

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def blob_url(loc: S3Location) -> str:
    return f"s3://{loc.bucket}/{loc.prefix.rstrip('/')}?endpoint={loc.endpoint}&region={loc.region}"


async def blobstore(data_dir: Path, url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "FILESVC_BLOB_URL": url,
    }
    return await asyncio.to_thread(
        subprocess.run,
        [str(BLOBSTORE), *argv, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_fsck_stat_cat_gc_on_s3(
    s3_location: S3Location, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, jwt_secret=SECRET, blob=s3_location)
    api = Api(await aiohttp_client(create_app(settings)))
    kept = await api.upload(b"kept in the bucket")
    gone = await api.upload(b"deleted, then collected")
    resp = await api.client.delete(f"{api.files()}/{gone['id']}", headers=api.headers())
    assert resp.status == 200
    url = blob_url(s3_location)
    assert not (data_dir / "blobs").exists()  # nothing local: the blobs are in the bucket

    stat = await blobstore(data_dir, url, "stat", "--json")
    assert stat.returncode == 0, stat.stderr
    summary = json.loads(stat.stdout)
    assert summary["blobs"] == 2 and summary["orphan_blobs"] == 1

    fsck = await blobstore(data_dir, url, "fsck", "--full", "--json", "--no-progress")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    ref = await _ref_of(api, kept["id"])
    cat = await blobstore(data_dir, url, "cat", ref)
    assert cat.returncode == 0 and cat.stdout == "kept in the bucket"

    # S3 times are whole seconds and gc spares what was written within a second of its start
    # (gc.CLOCK_SLACK): let the orphan age past that.
    await asyncio.sleep(2.5)
    gc = await blobstore(data_dir, "", "gc", "--blob-url", url, "--grace", "0s", "--json")
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["freed_blobs"] == 1
    after = json.loads((await blobstore(data_dir, url, "stat", "--json")).stdout)
    assert after["blobs"] == 1 and after["orphan_blobs"] == 0
    assert await api.content(kept["id"]) == b"kept in the bucket"


async def _ref_of(api: Api, file_id: str) -> str:
    from filesvc.appkeys import DATABASE

    app = api.client.app
    assert app is not None
    async with app[DATABASE].read() as tx:
        [entry] = await manifests.entries(tx, file_id, "chunk")
    return str(entry.ref)
