"""FILESVC_DRAIN_TIMEOUT bounds how long SIGTERM waits for requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.helpers import PREFIX, bearer, token
from tests.server_proc import start_server


async def test_sigterm_stops_after_the_drain_deadline_when_an_upload_never_ends(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "data", env={"FILESVC_DRAIN_TIMEOUT": "1"})
    started = asyncio.Event()
    stop_sending = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        started.set()
        while not stop_sending.is_set():
            yield b"x" * 1000
            await asyncio.sleep(0.05)

    try:
        async with aiohttp.ClientSession() as session:
            upload = asyncio.create_task(
                session.post(
                    f"{server.url}{PREFIX}/companies/acme/files",
                    data=endless(),
                    headers={**bearer(token()), "Content-Type": "application/octet-stream"},
                )
            )
            await started.wait()
            await asyncio.sleep(0.3)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.proc.wait, 20)
            waited = time.monotonic() - signalled
            stop_sending.set()
            # The server went away under the upload, as it should have.
            with contextlib.suppress(aiohttp.ClientError):
                await upload
        assert code == 0
        assert 1.0 <= waited < 10  # it did wait for the upload, not much longer ...
        log = server.log.read_text()
        assert "requests still running after 1s; stopping anyway" in log  # ... then gave up
    finally:
        server.stop()
