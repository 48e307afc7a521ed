"""`filesvc serve --workers N` as real processes, on the embedded default and on PostgreSQL +
S3: N
workers share the port, a worker killed
with -9 is replaced while another worker's upload in flight completes, SIGTERM to the
supervisor drains every worker, and thumbnails are made whichever worker took the upload."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import pyvips

from bench.pgserver import PgServer
from bench.seaweedfs import SeaweedFS
from filesvc.settings import ConfigError, Settings
from tests.deployments import scaled_env, wait_ready
from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server

WORKERS = 2
FIRST_PIECE = 16 << 20
UPLOAD_SIZE = FIRST_PIECE + 900_000


@pytest.fixture(params=["local", "postgresql-s3"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    env: dict[str, str] = {}
    if request.param == "postgresql-s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        pg: PgServer = request.getfixturevalue("pg_server")
        env = scaled_env(pg, seaweedfs, request.getfixturevalue("s3_location"))
    srv = start_server(tmp_path / "data", env=env, args=("--workers", str(WORKERS)))
    asyncio.run(wait_ready(srv.url))
    yield srv
    srv.stop()


def workers(server: ServerProcess) -> list[psutil.Process]:
    """The supervisor's worker processes (each `filesvc serve`), not their thumbnail workers."""
    return [
        p
        for p in psutil.Process(server.proc.pid).children()
        if "filesvc.cli" in " ".join(p.cmdline())
    ]


def wait_for_workers(
    server: ServerProcess, count: int, timeout: float = 30
) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = workers(server)
        listening = [p for p in found if _listens(p, server.port)]
        if len(listening) == count:
            return listening
        time.sleep(0.1)
    raise AssertionError(f"expected {count} listening workers, have {len(workers(server))}")


def _listens(proc: psutil.Process, port: int) -> bool:
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for c in proc.net_connections(kind="tcp")
        )
    except psutil.NoSuchProcess:
        return False


def holder_of(procs: list[psutil.Process], client_port: int) -> psutil.Process:
    """The worker holding the connection that comes from ``client_port``."""
    for proc in procs:
        for c in proc.net_connections(kind="tcp"):
            if c.raddr and c.raddr.port == client_port and c.status == psutil.CONN_ESTABLISHED:
                return proc
    raise AssertionError("no worker holds the connection")


async def slow_upload(
    session: aiohttp.ClientSession, url: str, started: asyncio.Event, proceed: asyncio.Event
) -> aiohttp.ClientResponse:
    async def body() -> AsyncIterator[bytes]:
        # Larger than the socket buffers: once it is written, a handler is reading the body,
        # so the request is in flight (not waiting in a listen queue or for its headers).
        yield b"a" * FIRST_PIECE
        started.set()
        await proceed.wait()
        for _ in range(9):
            yield b"a" * 100_000
            await asyncio.sleep(0.02)

    return await session.post(
        f"{url}{PREFIX}/companies/acme/files",
        params={"filename": "slow.bin"},
        data=body(),
        headers={**bearer(token()), "Content-Type": "application/octet-stream"},
    )


async def test_a_killed_worker_is_replaced_and_the_other_upload_completes(
    server: ServerProcess,
) -> None:
    procs = await asyncio.to_thread(wait_for_workers, server, WORKERS)
    started, proceed = asyncio.Event(), asyncio.Event()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        upload = asyncio.create_task(slow_upload(session, server.url, started, proceed))
        await started.wait()
        # Our connection's local port tells which worker holds it; kill the other one.
        ports = await asyncio.to_thread(
            lambda: [
                c.laddr.port
                for c in psutil.Process().net_connections(kind="tcp")
                if c.raddr and c.raddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
            ]
        )
        assert len(ports) == 1
        holder = await asyncio.to_thread(holder_of, procs, ports[0])
        victim = next(p for p in procs if p.pid != holder.pid)
        victim.send_signal(signal.SIGKILL)
        proceed.set()
        resp = await upload
        assert resp.status == 200, await resp.text()
        fid = (await resp.json())["resource"]["id"]
        assert (await resp.json())["resource"]["upload_data"]["size"] == UPLOAD_SIZE
        replaced = await asyncio.to_thread(wait_for_workers, server, WORKERS)
        assert victim.pid not in {p.pid for p in replaced} and holder.pid in {
            p.pid for p in replaced
        }
        # Every worker serves what any of them stored (new connections spread over both).
        for _ in range(6):
            url = f"{server.url}{PREFIX}/companies/acme/files/{fid}/download"
            async with session.get(url, headers=bearer(token())) as got:
                assert got.status == 200 and len(await got.read()) == UPLOAD_SIZE


async def test_sigterm_drains_every_worker(server: ServerProcess) -> None:
    procs = await asyncio.to_thread(wait_for_workers, server, WORKERS)
    started, proceed = asyncio.Event(), asyncio.Event()
    async with aiohttp.ClientSession() as session:
        upload = asyncio.create_task(slow_upload(session, server.url, started, proceed))
        await started.wait()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        proceed.set()
        resp = await upload
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["resource"]["upload_data"]["size"] == UPLOAD_SIZE
    assert await asyncio.to_thread(server.proc.wait, 60) == 0
    for proc in procs:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


async def test_thumbnails_are_made_whichever_worker_took_the_upload(
    server: ServerProcess,
) -> None:
    await asyncio.to_thread(wait_for_workers, server, WORKERS)
    image = bytes(pyvips.Image.black(320, 200, bands=3).jpegsave_buffer())
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection, maybe a new worker
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(10):  # all ten on the first worker: a 1 in 512 chance
            form = aiohttp.FormData()
            form.add_field("file", image, filename=f"p{i}.jpg", content_type="image/jpeg")
            async with session.post(
                f"{server.url}{PREFIX}/companies/acme/files",
                params={"thumbnail_sync": "1"},
                data=form,
                headers=bearer(token()),
            ) as resp:
                assert resp.status == 200, await resp.text()
                resource = (await resp.json())["resource"]
            assert resource["metadata"]["thumbnails_status"] == "done", resource
            assert len(resource["thumbnails"]) == 1


@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_worker_counts_out_of_range_are_refused(value: str, tmp_path: Path) -> None:
    env = {"FILESVC_JWT_SECRET": "s" * 40, "FILESVC_WORKERS": value}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env, data_dir=tmp_path)
    assert str(err.value) == (
        f"FILESVC_WORKERS (environment) must be from 1 to 64, got {int(value)}"
    )


def test_serve_with_zero_workers_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "filesvc"),
            "serve",
            "--workers",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "filesvc: FILESVC_WORKERS (flag --workers) must be from 1 to 64, got 0\n"
    )
