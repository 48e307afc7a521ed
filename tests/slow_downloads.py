"""Large plain downloads read from raw sockets, slowly, while something of the server is
sampled: the shared opening of the pumped and the mapped download tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import PREFIX, token, upload_raw
from tests.server_proc import ServerProcess

FILES = f"{PREFIX}/companies/acme/files"


async def upload_plain(server: ServerProcess, size: int) -> tuple[bytes, str, Path]:
    """Upload ``size`` random bytes to a server that does not seal: them, the file id, and the
    path of its blob file (the only new one)."""
    content = os.urandom(size)
    before = set((server.data_dir / "blobs").rglob("xxh3_128-*"))
    fid = await upload_raw(server.url, content)
    (blob,) = set((server.data_dir / "blobs").rglob("xxh3_128-*")) - before
    assert blob.stat().st_size == len(content)  # stored plain: the file is the content
    return content, fid, blob


def get_download(fid: str, headers: str = "", close: bool = True) -> bytes:
    """The request head of a file's download."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"GET {FILES}/{fid}/download HTTP/1.1\r\nHost: x\r\n{headers}"
        f"Authorization: Bearer {token()}\r\n{connection}\r\n"
    ).encode()


def connect(server: ServerProcess, rcvbuf: int = 64 * 1024) -> socket.socket:
    """A connection with a small receive buffer, so that the server's sends wait on us."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(20)
    return sock


def read_slowly(sock: socket.socket, sample: Callable[[], int]) -> tuple[bytes, int, bool]:
    """Read the whole answer in small steps, calling ``sample`` before each: (the bytes, the
    most it returned, whether the answer ended by a reset)."""
    got = bytearray()
    most = 0
    while True:
        most = max(most, sample())
        try:
            data = sock.recv(256 * 1024)
        except ConnectionResetError:
            return bytes(got), most, True
        if not data:
            return bytes(got), most, False
        got += data
        time.sleep(0.001)


def read_paced(sock: socket.socket, rate: int) -> bytes:
    """Read the whole answer at no more than ``rate`` bytes a second: a slow client that keeps
    reading."""
    got = bytearray()
    start = time.monotonic()
    while True:
        data = sock.recv(64 * 1024)
        if not data:
            return bytes(got)
        got += data
        ahead = len(got) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)


def split_answer(answer: bytes) -> tuple[bytes, bytes]:
    """An answer's head and body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def assert_cut_short(answer: bytes, content: bytes) -> None:
    """A download of a blob cut under it: answered, shorter than the file, and never a wrong
    byte."""
    head, body = split_answer(answer)
    assert head.startswith(b"HTTP/1.1 200") and len(body) < len(content)
    assert body == content[: len(body)]
