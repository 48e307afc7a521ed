"""Large plain downloads are sent by a thread of the store that owns a duplicate of the
connection's socket for the body (blobstore/local_pump.py): on a real server process, the bytes
are right for whole files and ranges, the connection serves the next request afterwards, a blob
file truncated under a download cuts that connection and nothing else, a client that stops
reading is cut after the stall timeout, one that goes away or reads slowly is handled, and a
download in flight at SIGTERM is finished; no duplicate socket outlives its download."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import bearer, token
from tests.server_proc import ServerProcess, start_server
from tests.slow_downloads import FILES, assert_cut_short, read_paced, read_slowly, upload_plain
from tests.slow_downloads import connect as _connect
from tests.slow_downloads import get_download as _get
from tests.slow_downloads import split_answer as _body

MiB = 1024 * 1024
SIZE = 24 * MiB + 12345  # many mapped windows and slices, and a short last one
STALL = 1  # the servers' send stall timeout, seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = _start(tmp_path_factory.mktemp("pumped") / "data")
    try:
        yield srv
    finally:
        srv.stop()


def _start(data: Path) -> ServerProcess:
    env = {"FILESVC_ENCRYPTION": "off", "FILESVC_SEND_STALL_TIMEOUT": str(STALL)}
    return start_server(data, env=env)


def _duplicated_sockets(pid: int) -> int:
    """Sockets the server holds by more than one fd right now: a pump's duplicate."""
    counts: collections.Counter[str] = collections.Counter()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # the process has ended
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            counts[target] += 1
    return sum(1 for n in counts.values() if n > 1)


async def _no_duplicates_left(server: ServerProcess) -> bool:
    deadline = time.monotonic() + 10
    while _duplicated_sockets(server.proc.pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return _duplicated_sockets(server.proc.pid) == 0


async def _upload(server: ServerProcess, size: int = SIZE) -> tuple[bytes, str, Path]:
    return await upload_plain(server, size)


def _read_slowly(sock: socket.socket, pid: int) -> tuple[bytes, int, bool]:
    """Read the whole answer slowly: (the bytes, the most duplicated sockets seen in the server
    while it sent, whether it ended by a reset)."""
    return read_slowly(sock, lambda: _duplicated_sockets(pid))


async def _download_slowly(server: ServerProcess, fid: str) -> tuple[bytes, int, bool]:
    sock = _connect(server)
    try:
        sock.sendall(_get(fid))
        return await asyncio.to_thread(_read_slowly, sock, server.proc.pid)
    finally:
        sock.close()


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length body from a kept-alive connection."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed before the head"
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    fields = dict(
        line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line.count(b": ") >= 1
    )
    length = int(fields.get(b"Content-Length", b"0"))
    body = bytearray(rest)
    while len(body) < length:
        data = sock.recv(1 << 20)
        assert data, "connection closed before the body's end"
        body += data
    assert len(body) == length, "bytes past the body"
    return head, bytes(body)


async def _sent_bytes_metric(server: ServerProcess) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("filesvc_http_sent_bytes_total ")]
    return float(line.split()[1])


async def test_whole_file_and_ranges_are_right_and_sent_by_a_pump(server: ServerProcess) -> None:
    content, fid, _ = await _upload(server)
    sent_before = await _sent_bytes_metric(server)
    answer, most, reset = await _download_slowly(server, fid)
    head, body = _body(answer)
    assert head.startswith(b"HTTP/1.1 200") and not reset
    assert body == content
    assert most == 1  # the connection's socket was duplicated for the body
    assert await _no_duplicates_left(server)
    # The metrics count the bytes the pump sent (once the handler is done, which may be just
    # after the client read the last byte).
    deadline = time.monotonic() + 10
    while await _sent_bytes_metric(server) - sent_before < SIZE and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert SIZE <= await _sent_bytes_metric(server) - sent_before < 2 * SIZE  # once, not twice
    url = f"{server.url}{FILES}/{fid}/download"
    # Unaligned starts and ends, across buffer edges, and a suffix range.
    for first, last in ((4097, 2 * MiB + 3), (MiB - 1, SIZE - 1), (SIZE - 3_000_000, SIZE - 1)):
        hdrs = {**bearer(token()), "Range": f"bytes={first}-{last}"}
        async with aiohttp.ClientSession() as s, s.get(url, headers=hdrs) as resp:
            assert resp.status == 206
            assert await resp.read() == content[first : last + 1]
    # The access log counts the bytes the pump sent.
    log = server.log.read_text()
    assert f"bytes_out={SIZE}" in log


