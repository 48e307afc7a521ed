"""Server CPU per read request: the measure of read cost that a loaded machine distorts least.

    python -m bench.read_cpu                         # embedded default
    python -m bench.read_cpu --requests 3000 --set FILESVC_WORKERS=2

Starts ``filesvc serve`` (this tree's code) on a fresh data directory, uploads 500 files of
4 KiB, then runs 4 KiB downloads and metadata GETs (48 connections, two client processes) and
prints, for each, the rate and the CPU the server's process tree used per request (user + system,
from /proc, before and after).  Rates move with the machine's load; CPU per request much less.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench import client
from bench.server import filesvc_server

FILES = 500
SMALL = 4096
CONCURRENCY = 48
CLIENT_PROCESSES = 2


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return float(total)


async def _fill(api: client.FilesApi) -> tuple[str, ...]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        return await client.upload_small_files(s, api, FILES, SMALL, "r")


def measure(requests: int, env: dict[str, str]) -> list[str]:
    """One line per workload: rate and server CPU per request."""
    work = Path(tempfile.mkdtemp(prefix="filesvc-read-cpu-"))
    secret = secrets.token_urlsafe(32)
    server = filesvc_server(work / "data", work / "filesvc.log", secret, env=env)
    try:
        server.start()
        assert server.proc is not None
        api = client.FilesApi.local(server.port, "bench", secret)
        client.wait_ready(api.base_url)
        ids = asyncio.run(_fill(api))
        out = []
        headers = tuple(api.auth.items())
        workloads: list[tuple[client.SmallKind, int, str]] = [
            ("files-download", SMALL, "4 KiB download"),
            ("files-get", 0, "metadata GET"),
        ]
        for kind, size, label in workloads:
            spec = client.SmallSpec(kind, api.files_url, headers, size, ids=ids)
            client.run_many(spec, 500, CONCURRENCY, CLIENT_PROCESSES, 0)  # warm
            before = tree_cpu_seconds(server.proc.pid)
            seconds, _ = client.run_many(spec, requests, CONCURRENCY, CLIENT_PROCESSES, 0)
            used = tree_cpu_seconds(server.proc.pid) - before
            out.append(
                f"{label}: {requests / seconds:,.0f} req/s, "
                f"server CPU {1e6 * used / requests:,.0f} µs per request"
            )
        return out
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.read_cpu", description=__doc__)
    p.add_argument("--requests", type=int, default=3000, help="requests per workload")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a server setting"
    )
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.set)
    for line in measure(args.requests, env):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
