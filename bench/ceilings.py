"""Ceilings, measured in the same run as filesvc: what the machine can do at best.

- `disk_write`: the same bytes written in 1 MiB writes to a new file, then `fdatasync`.
- `loopback_copy`: the same number of bytes over loopback TCP, sender and receiver in separate
  processes (so the copy gets both cores, as client and server do).
- `DiscardServer`: an aiohttp server in a subprocess that reads every request body with
  `readany()` and throws it away; the scenarios send it the very body they send filesvc. Its
  `GET /bytes/N` streams N bytes from memory, what the same aiohttp client can download: views
  of one 1 MiB block, which stays in the CPU's cache.  `GET /held/N` sends the same N bytes
  from a copy of them held whole in memory (made on the first request), views of distinct
  memory read from DRAM as a page-cached file's bytes are.

Run as `python -m bench.ceilings discard` to start the discard server alone (prints `PORT n`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench.data import BLOCK, iter_stream

STARTUP_TIMEOUT_S = 20.0  # a Python + aiohttp import on a loaded 2-core box takes a few seconds


def disk_write(directory: Path, size: int, seed: int, *, keep: bool = True) -> float:
    """Seconds to write stream `seed` (`size` bytes) to a new file and fdatasync it.

    With `keep` (the default) the file stays until the caller removes `directory`, as filesvc's
    blobs stay: on this VM's disk, writing blocks that were written and freed a moment ago is
    about 5x faster (≈1.8 GB/s) than writing fresh ones (≈0.35 GB/s), so deleting each file
    before the next repetition measures the fast case, which no store of kept files sees."""
    path = directory / f"ceiling-{seed}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for piece in iter_stream(size, seed):
            view = memoryview(piece)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        os.fdatasync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)
        if not keep:
            path.unlink(missing_ok=True)


def _sink(conn: Connection, size: int) -> None:
    """Receiver process: accept one connection, read `size` bytes, answer one byte."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        conn.send(srv.getsockname()[1])
        peer, _ = srv.accept()
        with peer:
            buf = bytearray(BLOCK)
            got = 0
            while got < size:
                n = peer.recv_into(buf)
                if n == 0:
                    break
                got += n
            peer.sendall(b"k")
    conn.send(got)


def loopback_copy(size: int) -> float:
    """Seconds to push `size` bytes through loopback TCP to another process and get its ack."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sink, args=(child, size), daemon=True)
    proc.start()
    try:
        if not parent.poll(STARTUP_TIMEOUT_S):
            raise RuntimeError("loopback sink did not start")
        port = int(parent.recv())
        with socket.create_connection(("127.0.0.1", port)) as s:
            t0 = time.perf_counter()
            for piece in iter_stream(size, seed=0):
                s.sendall(piece)
            if s.recv(1) != b"k":
                raise RuntimeError("loopback sink did not acknowledge")
            elapsed = time.perf_counter() - t0
        if parent.poll(STARTUP_TIMEOUT_S) and int(parent.recv()) != size:
            raise RuntimeError("loopback sink received a short stream")
        return elapsed
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()


class DiscardServer:
    """An aiohttp read-and-discard server in a subprocess; use as a context manager."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> DiscardServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.ceilings", "discard"],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        line = b""
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if line.startswith(b"PORT ") or not line:
                break
        if not line.startswith(b"PORT "):
            self.__exit__(None, None, None)
            raise RuntimeError("discard server did not start")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None


def _serve_discard() -> None:
    from aiohttp import web

    async def discard(request: web.Request) -> web.Response:
        n = 0
        while True:
            data = await request.content.readany()
            if not data:
                break
            n += len(data)
        return web.json_response({"resource": {"id": "discard", "size": n}})

    async def send(request: web.Request) -> web.StreamResponse:
        """`n` bytes of the bench stream from memory: what an aiohttp client can download."""
        n = int(request.match_info["n"])
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = n
        await resp.prepare(request)
        for piece in iter_stream(n, seed=0):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    held: dict[int, memoryview] = {}

    async def send_held(request: web.Request) -> web.StreamResponse:
        """The same `n` bytes from one copy of them in memory: distinct memory, not one MiB
        that stays in the CPU's cache (only the latest size is kept)."""
        n = int(request.match_info["n"])
        if n not in held:
            held.clear()
            held[n] = memoryview(b"".join(iter_stream(n, seed=0)))
        view = held[n]
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = n
        await resp.prepare(request)
        for pos in range(0, n, BLOCK):
            await resp.write(view[pos : pos + BLOCK])
        await resp.write_eof()
        return resp

    document = {"resource": {"id": "bare", "name": "constant.bin", "size": 4096}}

    async def constant_json(request: web.Request) -> web.Response:
        """The least a JSON GET costs in aiohttp: the reference for metadata reads."""
        return web.json_response(document)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/bytes/{n:[0-9]+}", send)
        app.router.add_route("GET", "/held/{n:[0-9]+}", send_held)
        app.router.add_route("GET", "/json", constant_json)
        app.router.add_route("POST", "/{tail:.*}", discard)
        app.router.add_route("PUT", "/{tail:.*}", discard)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings")
    parser.add_argument("what", choices=["discard"])
    parser.parse_args()
    _serve_discard()
