"""CPU per small upload, server and client: the measure of write cost that a loaded machine
distorts least, beside the peers the targets compare with.

    python -m bench.write_cpu                          # embedded default, encryption on
    python -m bench.write_cpu --peers                  # also SeaweedFS S3 PUT and @tus/server
    python -m bench.write_cpu --floor                  # also a bare aiohttp read-and-discard
    python -m bench.write_cpu --set FILESVC_WORKERS=2 --workload files-raw
    python -m bench.write_cpu --workload tus-post --py-spy /tmp/prof [--idle]
    python -m bench.write_cpu --workload files-raw --before c66bb4b --rounds 4   # A/B

Starts ``filesvc serve`` (this tree's code) on a fresh data directory and runs 4 KiB uploads
as the bench's ``small`` scenario sends them (raw body and multipart through the files API, and
tus creation-with-upload; 64 connections from two client processes).  For each it prints the
rate, the server's CPU per upload (user + system of its process tree, from /proc, before and
after), the client processes' CPU per upload, the cores the server kept busy meanwhile (CPU ÷
wall time: well under one per server process on an idle machine means it was waiting, not
computing), the median latency, and the bytes the server's processes sent to storage per
upload (``write_bytes`` of /proc/<pid>/io: the write amplification of a durable small upload,
whose page copies and writeback the kernel spends CPU on too).  With ``--peers`` the same for
a SeaweedFS S3 PUT and an ``@tus/server`` creation-with-upload of the same bodies: on a machine
where the server and the client share the cores, the rates compare as the sums of server and
client CPU do.  The client's CPU is what its processes spent on the requests (their start-up
left out).  With ``--floor`` also a bare aiohttp server that reads each body and discards it
(``bench.ceilings``): what aiohttp alone costs per request, the part of filesvc's figure no
change of ours can remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import before_code, ceilings, client, cpu_args, many, peers, seaweedfs, trash
from bench.read_cpu import tree_cpu_split, tree_write_bytes
from bench.server import filesvc_server, venv_bin

SMALL = 4096
CONCURRENCY = 64
CLIENT_PROCESSES = 2
WARM = 300
WORKLOADS: dict[str, str] = {
    "files-raw": "filesvc 4 KiB upload, raw body",
    "files-multipart": "filesvc 4 KiB upload, multipart",
    "tus-post": "filesvc 4 KiB tus creation-with-upload",
}
PEER_PUT = "peer: SeaweedFS S3 PUT 4 KiB"
PEER_TUS = "peer: @tus/server creation-with-upload 4 KiB"
FLOOR = "floor: aiohttp read-and-discard 4 KiB"


@dataclass(frozen=True)
class Target:
    """One workload against one running server."""

    label: str
    spec: many.SmallSpec
    pid: int  # the server's process (its tree is counted)


@contextlib.contextmanager
def _profiled(pid: int, out: Path | None, idle: bool) -> Iterator[None]:
    """py-spy sampling the server's process tree meanwhile, written as collapsed stacks to
    ``out``."""
    if out is None:
        yield
        return
    exe = venv_bin("py-spy")
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy into the venv)")
    argv = [exe, "record", "--pid", str(pid), "--subprocesses", "--format", "raw"]
    argv += ["--rate", "250", "--output", str(out)]
    # Who holds the GIL (the CPU of the Python side), or with ``idle`` every thread's stack
    # whether running or waiting (where uploads wait).
    argv.append("--idle" if idle else "--gil")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def run_one(
    target: Target, requests: int, concurrency: int, seed: int, profile: Path | None, idle: bool
) -> str:
    """Warm up, then ``requests`` uploads: one line of figures."""
    many.run_many(target.spec, WARM, concurrency, CLIENT_PROCESSES, seed)
    seed += WARM
    with _profiled(target.pid, profile, idle):
        user0, sys0 = tree_cpu_split(target.pid)
        written0 = tree_write_bytes(target.pid)
        t0 = time.perf_counter()
        seconds, lat, client_used = many.run_many_cpu(
            target.spec, requests, concurrency, CLIENT_PROCESSES, seed
        )
        wall = time.perf_counter() - t0
        user1, sys1 = tree_cpu_split(target.pid)
        written = tree_write_bytes(target.pid) - written0
        user, system = user1 - user0, sys1 - sys0
        used = user + system
    return (
        f"{target.label}: {requests / seconds:,.0f} req/s, "
        f"server CPU {1e6 * used / requests:,.0f} µs per upload "
        f"(user {1e6 * user / requests:,.0f}, system {1e6 * system / requests:,.0f}), "
        f"client {1e6 * client_used / requests:,.0f} µs, "
        f"server + client {1e6 * (used + client_used) / requests:,.0f} µs, "
        f"{used / wall:.2f} cores busy, p50 {1e3 * statistics.median(lat):.1f} ms, "
        f"disk writes {written / requests / 1024:,.1f} KiB per upload"
    )


@contextlib.contextmanager
def _filesvc(
    work: Path, env: dict[str, str], workloads: list[str], tag: str = ""
) -> Iterator[list[Target]]:
    secret = secrets.token_urlsafe(32)
    name = f"data{tag and '-'}{tag}"
    server = filesvc_server(work / name, work / f"{name}.log", secret, env=env)
    try:
        server.start()
        assert server.proc is not None
        api = client.FilesApi.local(server.port, "bench", secret)
        client.wait_ready(api.base_url)
        headers = tuple(api.auth.items())
        targets = []
        for kind in workloads:
            url = api.uploads_url if kind == "tus-post" else api.files_url
            spec = many.SmallSpec(kind, url, headers, SMALL)  # type: ignore[arg-type]
            label = WORKLOADS[kind] + (f" ({tag})" if tag else "")
            targets.append(Target(label, spec, server.proc.pid))
        yield targets
    finally:
        server.stop()


@contextlib.contextmanager
def _seaweedfs(work: Path) -> Iterator[Target]:
    server = seaweedfs.start_seaweedfs(work / "seaweedfs", [peers.S3_BUCKET])
    try:
        s3 = peers.seaweedfs_client(server)
        asyncio.run(peers.wait_s3_writable(s3))
        assert server.proc is not None
        spec = many.SmallSpec(
            "s3-put", s3.endpoint, s3=(peers.S3_BUCKET, s3.key_id, s3.secret), size=SMALL
        )
        yield Target(PEER_PUT, spec, server.proc.pid)
    finally:
        server.stop()


@contextlib.contextmanager
def _floor() -> Iterator[Target]:
    with ceilings.DiscardServer() as server:
        spec = many.SmallSpec("files-raw", f"{server.url}/files", size=SMALL)
        yield Target(FLOOR, spec, server.pid)


@contextlib.contextmanager
def _tus(work: Path) -> Iterator[Target]:
    peers.ensure_tus()
    proc = peers.tus_server(work / "tus", work / "tus.log")
    try:
        proc.start()
        assert proc.proc is not None
        spec = many.SmallSpec("tus-post", f"http://127.0.0.1:{proc.port}/files", size=SMALL)
        yield Target(PEER_TUS, spec, proc.proc.pid)
    finally:
        proc.stop()


def measure(
    requests: int,
    env: dict[str, str],
    workloads: list[str],
    *,
    with_peers: bool = False,
    with_floor: bool = False,
    concurrency: int = CONCURRENCY,
    rounds: int = 1,
    profile_dir: Path | None = None,
    idle: bool = False,
    before: str | None = None,
) -> list[str]:
    """One line per target and round, rounds interleaved across the targets (their order
    reversed every other round).  With ``before`` (a commit or a directory of older code),
    the same filesvc workloads on that code too, beside this tree's."""
    trash.settle()
    work = Path(tempfile.mkdtemp(prefix="filesvc-write-cpu-"))
    seed = 0
    out: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            targets = list(stack.enter_context(_filesvc(work, env, workloads)))
            if before is not None:
                code = before_code.tree(before, work / "before-code")
                old_env = {**env, **before_code.server_env(code)}
                targets += stack.enter_context(
                    _filesvc(work, old_env, workloads, f"before: {before}")
                )
            if with_peers:
                targets.append(stack.enter_context(_seaweedfs(work)))
                if "tus-post" in workloads:
                    targets.append(stack.enter_context(_tus(work)))
            if with_floor:
                targets.append(stack.enter_context(_floor()))
            for r in range(rounds):
                order = list(enumerate(targets))
                for i, target in order if r % 2 == 0 else reversed(order):
                    prof = None if profile_dir is None else profile_dir / f"{i}-{r + 1}.txt"
                    line = run_one(target, requests, concurrency, seed, prof, idle)
                    seed += WARM + requests
                    line = f"{line} (round {r + 1})"
                    print(line, flush=True)
                    out.append(line)
        return out
    finally:
        trash.retire(work)


