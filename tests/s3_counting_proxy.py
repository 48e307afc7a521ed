"""A TCP proxy in front of the real SeaweedFS that counts the HTTP requests passing through it, so
a test can say how many requests a read cost the S3 engine (no mock: every byte still goes to
SeaweedFS and back unchanged, signatures included)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Seen:
    """Each request as ``(method, path, Range header or "")``, in order."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def gets(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] == "GET"]

    def clear(self) -> None:
        self.requests.clear()


async def _requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
    """Copy HTTP/1.1 requests from ``reader`` to ``writer``, noting each one's line."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            seen.requests.append((method, path, headers.get("range", "")))
            writer.write(head)
            if "chunked" in headers.get("transfer-encoding", ""):
                raise NotImplementedError("chunked request bodies")  # obstore sends lengths
            left = int(headers.get("content-length", "0"))
            while left:
                data = await reader.read(min(left, 1 << 16))
                if not data:
                    return
                writer.write(data)
                left -= len(data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@asynccontextmanager
async def counting_proxy(endpoint: str) -> AsyncIterator[tuple[str, Seen]]:
    """``(endpoint of the proxy, what it saw)`` for an S3 ``endpoint`` (http://HOST:PORT)."""
    up = urlsplit(endpoint)
    assert up.hostname is not None and up.port is not None
    host, port = up.hostname, up.port
    seen = Seen()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        both = [
            asyncio.ensure_future(_requests(client_r, server_w, seen)),
            asyncio.ensure_future(_pipe(server_r, client_w)),
        ]
        tasks.update(both)
        await asyncio.gather(*both, return_exceptions=True)
        tasks.difference_update(both)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    bound = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}", seen
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
