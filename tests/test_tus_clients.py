"""Real tus clients against a real ``filesvc serve``: tus-js-client (Node) in small chunks,
aborted and resumed from its stored URL, and with ``parallelUploads: 3``; tuspy uploading with
sha1 checksums and resuming.  Every file downloads byte-identical through the files API and
gets its thumbnail."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tusclient.client import TusClient

from bench.pgserver import PgServer
from bench.seaweedfs import REGION, SeaweedFS
from tests.conftest import S3_BUCKET
from tests.helpers import PREFIX, token
from tests.server_proc import ServerProcess, start_server

pytestmark = pytest.mark.slow

JS_DIR = Path(__file__).parent / "js"
FILES = f"{PREFIX}/companies/acme/files"


@pytest.fixture(scope="module", params=["sqlite-local", "postgresql-s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per deployed configuration: the embedded default, and PostgreSQL + S3."""
    env: dict[str, str] = {}
    if request.param == "postgresql-s3":
        pg: PgServer = request.getfixturevalue("pg_server")
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        url = f"s3://{S3_BUCKET}/tus-clients-{uuid.uuid4().hex}?endpoint={weed.endpoint}"
        env = {
            **weed.env,
            "FILESVC_DB_URL": pg.new_database(),
            "FILESVC_BLOB_URL": f"{url}&region={REGION}",
        }
    proc = start_server(tmp_path_factory.mktemp("tus-clients") / "data", env=env, ready=True)
    yield proc
    proc.stop()


def noise_png(width: int, height: int, seed: int) -> bytes:
    """A PNG of random pixels: megabytes that do not compress, and an image to thumbnail."""
    raw = random.Random(seed).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), raw).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _get(server: ServerProcess, path: str) -> tuple[int, bytes]:
    req = urllib.request.Request(  # noqa: S310 - the test server's own http URL
        server.url + path, headers={"Authorization": f"Bearer {token()}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return int(resp.status), resp.read()


def assert_ordinary_file(server: ServerProcess, location: str, data: bytes) -> None:
    """Downloads byte-identical and gets a thumbnail, through the files API."""
    file_id = location.rstrip("/").rsplit("/", 1)[1]
    status, body = _get(server, f"{FILES}/{file_id}/download")
    assert status == 200
    assert body == data
    deadline = time.monotonic() + 60
    resource: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resource = json.loads(_get(server, f"{FILES}/{file_id}")[1])["resource"]
        if resource["metadata"]["thumbnails_status"] != "waiting":
            break
        time.sleep(0.2)
    assert resource["metadata"]["thumbnails_status"] == "done"
    assert resource["upload_data"]["complete"] is True
    thumb = resource["thumbnails"][0]
    status, image = _get(server, thumb["url"])
    assert status == 200
    assert Image.open(io.BytesIO(image)).size == (thumb["width"], thumb["height"])


def run_node(mode: str, server: ServerProcess, path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is installed by make test (scripts/system-packages.txt)"
    assert (JS_DIR / "node_modules" / "tus-js-client").is_dir(), "make test runs npm ci"
    endpoint = f"{server.url}{PREFIX}/companies/acme/uploads"
    done = subprocess.run(
        [node, str(JS_DIR / "tus_upload.mjs"), mode, endpoint, token(), str(path)],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")},
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def test_tus_js_client_aborted_and_resumed(server: ServerProcess, tmp_path: Path) -> None:
    data = noise_png(1100, 1000, 7)
    assert len(data) > 3 << 20
    path = tmp_path / "resumed.png"
    path.write_bytes(data)
    result = run_node("resume", server, path)
    assert result["abortedAt"] >= len(data) // 3
    # resumed from the server's offset, not from zero
    assert result["resumedFrom"] >= result["abortedAt"]
    assert_ordinary_file(server, result["url"], data)


def test_tus_js_client_parallel_uploads(server: ServerProcess, tmp_path: Path) -> None:
    data = noise_png(900, 900, 11)
    path = tmp_path / "parallel.png"
    path.write_bytes(data)
    result = run_node("parallel", server, path)
    # three partial uploads joined by one final concatenation
    req = urllib.request.Request(  # noqa: S310 - the test server's own http URL
        result["url"],
        method="HEAD",
        headers={"Authorization": f"Bearer {token()}", "Tus-Resumable": "1.0.0"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        concat = resp.headers["Upload-Concat"]
    assert concat.startswith("final;")
    assert len(concat.removeprefix("final;").split()) == 3
    assert_ordinary_file(server, result["url"], data)


def test_tuspy_uploads_and_resumes_with_checksums(server: ServerProcess) -> None:
    data = noise_png(800, 800, 13)
    client = TusClient(
        f"{server.url}{PREFIX}/companies/acme/uploads",
        headers={"Authorization": f"Bearer {token()}"},
    )
    first = client.uploader(
        file_stream=io.BytesIO(data),
        chunk_size=200_000,
        metadata={"filename": "tuspy.png", "filetype": "image/png"},
        upload_checksum=True,
    )
    first.upload(stop_at=600_000)
    assert first.offset == 600_000
    url = first.url
    assert url is not None
    resumed = client.uploader(
        file_stream=io.BytesIO(data), url=url, chunk_size=200_000, upload_checksum=True
    )
    assert resumed.offset == 600_000  # asked the server with HEAD
    resumed.upload()
    assert_ordinary_file(server, url, data)
    resource = json.loads(_get(server, f"{FILES}/{url.rsplit('/', 1)[1]}")[1])["resource"]
    assert resource["metadata"]["name"] == "tuspy.png"
