"""Server CPU per read request: the measure of read cost that a loaded machine distorts least.

    python -m bench.read_cpu                         # embedded default: 4 KiB and metadata GETs
    python -m bench.read_cpu --requests 3000 --set FILESVC_WORKERS=2
    python -m bench.read_cpu --ranges                # random 1 MiB ranges of a 256 MiB file
    python -m bench.read_cpu --ranges --before a06f163 --rounds 3   # old and new code, alternated

Starts ``filesvc serve`` (this tree's code) on a fresh data directory, uploads 500 files of
4 KiB (or, with ``--ranges``, one large file), then runs 4 KiB downloads and metadata GETs (48
connections, two client processes) or random 1 MiB ranges (8 connections) and prints, for each,
the rate and the CPU the server's process tree used per request (user + system, from /proc,
before and after).  Rates move with the machine's load; CPU per request much less.

``--before`` runs older server code too (a tree, or a commit of this repository extracted with
``git archive``; :mod:`bench.before_code`), the two alternated ``--rounds`` times, so old and new
code are measured back to back.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench import before_code, client, cpu_args, many
from bench.data import MiB
from bench.server import filesvc_server, process_tree

FILES = 500
SMALL = 4096
CONCURRENCY = 48
CLIENT_PROCESSES = 2
RANGE = MiB
RANGE_CONCURRENCY = 8
BIG = 256 * MiB


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants."""
    return sum(tree_cpu_split(pid))


def minor_faults(pid: int) -> int:
    """Minor page faults of a process and its descendants so far (fresh memory touched)."""
    total = 0
    for proc in process_tree(pid):
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[7])  # minflt: the 10th field, the 8th after the name
    return total


def tree_write_bytes(pid: int) -> int:
    """Bytes a process and its descendants have sent to storage so far (``write_bytes`` of
    /proc/<pid>/io: counted when a page is dirtied, whoever writes it back later)."""
    total = 0
    for proc in process_tree(pid):
        try:
            total += proc.io_counters().write_bytes
        except psutil.Error:
            continue
    return total


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its descendants."""
    user = system = 0.0
    for proc in process_tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        user += times.user
        system += times.system
    return float(user), float(system)


async def _fill(api: client.FilesApi, ranges: bool, big: int) -> tuple[str, ...]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=client.TIMEOUT) as s:
        if ranges:
            return (await client.upload_single(s, api, big, 1, multipart=False),)
        return await client.upload_small_files(s, api, FILES, SMALL, "r")


Workload = tuple[many.SmallSpec, int, str]


def _workloads(
    api: client.FilesApi, ids: tuple[str, ...], ranges: bool, big: int
) -> list[Workload]:
    headers = tuple(api.auth.items())
    if ranges:
        spec = many.SmallSpec("files-range", api.files_url, headers, RANGE, ids=ids, span=big)
        return [(spec, RANGE_CONCURRENCY, "1 MiB range")]
    return [
        (
            many.SmallSpec("files-download", api.files_url, headers, SMALL, ids=ids),
            CONCURRENCY,
            "4 KiB download",
        ),
        (
            many.SmallSpec("files-get", api.files_url, headers, 0, ids=ids),
            CONCURRENCY,
            "metadata GET",
        ),
    ]


def measure(
    requests: int, env: dict[str, str], *, ranges: bool = False, big: int = BIG, label: str = ""
) -> list[str]:
    """One line per workload: rate and server CPU per request."""
    work = Path(tempfile.mkdtemp(prefix="filesvc-read-cpu-"))
    secret = secrets.token_urlsafe(32)
    server = filesvc_server(work / "data", work / "filesvc.log", secret, env=env)
    try:
        server.start()
        assert server.proc is not None
        api = client.FilesApi.local(server.port, "bench", secret)
        client.wait_ready(api.base_url)
        ids = asyncio.run(_fill(api, ranges, big))
        out = []
        for spec, conc, what in _workloads(api, ids, ranges, big):
            many.run_many(spec, min(requests, 500), conc, CLIENT_PROCESSES, 0)  # warm
            user0, sys0 = tree_cpu_split(server.proc.pid)
            faults0 = minor_faults(server.proc.pid)
            seconds, _ = many.run_many(spec, requests, conc, CLIENT_PROCESSES, requests)
            user1, sys1 = tree_cpu_split(server.proc.pid)
            faults = (minor_faults(server.proc.pid) - faults0) / requests
            user, system = (user1 - user0) / requests, (sys1 - sys0) / requests
            out.append(
                f"{label}{what}: {requests / seconds:,.0f} req/s, "
                f"server CPU {1e6 * (user + system):,.0f} µs per request "
                f"(user {1e6 * user:,.0f}, system {1e6 * system:,.0f}; "
                f"{faults:,.0f} page faults)"
            )
        return out
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = cpu_args.parser("bench.read_cpu", __doc__)
    p.add_argument("--requests", type=int, default=None, help="requests per workload")
    p.add_argument("--ranges", action="store_true", help="random 1 MiB ranges of one large file")
    p.add_argument("--big-mib", type=int, default=BIG // MiB, help="the large file's size")
    p.add_argument(
        "--before",
        metavar="DIR_OR_COMMIT",
        help="older server code to alternate with: a tree, or a commit to extract "
        f"(e.g. {before_code.READS_BEFORE}, the code before issue 14)",
    )
    p.add_argument("--rounds", type=int, default=1, help="alternations (with --before)")
    args = p.parse_args(argv)
    env = cpu_args.settings(args)
    requests = args.requests or (1000 if args.ranges else 3000)
    subjects = [("", env)]
    scratch = Path(tempfile.mkdtemp(prefix="filesvc-read-cpu-code-"))
    try:
        if args.before is not None:
            code = before_code.tree(args.before, scratch / "before")
            subjects = [("before: ", {**env, **before_code.server_env(code)}), ("after:  ", env)]
        _alternate(subjects, args.rounds, requests, args.ranges, args.big_mib * MiB)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _alternate(
    subjects: list[tuple[str, dict[str, str]]], rounds: int, requests: int, ranges: bool, big: int
) -> None:
    for _ in range(rounds):
        for label, subject_env in subjects:
            for line in measure(requests, subject_env, ranges=ranges, big=big, label=label):
                print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
