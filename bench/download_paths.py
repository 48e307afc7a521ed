"""Ways a server can send a page-cached large file, each timed beside aiohttp sending the same
size from memory, with the lean client of :mod:`bench.rawhttp`, repetitions interleaved:

    python -m bench.download_paths                  # 1 GiB, 7 rounds, an aiohttp server on uvloop
    python -m bench.download_paths --loop uvloop,asyncio --size-mib 512 --rounds 5
    python -m bench.download_paths --ways mapped,pump-1024,sendfile --rounds 9

The server under test is a bare aiohttp application in a subprocess (no filesvc code: the ways
themselves; with ``--loop uvloop,asyncio`` one on each loop), each way one route (N in KiB):

- ``mapped``: 8 MiB windows mapped with ``MAP_POPULATE`` in a thread, one ahead, each written
  whole to the transport (filesvc's way before the pump, now its fallback);
- ``pump-N``: a thread that owns the socket for the body (a duplicate of its fd): ``preadv`` into
  a reused N KiB buffer, then a blocking-with-timeout ``send`` of it (filesvc's way until the
  mapped pump);
- ``pumpmap-N``: the same thread sending straight from the file mapped N MiB at a time, in sends
  of at most 1 MiB (filesvc's way: N = 4; one copy per byte, by the kernel, instead of two);
- ``pumpw-N[?sndbuf=B]``: the same with ``os.write`` and ``poll`` on EAGAIN, optionally with
  ``SO_SNDBUF`` set to B;
- ``pump2-N``: two threads, one reading into three N KiB buffers, one sending;
- ``loop-N``: ``preadv`` on the event loop (``RWF_NOWAIT``) into three rotating N KiB buffers
  written to the transport, a buffer reused only once the transport holds none of it;
- ``sendfile``: ``os.sendfile`` from a thread on a duplicate of the socket's fd;
- ``held``: not a way to send a file but a second reference: aiohttp sending the file's bytes
  held in memory (read once into one buffer), 1 MiB views written in turn, as the reference does
  but from distinct memory rather than one cache-resident MiB.

The reference is :class:`bench.ceilings.DiscardServer`'s ``GET /bytes/N`` (views of one 1 MiB
buffer from memory), as in the reads scenario.  Prints per way the median rate, every round, and
the median of each round's ratio to the reference's rate in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mmap
import os
import queue
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

from bench import ceilings, rawhttp
from bench.data import MiB, iter_stream

WAYS = ("mapped", "pump-1024", "pumpmap-4", "pumpmap-8", "pump2-1024", "loop-1024", "held")


def _write_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for piece in iter_stream(size, seed=7):
            f.write(piece)
    with path.open("rb") as f:  # into the page cache
        while f.read(8 * MiB):
            pass


def _serve(path: str, loop_name: str) -> None:
    from aiohttp import web

    pool = ThreadPoolExecutor(16)
    size = os.stat(path).st_size
    window = 8 * MiB

    def mapping(fd: int, start: int, end: int) -> tuple[mmap.mmap, memoryview]:
        base = start - start % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(
            fd,
            end - base,
            flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
            prot=mmap.PROT_READ,
            offset=base,
        )
        return m, memoryview(m)[start - base :]

    async def prepared(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        await resp.write(b"")
        return resp

    async def mapped(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        fd = os.open(path, os.O_RDONLY)
        try:
            resp = await prepared(request)
            pos = 0
            nxt: asyncio.Future[tuple[mmap.mmap, memoryview]] | None
            nxt = loop.run_in_executor(pool, mapping, fd, 0, min(window, size))
            while nxt is not None:
                m, view = await nxt
                pos += len(view)
                nxt = (
                    loop.run_in_executor(pool, mapping, fd, pos, min(pos + window, size))
                    if pos < size
                    else None
                )
                await resp.write(view)
                del view
                with contextlib.suppress(BufferError):
                    m.close()
            await resp.write_eof()
            return resp
        finally:
            os.close(fd)

    def reader(fd: int, bufsize: int, full: queue.Queue[memoryview | None]) -> None:
        bufs = [memoryview(bytearray(bufsize)) for _ in range(3)]
        pos = i = 0
        while pos < size:
            view = bufs[i % 3]
            n = os.preadv(fd, [view[: min(bufsize, size - pos)]], pos)
            if n == 0:
                break
            pos += n
            i += 1
            full.put(view[:n])  # at most one waiting: the sender holds one, the reader fills one
        full.put(None)

    def pump2_body(fd: int, sock_fd: int, bufsize: int) -> int:
        sock = socket.socket(fileno=sock_fd)
        sock.settimeout(60)
        full: queue.Queue[memoryview | None] = queue.Queue(maxsize=1)
        done = pool.submit(reader, fd, bufsize, full)
        sent = 0
        try:
            while (out := full.get()) is not None:
                while out:
                    k = sock.send(out)
                    sent += k
                    out = out[k:]
            done.result()
            return sent
        finally:
            sock.close()

    def pump_body(fd: int, sock_fd: int, bufsize: int) -> int:
        sock = socket.socket(fileno=sock_fd)
        sock.settimeout(60)
        bufs = [bytearray(bufsize), bytearray(bufsize)]
        views = [memoryview(b) for b in bufs]
        pos = i = 0
        try:
            while pos < size:
                view = views[i & 1]
                n = os.preadv(fd, [view[: min(bufsize, size - pos)]], pos)
                if n == 0:
                    break
                pos += n
                i += 1
                out = view[:n]
                while out:
                    out = out[sock.send(out) :]
            return pos
        finally:
            sock.close()

    def pumpw_body(fd: int, sock_fd: int, bufsize: int, sndbuf: int) -> int:
        if sndbuf:
            s = socket.socket(fileno=sock_fd)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            s.detach()
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        view = memoryview(bytearray(bufsize))
        pos = 0
        try:
            while pos < size:
                n = os.preadv(fd, [view[: min(bufsize, size - pos)]], pos)
                if n == 0:
                    break
                pos += n
                out = view[:n]
                while out:
                    try:
                        out = out[os.write(sock_fd, out) :]
                    except BlockingIOError:
                        if not poller.poll(60_000):
                            raise TimeoutError from None
            return pos
        finally:
            os.close(sock_fd)

    def pumpmap_body(fd: int, sock_fd: int, window: int) -> int:
        sock = socket.socket(fileno=sock_fd)
        sock.settimeout(60)
        pos = 0
        try:
            while pos < size:
                end = min(pos + window, size)
                m = mmap.mmap(fd, end - pos, prot=mmap.PROT_READ, offset=pos)
                m.madvise(mmap.MADV_SEQUENTIAL)
                with memoryview(m) as view:
                    at = 0
                    while at < len(view):
                        with view[at : at + MiB] as out:
                            at += sock.send(out)
                m.close()
                pos = end
            return pos
        finally:
            sock.close()

    def sendfile_body(fd: int, sock_fd: int) -> int:
        sock = socket.socket(fileno=sock_fd)
        sock.setblocking(True)  # the loop's socket is non-blocking (shared file status)
        try:
            pos = 0
            while pos < size:
                n = os.sendfile(sock_fd, fd, pos, min(size - pos, 64 * MiB))
                if n == 0:
                    break
                pos += n
            return pos
        finally:
            sock.setblocking(False)
            sock.close()

    async def threaded(
        request: web.Request, body: Callable[..., int], *args: object
    ) -> web.StreamResponse:
        """Prepare the response, then hand a duplicate of the connection's socket and the file
        to ``body`` on a thread of the pool; the loop only waits."""
        fd = os.open(path, os.O_RDONLY)
        try:
            resp = await prepared(request)
            transport = request.transport
            assert transport is not None and transport.get_write_buffer_size() == 0
            sock_fd = os.dup(transport.get_extra_info("socket").fileno())
            await asyncio.get_running_loop().run_in_executor(pool, body, fd, sock_fd, *args)
            await resp.write_eof()
            return resp
        finally:
            os.close(fd)

    def kib(request: web.Request) -> int:
        return int(request.match_info["n"]) * 1024

    async def pump(request: web.Request) -> web.StreamResponse:
        return await threaded(request, pump_body, kib(request))

    async def pump2(request: web.Request) -> web.StreamResponse:
        return await threaded(request, pump2_body, kib(request))

    async def pumpw(request: web.Request) -> web.StreamResponse:
        return await threaded(
            request, pumpw_body, kib(request), int(request.query.get("sndbuf", "0"))
        )

    async def pumpmap(request: web.Request) -> web.StreamResponse:
        return await threaded(request, pumpmap_body, int(request.match_info["n"]) * MiB)

    held: list[memoryview] = []

    async def held_bytes(request: web.Request) -> web.StreamResponse:
        if not held:
            with open(path, "rb") as f:
                held.append(memoryview(f.read()))
        resp = await prepared(request)
        for pos in range(0, size, MiB):
            await resp.write(held[0][pos : pos + MiB])
        await resp.write_eof()
        return resp

    async def sendfile(request: web.Request) -> web.StreamResponse:
        return await threaded(request, sendfile_body)

    async def on_loop(request: web.Request) -> web.StreamResponse:
        bufsize = int(request.match_info["n"]) * 1024
        fd = os.open(path, os.O_RDONLY)
        loop = asyncio.get_running_loop()
        try:
            resp = await prepared(request)
            transport = request.transport
            assert transport is not None
            views = [memoryview(bytearray(bufsize)) for _ in range(3)]
            ends = [0, 0, 0]  # bytes written once each buffer's last write was made
            written = pos = i = 0
            while pos < size:
                k = i % 3
                # Reuse buffer k only once the transport holds none of its bytes: what it
                # holds is the tail of what was written.
                while transport.get_write_buffer_size() > written - ends[k]:
                    await asyncio.sleep(0.0002)
                view = views[k][: min(bufsize, size - pos)]
                try:
                    n = os.preadv(fd, [view], pos, os.RWF_NOWAIT)
                except BlockingIOError:
                    n = await loop.run_in_executor(pool, os.preadv, fd, [view], pos)
                if n == 0:
                    break
                pos += n
                transport.write(view[:n])
                written += n
                ends[k] = written
                i += 1
            await resp.write_eof()
            return resp
        finally:
            os.close(fd)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/mapped", mapped)
        app.router.add_get("/pump-{n:[0-9]+}", pump)
        app.router.add_get("/pump2-{n:[0-9]+}", pump2)
        app.router.add_get("/loop-{n:[0-9]+}", on_loop)
        app.router.add_get("/sendfile", sendfile)
        app.router.add_get("/pumpmap-{n:[0-9]+}", pumpmap)
        app.router.add_get("/held", held_bytes)
        app.router.add_get("/pumpw-{n:[0-9]+}", pumpw)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def _measure(
    ports: dict[str, int], ref_port: int, size: int, rounds: int, ways: list[str]
) -> None:
    urls = {
        f"{w} ({loop})": f"http://127.0.0.1:{port}/{w}"
        for loop, port in ports.items()
        for w in ways
    }
    # The median of each round's ratio to the reference of the same round (printed as xN).
    urls["reference"] = f"http://127.0.0.1:{ref_port}/bytes/{size}"
    runs: dict[str, list[float]] = {k: [] for k in urls}
    for url in urls.values():  # warm
        await rawhttp.download(url, (), size)
    for _ in range(rounds):
        for name, url in urls.items():
            t = time.perf_counter()
            await rawhttp.download(url, (), size)
            runs[name].append(size / (time.perf_counter() - t) / 1e9)
    for name, r in runs.items():
        each = " ".join(f"{x:.2f}" for x in r)
        ratio = median(x / y for x, y in zip(r, runs["reference"], strict=True))
        print(f"{name:34s} {median(r):5.2f} GB/s  x{ratio:4.2f}   [{each}]")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.download_paths")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--loop", default="uvloop", help="uvloop, asyncio, or both: uvloop,asyncio (a server each)"
    )
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.loop)
        return
    size = args.size_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="dl-paths-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        path = tmp / "big.bin"
        _write_file(path, size)
        ports = {}
        for loop in args.loop.split(","):
            if loop not in ("uvloop", "asyncio"):
                parser.error(f"unknown loop {loop!r}")
            argv = ["-m", "bench.download_paths", "--serve", str(path), "--loop", loop]
            proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE)
            procs.append(proc)
            assert proc.stdout is not None
            ports[loop] = int(proc.stdout.readline().split()[1])
        with ceilings.DiscardServer() as ref:
            asyncio.run(_measure(ports, ref.port, size, args.rounds, args.ways.split(",")))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
