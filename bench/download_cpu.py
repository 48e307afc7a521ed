"""A large download's rate and CPU per GiB, filesvc beside aiohttp sending from memory: the
measure of the download path that a loaded machine distorts least.

    python -m bench.download_cpu                          # plain blobs, 1 GiB, 3 rounds
    python -m bench.download_cpu --before bfb8201         # and older server code, alternated
    python -m bench.download_cpu --set FILESVC_UVLOOP=false --size-mib 512
    python -m bench.download_cpu --set FILESVC_ENCRYPTION=on   # sealed blobs
    python -m bench.download_cpu --before d27919c --client raw  # the reads scenario's client

Starts ``filesvc serve`` (this tree's code, and with ``--before`` older code: a tree or a commit
extracted with ``git archive``, :mod:`bench.before_code`) on fresh data directories with
encryption off unless ``--set`` says otherwise, uploads one file to each, and starts the aiohttp
server that sends the same size from memory (:class:`bench.ceilings.DiscardServer`: one MiB
over and over, and the same bytes held whole in its memory).  Then,
round after round, downloads from each in turn with the same client and prints per subject the
rates (medians and every round) and the CPU seconds per GiB of the server's event loop thread,
of all its threads, and of this client (the client shares the two cores): aiohttp's client, or
with ``--client raw`` the lean one of :mod:`bench.rawhttp` that the reads scenario uses.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import aiohttp

from bench import before_code, ceilings, client, cpu_args, rawhttp
from bench.data import GiB, MiB
from bench.server import ServerProcess, loop_and_cpu


@dataclass
class Subject:
    label: str
    pid: int
    url: str
    headers: dict[str, str]
    runs: list[tuple[float, float, float, float]] = field(default_factory=list)


async def _once(s: aiohttp.ClientSession | None, subject: Subject, size: int) -> None:
    """One download of ``subject`` (with ``s``, or the lean client when ``s`` is None)."""
    loop0, all0 = loop_and_cpu(subject.pid, children=True)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if s is None:
        n = await rawhttp.download(subject.url, subject.headers.items(), size)
    else:
        n = await client.download(s, subject.url, subject.headers)
    seconds = time.perf_counter() - t0
    mine = time.process_time() - c0
    loop1, all1 = loop_and_cpu(subject.pid, children=True)
    if n != size:
        raise client.WorkloadError(f"{subject.label}: downloaded {n} bytes, not {size}")
    gib = size / GiB
    subject.runs.append(
        (size / seconds / 1e6, (loop1 - loop0) / gib, (all1 - all0) / gib, mine / gib)
    )


async def _run(codes: list[tuple[str, dict[str, str]]], size: int, rounds: int, raw: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="filesvc-download-cpu-"))
    secret = secrets.token_urlsafe(32)
    servers: list[ServerProcess] = []
    subjects: list[Subject] = []
    try:
        for label, env in codes:
            server, api, fid = await client.started_with_file(servers, work, secret, env, size)
            assert server.proc is not None
            url = api.file_url(fid) + "/download"
            subjects.append(Subject(label, server.proc.pid, url, api.auth))
        with ceilings.DiscardServer() as mem:
            ref = Subject("aiohttp from memory", mem.pid, f"{mem.url}/bytes/{size}", {})
            held = Subject("aiohttp, bytes held in memory", mem.pid, f"{mem.url}/held/{size}", {})
            subjects.insert(0, held)
            async with aiohttp.ClientSession(timeout=client.TIMEOUT) as s:
                for _ in range(rounds):
                    for subject in (ref, *subjects):
                        await _once(None if raw else s, subject, size)
        base = median(r[0] for r in ref.runs)
        for subject in (ref, *subjects):
            rates = [r[0] for r in subject.runs]
            loop, total, mine = (median(r[k] for r in subject.runs) for k in (1, 2, 3))
            print(
                f"{subject.label}: {median(rates):,.0f} MB/s ({median(rates) / base:.2f} x from "
                f"memory; rounds {', '.join(f'{r:,.0f}' for r in rates)}); CPU s/GiB: loop "
                f"{loop:.2f}, server {total:.2f}, client {mine:.2f}",
                flush=True,
            )
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = cpu_args.parser("bench.download_cpu", __doc__)
    p.add_argument("--size-mib", type=int, default=GiB // MiB, help="the file's size")
    p.add_argument("--rounds", type=int, default=3, help="downloads from each, interleaved")
    p.add_argument("--before", metavar="DIR_OR_COMMIT", help="older server code beside this")
    p.add_argument(
        "--client", choices=("aiohttp", "raw"), default="aiohttp", help="the downloading client"
    )
    args = p.parse_args(argv)
    env = {"FILESVC_ENCRYPTION": "off", **cpu_args.settings(args)}
    with before_code.codes(args.before, env) as codes:
        asyncio.run(_run(codes, args.size_mib * MiB, args.rounds, args.client == "raw"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
