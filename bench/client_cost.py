"""What the bench's client costs beside the servers it reads from, per 1 MiB range and per GiB
of a large download, for aiohttp's client and the lean one of :mod:`bench.rawhttp`.

    python -m bench.client_cost                        # 256 MiB file, 300 ranges, 2 rounds
    python -m bench.client_cost --big-mib 1024 --ranges 600 --rounds 3
    python -m bench.client_cost --set FILESVC_ENCRYPTION=on

Starts this tree's ``filesvc serve`` and the server code before issue 14
(:data:`bench.before_code.READS_BEFORE`), both plain unless ``--set`` says otherwise, a
SeaweedFS (``weed mini``) and the aiohttp server that sends from memory
(:class:`bench.ceilings.DiscardServer`); puts the same size in each.  Then, round after round,
client after client, subject after subject: random 1 MiB ranges (8 connections, two client
processes, as the ``reads`` scenario makes them) and one large download, and prints per subject
and client the rate, the server's CPU (its process tree, from /proc) and the client's.  On two
shared cores a rate is bound by the sum of the two: a client that costs as much as the server
halves every difference between servers.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import aiohttp

from bench import before_code, ceilings, client, cpu_args, many, peers, rawhttp, seaweedfs
from bench.data import GiB, MiB
from bench.read_cpu import tree_cpu_seconds
from bench.server import ServerProcess

CLIENTS = ("aiohttp", "raw")
RANGE_CONCURRENCY = 8
CLIENT_PROCESSES = 2


@dataclass
class Subject:
    label: str
    pid: int
    # A range workload (its `client` field set per run), or None when the subject has none.
    ranges: many.SmallSpec | None
    # One large download with the given client: the bytes read.
    large: Callable[[str], Awaitable[int]]
    range_runs: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    large_runs: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)


def _whole(url: str, headers: dict[str, str], size: int) -> Callable[[str], Awaitable[int]]:
    async def large(which: str) -> int:
        if which == "raw":
            return await rawhttp.download(url, headers.items(), size)
        async with aiohttp.ClientSession(timeout=client.TIMEOUT) as s:
            return await client.download(s, url, headers)

    return large


def _s3_whole(s3: peers.S3Client, key: str, size: int) -> Callable[[str], Awaitable[int]]:
    async def large(which: str) -> int:
        if which == "raw":
            url, headers = s3.sign(
                "GET", f"/{peers.S3_BUCKET}/{key}", payload_hash=peers.EMPTY_SHA256
            )
            return await rawhttp.download(str(url), headers.items(), size)
        async with aiohttp.ClientSession(timeout=client.TIMEOUT) as s:
            return await s3.get(s, peers.S3_BUCKET, key)

    return large


async def _measure(subject: Subject, which: str, count: int, size: int, seed: int) -> None:
    if subject.ranges is not None:
        spec = many.SmallSpec(**{**subject.ranges.__dict__, "client": which})
        cpu0 = tree_cpu_seconds(subject.pid)
        seconds, _, mine = await asyncio.to_thread(
            many.run_many_cpu, spec, count, RANGE_CONCURRENCY, CLIENT_PROCESSES, seed
        )
        cpu = tree_cpu_seconds(subject.pid) - cpu0
        subject.range_runs.setdefault(which, []).append(
            (count / seconds, 1e6 * cpu / count, 1e6 * mine / count)
        )
    cpu0, mine0, t0 = tree_cpu_seconds(subject.pid), time.process_time(), time.perf_counter()
    n = await subject.large(which)
    seconds = time.perf_counter() - t0
    mine, cpu = time.process_time() - mine0, tree_cpu_seconds(subject.pid) - cpu0
    if n != size:
        raise client.WorkloadError(f"{subject.label}: downloaded {n} bytes, not {size}")
    gib = size / GiB
    subject.large_runs.setdefault(which, []).append((size / seconds / 1e6, cpu / gib, mine / gib))


def _report(subjects: list[Subject]) -> None:
    print("\n1 MiB ranges: req/s, server CPU µs per range, client CPU µs per range (medians)")
    _report_runs(subjects, lambda s: s.range_runs, "req/s", "6,.0f")
    print("large download: MB/s, server CPU s/GiB, client CPU s/GiB (medians)")
    _report_runs(subjects, lambda s: s.large_runs, "MB/s", "5.2f")


def _report_runs(
    subjects: list[Subject],
    runs_of: Callable[[Subject], dict[str, list[tuple[float, float, float]]]],
    unit: str,
    cpu: str,
) -> None:
    """A line per client and subject: the median rate (and every run's), server and client
    CPU per unit of work, in the format ``cpu``."""
    for which in CLIENTS:
        for s in subjects:
            runs = runs_of(s).get(which)
            if runs:
                rate, srv, cli = (median(r[k] for r in runs) for k in range(3))
                every = ", ".join(f"{r[0]:,.0f}" for r in runs)
                print(
                    f"  {which:7} {s.label:34} {rate:7,.0f} {unit} ({every})  server {srv:{cpu}}"
                    f"  client {cli:{cpu}}  sum {srv + cli:{cpu}}"
                )


async def _filesvc(
    work: Path,
    label: str,
    env: dict[str, str],
    secret: str,
    size: int,
    servers: list[ServerProcess],
) -> Subject:
    server, api, fid = await client.started_with_file(servers, work, secret, env, size)
    assert server.proc is not None
    headers = tuple(api.auth.items())
    spec = many.SmallSpec("files-range", api.files_url, headers, MiB, ids=(fid,), span=size)
    return Subject(
        label, server.proc.pid, spec, _whole(api.file_url(fid) + "/download", api.auth, size)
    )


async def _run(env: dict[str, str], size: int, count: int, rounds: int, work: Path) -> None:
    secret = secrets.token_urlsafe(32)
    servers: list[ServerProcess] = []
    weed: seaweedfs.SeaweedFS | None = None
    subjects: list[Subject] = []
    try:
        subjects.append(await _filesvc(work, "filesvc", env, secret, size, servers))
        code = await asyncio.to_thread(
            before_code.extract, before_code.READS_BEFORE, work / "before-code"
        )
        before_env = {**env, **before_code.server_env(code)}
        label = f"filesvc before issue 14 ({before_code.READS_BEFORE})"
        subjects.append(await _filesvc(work, label, before_env, secret, size, servers))
        weed = await asyncio.to_thread(seaweedfs.start_seaweedfs, work / "weed", [peers.S3_BUCKET])
        assert weed.proc is not None
        s3 = peers.seaweedfs_client(weed)
        await peers.wait_s3_writable(s3)
        async with aiohttp.ClientSession(timeout=client.TIMEOUT) as s:
            await s3.put_stream(s, peers.S3_BUCKET, "big", size, 1)
        creds = (peers.S3_BUCKET, s3.key_id, s3.secret)
        spec = many.SmallSpec("s3-get", s3.endpoint, s3=creds, ids=("big",), size=MiB, span=size)
        subjects.append(
            Subject("SeaweedFS S3 GET", weed.proc.pid, spec, _s3_whole(s3, "big", size))
        )
        with ceilings.DiscardServer() as mem:
            subjects.append(
                Subject(
                    "aiohttp from memory",
                    mem.pid,
                    None,
                    _whole(f"{mem.url}/bytes/{size}", {}, size),
                )
            )
            for subject in subjects:  # warm: page cache, first mappings
                await subject.large("raw")
            for k in range(rounds):
                for which in CLIENTS:
                    for subject in subjects:
                        await _measure(subject, which, count, size, k * count)
                        print(f"round {k + 1} {which} {subject.label} done", flush=True)
        _report(subjects)
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
        if weed is not None:
            await asyncio.to_thread(weed.stop)


def main(argv: list[str] | None = None) -> int:
    p = cpu_args.parser("bench.client_cost", __doc__)
    p.add_argument("--big-mib", type=int, default=256, help="the large file's size")
    p.add_argument("--ranges", type=int, default=300, help="1 MiB ranges per measurement")
    p.add_argument("--rounds", type=int, default=2, help="rounds, subjects and clients alternated")
    args = p.parse_args(argv)
    env = {"FILESVC_ENCRYPTION": "off", **cpu_args.settings(args)}
    work = Path(tempfile.mkdtemp(prefix="filesvc-client-cost-"))
    try:
        asyncio.run(_run(env, args.big_mib * MiB, args.ranges, args.rounds, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
