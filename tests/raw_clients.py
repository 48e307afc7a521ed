"""Misbehaving HTTP/1.1 clients on raw sockets, and what the server process holds meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import psutil

from tests.server_proc import ServerProcess

# A trickle: one byte every DRIP seconds (10 B/s, a hundredth of the minimum rate), for at most
# DRIPS bytes: the loop is bounded whatever the server does.
DRIP = 0.1
DRIPS = 60


@dataclass
class Outcome:
    """What one misbehaving connection saw."""

    response: bytes
    closed: bool
    started: float
    ended: float


async def trickle(port: int, head: bytes, drip: bytes = b"", steps: int = DRIPS) -> Outcome:
    """Send ``head``, then one byte of ``drip`` every DRIP seconds (nothing when ``drip`` is
    empty), until the server answers or closes or ``steps`` intervals have passed.  After an
    answer that says ``Connection: close``, read to its end; after any other, hang up (the
    server would linger reading a body that is not coming).  ``closed`` says whether the
    server ended the connection."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = bytearray()
    closed = False
    try:
        if head:
            writer.write(head)
            await writer.drain()
        for i in range(steps):
            try:
                piece = await asyncio.wait_for(reader.read(65536), DRIP)
            except TimeoutError:
                piece = None
            if piece == b"":
                closed = True
                break
            if piece:
                got += piece
                break  # answered: stop sending, read to the end below
            if drip:
                writer.write(drip[i % len(drip) : i % len(drip) + 1])
                await writer.drain()
        if not closed and b"\r\nConnection: close\r\n" in got:
            while piece := await asyncio.wait_for(reader.read(65536), 5):
                got += piece
            closed = True
    except ConnectionError:
        closed = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return Outcome(bytes(got), closed, started, time.monotonic())


def body_head(path: str, tok: str, *, multipart: bool, length: int = 100_000) -> bytes:
    """A request head announcing a body of ``length`` bytes (and, for multipart, the start of
    the file part), so that what follows is the file's bytes."""
    ctype = "multipart/form-data; boundary=XyZ" if multipart else "application/octet-stream"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    if multipart:
        head += (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="slow.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
    return head


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


def descriptors(server: ServerProcess) -> int:
    return psutil.Process(server.proc.pid).num_fds()


def client_sockets(server: ServerProcess) -> int:
    """The server's TCP sockets other than its listening one."""
    conns = psutil.Process(server.proc.pid).net_connections(kind="tcp")
    return sum(c.status != psutil.CONN_LISTEN for c in conns)


async def quiet_descriptors(server: ServerProcess) -> int:
    """The server's descriptor count once no client is connected (waiting at most 5 s)."""
    for _ in range(50):
        if client_sockets(server) == 0:
            break
        await asyncio.sleep(0.1)
    return descriptors(server)


async def settle_descriptors(server: ServerProcess, ceiling: int) -> int:
    """The server's descriptor count once it is at most ``ceiling`` and no client socket is
    left, or after 5 s: a connection the client has just closed is gone from the server only
    once it has read the end, and the callers also check that no client socket is left."""
    count = descriptors(server)
    for _ in range(50):
        if count <= ceiling and client_sockets(server) == 0:
            break
        await asyncio.sleep(0.1)
        count = descriptors(server)
    return count
