"""Engine failures: a bad database URL stops the start with one line and exit 2; PostgreSQL not
reachable at start is waited for (with backoff) while /readyz says not ready; PostgreSQL lost
mid-upload answers 503 with Retry-After, commits nothing, and service resumes when it is back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bench.pgserver import PgServer, remove, start_postgres
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import SECRET, error_of
from tests.server_proc import start_server


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL of this module's own, since its tests stop and start it."""
    server = start_postgres()
    try:
        yield server
    finally:
        remove(server)


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://u@127.0.0.1:3306/db",
            "FILESVC_DB_URL: unsupported scheme 'mysql'; use postgresql://USER@HOST:PORT/DB"
            " or leave it unset for SQLite in the data directory",
        ),
        ("postgresql://u@127.0.0.1:port/db", "FILESVC_DB_URL is not a valid URL: Port could not"),
        (
            "postgresql://u@127.0.0.1:5432/",
            "FILESVC_DB_URL: no database name in the PostgreSQL URL",
        ),
        ("postgresql:///db", "FILESVC_DB_URL: no host in the PostgreSQL URL"),
    ],
)
def test_a_bad_database_url_is_one_line_and_exit_2(tmp_path: Path, url: str, message: str) -> None:
    env = {"FILESVC_DB_URL": url, "FILESVC_JWT_SECRET": SECRET}
    serve = _run(
        [sys.executable, "-m", "filesvc.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env,
    )
    assert serve.returncode == 2
    assert serve.stderr.count("\n") == 1 and serve.stderr.startswith(f"filesvc: {message}")
    (tmp_path / "blobs").mkdir(exist_ok=True)
    cli = _run(
        [str(Path(sys.executable).parent / "blobstore"), "stat", "--data-dir", str(tmp_path)], env
    )
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith(f"blobstore: {message}")


def _get(url: str) -> tuple[int, dict[str, object], dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _running(server: PgServer) -> bool:
    status = [*server.as_user, str(server.bin / "pg_ctl"), "-D", str(server.data), "status"]
    return subprocess.run(status, capture_output=True, check=False).returncode == 0


def _until(check: object, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_postgres_unreachable_at_start_is_waited_for_while_not_ready(
    tmp_path: Path, own_pg: PgServer
) -> None:
    url = own_pg.new_database()
    own_pg.stop()
    server = start_server(tmp_path / "data", env={"FILESVC_DB_URL": url}, wait=False)
    try:
        _until(lambda: _get(f"{server.url}/readyz")[0] == 503, 30)
        status, body, _ = _get(f"{server.url}/readyz")
        assert body["checks"]["database"] == {  # type: ignore[index]
            "ok": False,
            "reason": "still connecting to the metadata database",
        }
        # The API answers 503 meanwhile (the liveness probe /healthz stays 200).
        files = "/internal/services/files/v1/companies/acme/files/"
        status, body, headers = _get(f"{server.url}{files}00000000-0000-4000-8000-000000000000")
        assert status == 503 and headers["Retry-After"] == "5"
        assert body == {
            "statusCode": 503,
            "error": "Service Unavailable",
            "message": "the metadata database is unavailable: nothing was saved; retry later",
        }
        own_pg.start()
        _until(lambda: _get(f"{server.url}/readyz")[0] == 200, 30)
        assert _get(f"{server.url}/readyz")[1]["status"] == "ready"
        assert server.proc.poll() is None
        log = server.log.read_text()
        assert "retrying in" in log and "metadata database ready" in log
    finally:
        server.stop()
        if not _running(own_pg):
            own_pg.start()


@pytest.mark.sqlite_only  # it brings its own PostgreSQL; the mark only stops a second run
async def test_postgres_lost_mid_upload_is_503_and_commits_nothing(
    make_api: AppFactory, tmp_path: Path, own_pg: PgServer
) -> None:
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=SECRET, db_url=own_pg.new_database())
    api = await make_api(settings_=settings)
    created = await api.create({"filename": "two.bin", "total_chunks": "2", "total_size": "20"})
    first = await api.chunk(created["id"], b"0123456789", {"chunk_number": "1"})
    assert first.status == 200, await first.text()

    halfway = asyncio.Event()
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"abcde"
        halfway.set()
        await go_on.wait()
        yield b"fghij"

    sending = asyncio.create_task(api.chunk(created["id"], body(), {"chunk_number": "2"}))  # type: ignore[arg-type]
    await halfway.wait()
    await asyncio.to_thread(own_pg.stop, "immediate")
    go_on.set()
    resp = await sending
    assert await error_of(resp) == (
        503,
        "the metadata database is unavailable: nothing was saved; retry later",
    )
    assert resp.headers["Retry-After"] == "5"
    assert (await api.client.get("/readyz")).status == 503

    await asyncio.to_thread(own_pg.start)
    meta = await api.meta(created["id"])
    for _ in range(100):  # the pool replaces its broken connections
        meta = await api.meta(created["id"])
        if meta.status == 200:
            break
        await asyncio.sleep(0.1)
    assert meta.status == 200, await meta.text()
    upload = (await meta.json())["resource"]["upload_data"]
    assert (upload["uploaded_chunks"], upload["complete"]) == (1, False)  # nothing half-done
    again = await api.chunk(created["id"], b"abcdefghij", {"chunk_number": "2"})
    assert again.status == 200, await again.text()
    assert await api.content(created["id"]) == b"0123456789abcdefghij"
    assert (await api.client.get("/readyz")).status == 200
