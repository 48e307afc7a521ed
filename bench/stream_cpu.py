"""CPU per GiB of a streamed upload and download, sealed against plain: the measure of the
encryption's cost that a loaded machine distorts least.

    python -m bench.stream_cpu                     # 256 MiB, 3 interleaved rounds
    python -m bench.stream_cpu --size-mib 1024 --rounds 2

Starts two ``filesvc serve`` (this tree's code) on fresh data directories, one sealing blobs and
one with ``FILESVC_ENCRYPTION=off``, then, round after round, uploads a raw body to each and
downloads it back.  For each transfer it prints the rate (which moves with the machine's load),
and the CPU seconds per GiB used by the server's event loop thread, by all the server's threads,
and by this client: what a single stream is bound by on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped, unused-ignore]

from bench import client
from bench.data import GiB, MiB
from bench.server import ServerProcess, filesvc_server

KINDS = ("plain", "sealed")


@dataclass
class Sample:
    seconds: float
    loop_cpu: float
    server_cpu: float
    client_cpu: float


def _cpu(pid: int) -> tuple[float, float]:
    """(event loop thread, whole process) CPU seconds of a server process."""
    proc = psutil.Process(pid)
    loop = 0.0
    for t in proc.threads():
        if t.id == pid:
            loop = t.user_time + t.system_time
    times = proc.cpu_times()
    return loop, float(times.user + times.system)


async def _timed(pid: int, work: Callable[[], Awaitable[object]]) -> Sample:
    loop0, all0 = _cpu(pid)
    c0 = time.process_time()
    t0 = time.perf_counter()
    await work()
    seconds = time.perf_counter() - t0
    c1 = time.process_time()
    loop1, all1 = _cpu(pid)
    return Sample(seconds, loop1 - loop0, all1 - all0, c1 - c0)


def _line(what: str, size: int, samples: list[Sample]) -> str:
    gib = size / GiB * len(samples)
    secs = sum(s.seconds for s in samples)
    return (
        f"{what:<16} {size * len(samples) / secs / 1e6:7.0f} MB/s   CPU s/GiB: loop"
        f" {sum(s.loop_cpu for s in samples) / gib:5.2f}, server"
        f" {sum(s.server_cpu for s in samples) / gib:5.2f}, client"
        f" {sum(s.client_cpu for s in samples) / gib:5.2f}"
    )


async def _run(
    servers: dict[str, ServerProcess], secret: str, size: int, rounds: int, kinds: list[str]
) -> None:
    apis = {k: client.FilesApi.local(p.port, "bench", secret) for k, p in servers.items()}
    ups: dict[str, list[Sample]] = {k: [] for k in kinds}
    downs: dict[str, list[Sample]] = {k: [] for k in kinds}
    async with aiohttp.ClientSession() as s:
        for r in range(rounds):
            for kind in kinds:
                api = apis[kind]
                pid = servers[kind].proc.pid  # type: ignore[union-attr]
                ids: list[str] = []

                async def up(
                    api: client.FilesApi = api, ids: list[str] = ids, seed: int = 1000 + r
                ) -> None:
                    ids.append(await client.upload_single(s, api, size, seed, multipart=False))

                ups[kind].append(await _timed(pid, up))
                url = api.file_url(ids[0]) + "/download"

                async def down(api: client.FilesApi = api, url: str = url) -> None:
                    if await client.download(s, url, api.auth) != size:
                        raise RuntimeError("short download")

                downs[kind].append(await _timed(pid, down))
    for kind in kinds:
        print(_line(f"{kind} upload", size, ups[kind]))
    for kind in kinds:
        print(_line(f"{kind} download", size, downs[kind]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=KINDS, help="measure one kind of server")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filesvc-stream-cpu-"))
    secret = secrets.token_urlsafe(32)
    servers = {
        kind: filesvc_server(
            work / f"{kind}-data",
            work / f"{kind}.log",
            secret,
            env={"FILESVC_ENCRYPTION": "on" if kind == "sealed" else "off"},
        )
        for kind in KINDS
    }
    try:
        for proc in servers.values():
            proc.start()
            client.wait_ready(f"http://127.0.0.1:{proc.port}")
        print(f"pids: {', '.join(f'{k} {p.proc.pid}' for k, p in servers.items() if p.proc)}")
        if os.environ.get("STREAM_CPU_PAUSE"):
            input("press enter to start")
        kinds = [args.only] if args.only else list(KINDS)
        asyncio.run(_run(servers, secret, args.size_mib * MiB, args.rounds, kinds))
    finally:
        for proc in servers.values():
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
