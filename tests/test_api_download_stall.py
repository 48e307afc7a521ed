"""A download whose client stops reading is cut after the send stall timeout, on a real socket
to a real server; the server keeps serving others."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import PREFIX, bearer, token, upload_raw
from tests.server_proc import ServerProcess, start_server

SIZE = 48 * 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data", env={"FILESVC_SEND_STALL_TIMEOUT": "1"})
    try:
        yield srv
    finally:
        srv.stop()


def _drain(sock: socket.socket, deadline: float) -> tuple[int, bool]:
    """Read until the server ends the connection; (bytes read, ended before the deadline)."""
    got = 0
    sock.settimeout(1)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got, True
        if not data:
            return got, True
        got += len(data)
    return got, False


async def test_a_client_that_stops_reading_loses_its_connection(server: ServerProcess) -> None:
    files = f"{PREFIX}/companies/acme/files"
    content = os.urandom(SIZE)
    fid = await upload_raw(server.url, content)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(
            f"GET {files}/{fid}/download HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token()}\r\n\r\n".encode()
        )
        await asyncio.sleep(3)  # read nothing: the server's sends stall, then the timeout fires
        got, ended = await asyncio.to_thread(_drain, sock, time.monotonic() + 20)
    finally:
        sock.close()
    assert ended, "the stalled download still held its connection"
    assert got < SIZE  # cut short: not the whole body
    url = f"{server.url}{files}/{fid}/download"
    async with aiohttp.ClientSession() as s, s.get(url, headers=bearer(token())) as resp:
        assert resp.status == 200  # and the server is still serving
        assert await resp.read() == content