def main(argv: list[str] | None = None) -> int:
    p = cpu_args.parser("bench.write_cpu", __doc__)
    p.add_argument("--requests", type=int, default=3000, help="uploads per workload")
    p.add_argument("--rounds", type=int, default=1, help="repetitions, interleaved")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="connections")
    p.add_argument(
        "--workload",
        action="append",
        choices=sorted(WORKLOADS),
        help="a filesvc workload (default: all three)",
    )
    p.add_argument("--peers", action="store_true", help="also SeaweedFS and @tus/server")
    p.add_argument("--floor", action="store_true", help="also a bare aiohttp discard server")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile each server with py-spy --gil during each measured run (collapsed "
        "stacks into DIR, one file per target and round; py-spy must be in the venv)",
    )
    p.add_argument(
        "--idle", action="store_true", help="with --py-spy: every thread, waiting or not"
    )
    p.add_argument(
        "--before",
        metavar="COMMIT",
        help="also run the filesvc workloads on older code (a commit of this repository, or "
        "a directory holding its tree), alternating with this tree's round by round",
    )
    args = p.parse_args(argv)
    env = cpu_args.settings(args)
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    try:
        measure(
            args.requests,
            env,
            args.workload or list(WORKLOADS),
            with_peers=args.peers,
            with_floor=args.floor,
            concurrency=args.concurrency,
            rounds=args.rounds,
            profile_dir=args.py_spy,
            idle=args.idle,
            before=args.before,
        )
    finally:
        trash.empty()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