async def test_the_connection_serves_the_next_requests_after_a_pumped_body(
    server: ServerProcess,
) -> None:
    content, fid, _ = await _upload(server)
    sock = _connect(server, rcvbuf=1 << 20)
    try:
        sock.sendall(_get(fid, close=False))
        head, body = await asyncio.to_thread(_read_response, sock)
        assert head.startswith(b"HTTP/1.1 200") and body == content
        etag = next(
            line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"ETag")
        )
        sock.sendall(_get(fid, f"Range: bytes=100-{5 * MiB}\r\n", close=False))
        head, body = await asyncio.to_thread(_read_response, sock)
        assert head.startswith(b"HTTP/1.1 206") and body == content[100 : 5 * MiB + 1]
        sock.sendall(_get(fid, f"If-None-Match: {etag.decode()}\r\n", close=False))
        head, body = await asyncio.to_thread(_read_response, sock)
        assert head.startswith(b"HTTP/1.1 304") and body == b""
    finally:
        sock.close()


async def test_a_blob_truncated_under_a_download_cuts_it_and_the_server_lives(
    server: ServerProcess,
) -> None:
    content, fid, blob = await _upload(server)
    sock = _connect(server)
    try:
        sock.sendall(_get(fid))
        got = bytearray()
        while len(got) < 3 * MiB:  # some bytes are out, the pump is sending
            got += sock.recv(256 * 1024)
        os.truncate(blob, 4 * MiB)
        rest, _, _ = await asyncio.to_thread(_read_slowly, sock, server.proc.pid)
    finally:
        sock.close()
    assert_cut_short(bytes(got) + rest, content)
    assert server.proc.poll() is None, "the server died"
    # A download after the damage is cut too (the file is now shorter than recorded), and
    # other files are still served.
    answer, _, _ = await _download_slowly(server, fid)
    assert_cut_short(answer, content)
    other, ofid, _ = await _upload(server, 3 * MiB)
    url = f"{server.url}{FILES}/{ofid}/download"
    async with aiohttp.ClientSession() as s, s.get(url, headers=bearer(token())) as resp:
        assert await resp.read() == other
    assert await _no_duplicates_left(server)


async def test_a_client_that_stops_reading_is_cut_after_the_stall_timeout(
    server: ServerProcess,
) -> None:
    _, fid, _ = await _upload(server)
    sock = _connect(server, rcvbuf=4096)
    try:
        sock.sendall(_get(fid))
        await asyncio.sleep(3 * STALL)  # read nothing: the pump's sends stall, then time out
        assert await _no_duplicates_left(server)  # the pump has given up its socket

        def drain() -> tuple[int, bool]:
            got = 0
            while True:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    return got, True
                if not data:
                    return got, True
                got += len(data)

        got, ended = await asyncio.to_thread(drain)
    finally:
        sock.close()
    assert ended and got < SIZE  # cut, not finished
    # Logged as a client that went away (499), with the bytes it did take.
    (line,) = [
        x for x in server.log.read_text().splitlines() if f"file_id={fid}" in x and "=GET " in x
    ]
    sent = int(line.split(" bytes_out=")[1].split()[0])
    assert " status=499 " in line and 0 < sent < SIZE


async def test_a_client_gone_mid_body_frees_its_pump(server: ServerProcess) -> None:
    content, fid, _ = await _upload(server)
    sock = _connect(server)
    try:
        sock.sendall(_get(fid))
        got = 0
        while got < 2 * MiB:
            got += len(sock.recv(256 * 1024))
        assert _duplicated_sockets(server.proc.pid) == 1
    finally:
        sock.close()
    assert await _no_duplicates_left(server)
    answer, _, _ = await _download_slowly(server, fid)
    assert _body(answer)[1] == content


async def test_a_slow_client_that_keeps_reading_is_not_cut(server: ServerProcess) -> None:
    """The stall timeout bounds how long the client takes no bytes, not how long it takes a
    buffer: a client taking 2 MiB/s needs longer than the timeout for a few MiB and is never
    cut."""
    content, fid, _ = await _upload(server, 4 * MiB + 4096)
    sock = _connect(server)

    try:
        sock.sendall(_get(fid))
        answer = await asyncio.to_thread(read_paced, sock, 2 * MiB)
    finally:
        sock.close()
    assert _body(answer)[1] == content


async def test_sigterm_lets_a_pumped_download_in_flight_finish(tmp_path: Path) -> None:
    server = _start(tmp_path / "data")
    try:
        content, fid, _ = await _upload(server)
        sock = _connect(server)
        try:
            sock.sendall(_get(fid))
            first = b""
            while len(first) < 2 * MiB:
                first += sock.recv(256 * 1024)
            assert _duplicated_sockets(server.proc.pid) == 1  # the pump is sending
            server.proc.send_signal(signal.SIGTERM)
            rest, _, reset = await asyncio.to_thread(_read_slowly, sock, server.proc.pid)
        finally:
            sock.close()
        assert not reset and _body(first + rest)[1] == content
        assert await asyncio.to_thread(server.proc.wait, 30) == 0
    finally:
        server.stop()
