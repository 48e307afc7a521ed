"""Large plain downloads on uvloop that no download thread takes (all busy, or
``FILESVC_DOWNLOAD_THREADS=0`` as here) send mapped windows of the blob file
(blobstore/local_maps.py): on a real server process, the bytes are right for whole files and
ranges, no more than a few windows are ever mapped per download and none once it is over, and a
blob file truncated under a download cuts that connection without killing the server (SIGBUS
would)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from blobstore.local_maps import MAP_WINDOW
from tests.helpers import bearer, token
from tests.server_proc import ServerProcess, start_server
from tests.slow_downloads import (
    FILES,
    assert_cut_short,
    connect,
    get_download,
    read_paced,
    read_slowly,
)
from tests.slow_downloads import split_answer as _body
from tests.slow_downloads import upload_plain as _upload

SIZE = 5 * MAP_WINDOW + 12345  # several windows and a short last one
# What one download may map: the window being sent, the one mapped ahead, the tail of the one
# before that the socket may still hold, each rounded out to whole pages.
BOUND = 3 * (MAP_WINDOW + 2 * 4096)
ENV = {"FILESVC_ENCRYPTION": "off", "FILESVC_DOWNLOAD_THREADS": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("mapped") / "data"
    srv = start_server(data, env={**ENV, "FILESVC_SEND_STALL_TIMEOUT": "5"})
    try:
        yield srv
    finally:
        srv.stop()


def _mapped_bytes(pid: int, path: Path) -> int:
    """Bytes of ``path`` mapped into the server's processes right now."""
    total = 0
    proc = psutil.Process(pid)
    for p in (proc, *proc.children(recursive=True)):
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                total += int(hi, 16) - int(lo, 16)
    return total


def _request(server: ServerProcess, fid: str, headers: str = "") -> socket.socket:
    sock = connect(server)
    sock.sendall(get_download(fid, headers))
    return sock


def _read_slowly(sock: socket.socket, watch: Path, pid: int) -> tuple[bytes, int, bool]:
    """Read the whole answer slowly, sampling what the server maps of ``watch``: (the bytes,
    the most mapped at once, whether it ended by a reset)."""
    return read_slowly(sock, lambda: _mapped_bytes(pid, watch))


async def _download_slowly(server: ServerProcess, fid: str, blob: Path) -> tuple[bytes, int, bool]:
    """Download the file, reading as :func:`_read_slowly` does (what it returns)."""
    sock = _request(server, fid)
    try:
        return await asyncio.to_thread(_read_slowly, sock, blob, server.proc.pid)
    finally:
        sock.close()


async def test_whole_file_and_ranges_are_right_and_mapping_stays_bounded(
    server: ServerProcess,
) -> None:
    content, fid, blob = await _upload(server, SIZE)
    answer, most, reset = await _download_slowly(server, fid, blob)
    head, body = _body(answer)
    assert head.startswith(b"HTTP/1.1 200") and not reset
    assert body == content
    assert 0 < most <= BOUND, most  # mapped, never more than three windows
    assert _mapped_bytes(server.proc.pid, blob) == 0  # and nothing once it is over
    url = f"{server.url}{FILES}/{fid}/download"
    # Unaligned starts and ends, across window edges, and a suffix range.
    for first, last in (
        (4097, 2 * MAP_WINDOW + 3),
        (MAP_WINDOW - 1, SIZE - 1),
        (SIZE - 3_000_000, SIZE - 1),
    ):
        hdrs = {**bearer(token()), "Range": f"bytes={first}-{last}"}
        async with aiohttp.ClientSession() as s, s.get(url, headers=hdrs) as resp:
            assert resp.status == 206
            assert await resp.read() == content[first : last + 1]


async def test_a_blob_truncated_under_a_download_cuts_it_and_the_server_lives(
    server: ServerProcess,
) -> None:
    content, fid, blob = await _upload(server, SIZE)
    sock = _request(server, fid)
    try:
        sock.settimeout(20)
        got = bytearray()
        while len(got) < 3 * 1024 * 1024:  # some bytes are out; windows are mapped ahead
            got += sock.recv(256 * 1024)
        deadline = time.monotonic() + 10
        while _mapped_bytes(server.proc.pid, blob) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert _mapped_bytes(server.proc.pid, blob) > 0
        os.truncate(blob, MAP_WINDOW // 2)  # pages the server has mapped are now gone
        rest, _, _ = await asyncio.to_thread(_read_slowly, sock, blob, server.proc.pid)
    finally:
        sock.close()
    assert_cut_short(bytes(got) + rest, content)
    assert server.proc.poll() is None, "the server died"
    # A download after the damage is cut too (the file is now shorter than recorded), and
    # other files are still served.
    answer, _, _ = await _download_slowly(server, fid, blob)
    assert_cut_short(answer, content)
    other, ofid, _ = await _upload(server, 2 * MAP_WINDOW)
    url = f"{server.url}{FILES}/{ofid}/download"
    async with aiohttp.ClientSession() as s, s.get(url, headers=bearer(token())) as resp:
        assert await resp.read() == other
    assert server.proc.poll() is None


async def test_a_slow_client_that_keeps_reading_is_not_cut(tmp_path: Path) -> None:
    """A window is written whole, but the stall timeout (1 s here) bounds how long the client
    takes no bytes, not how long it takes a write: a client taking 2 MiB/s needs 4 s for an
    8 MiB window and is never cut."""
    env = {**ENV, "FILESVC_SEND_STALL_TIMEOUT": "1"}
    server = start_server(tmp_path / "data", env=env)
    try:
        await _paced_download(server)
    finally:
        server.stop()


async def _paced_download(server: ServerProcess) -> None:
    content, fid, _ = await _upload(server, 2 * MAP_WINDOW + 4096)
    sock = _request(server, fid)
    try:
        answer = await asyncio.to_thread(read_paced, sock, 2 << 20)
    finally:
        sock.close()
    _, body = _body(answer)
    assert body == content
