"""CPU per GiB of a streamed upload and download, sealed against plain: the measure of the
encryption's cost that a loaded machine distorts least.

    python -m bench.stream_cpu                     # 256 MiB, 3 interleaved rounds
    python -m bench.stream_cpu --size-mib 1024 --rounds 2
    python -m bench.stream_cpu --tus --multipart --no-download --before bfb8201

Starts two ``filesvc serve`` (this tree's code) on fresh data directories, one sealing blobs and
one with ``FILESVC_ENCRYPTION=off``, then, round after round, uploads a raw body to each and
downloads it back.  For each transfer it prints the rate (which moves with the machine's load),
and the CPU seconds per GiB used by the server's event loop thread, by all the server's threads,
and by this client: what a single stream is bound by on two cores.  ``--before`` adds the same
two servers running older code (a tree, or a commit extracted with ``git archive``), measured
in the same rounds.
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

from bench import before_code, client, peers
from bench.data import GiB, MiB
from bench.server import ServerProcess, filesvc_server, loop_and_cpu

KINDS = ("plain", "sealed")


@dataclass
class Sample:
    seconds: float
    loop_cpu: float
    server_cpu: float
    client_cpu: float
    tail: float | None  # from the last byte sent to the answer (tus PATCH)


async def _timed(
    pid: int, work: Callable[[], Awaitable[object]], sent: list[float] | None = None
) -> Sample:
    loop0, all0 = loop_and_cpu(pid)
    c0 = time.process_time()
    t0 = time.perf_counter()
    await work()
    t1 = time.perf_counter()
    c1 = time.process_time()
    loop1, all1 = loop_and_cpu(pid)
    tail = t1 - sent[-1] if sent else None
    return Sample(t1 - t0, loop1 - loop0, all1 - all0, c1 - c0, tail)


def _line(what: str, size: int, samples: list[Sample]) -> str:
    gib = size / GiB * len(samples)
    secs = sum(s.seconds for s in samples)
    tails = sorted(s.tail for s in samples if s.tail is not None)
    tail = f", tail median {tails[len(tails) // 2] * 1000:4.0f} ms" if tails else ""
    return (
        f"{what:<16} {size * len(samples) / secs / 1e6:7.0f} MB/s   CPU s/GiB: loop"
        f" {sum(s.loop_cpu for s in samples) / gib:5.2f}, server"
        f" {sum(s.server_cpu for s in samples) / gib:5.2f}, client"
        f" {sum(s.client_cpu for s in samples) / gib:5.2f}{tail}"
    )


async def _run(
    servers: dict[str, ServerProcess],
    secret: str,
    size: int,
    rounds: int,
    tus: tuple[str, int] | None,
    *,
    multipart: bool = False,
    download: bool = True,
) -> None:
    """``tus``: @tus/server's creation URL and pid, to measure its PATCH beside filesvc's."""
    apis = {k: client.FilesApi.local(p.port, "bench", secret) for k, p in servers.items()}
    lines: dict[str, list[Sample]] = {}

    async def measure(
        what: str, pid: int, work: Callable[[], Awaitable[object]], sent: list[float] | None = None
    ) -> None:
        # The page cache flushed first (untimed): the peer does not fsync, and a flush of its
        # bytes must not land in the next subject's time.
        await asyncio.to_thread(os.sync)
        lines.setdefault(what, []).append(await _timed(pid, work, sent))

    async with aiohttp.ClientSession() as s:
        for r in range(rounds):
            seed = 1000 + 10 * r
            # Every other round in the other order: two servers running the same code, always
            # in the same order, gave the first one 1.08-1.45x the second's rate (four runs of
            # 1 GiB sealed PATCHes, loaded machine), which must not pass for the code's doing.
            order = list(apis.items())
            for kind, api in order if r % 2 == 0 else reversed(order):
                pid = servers[kind].proc.pid  # type: ignore[union-attr]
                ids: list[str] = []

                async def up(
                    api: client.FilesApi = api, ids: list[str] = ids, seed: int = seed
                ) -> None:
                    ids.append(await client.upload_single(s, api, size, seed, multipart=False))

                await measure(f"{kind} upload", pid, up)
                if multipart:

                    async def up_mp(api: client.FilesApi = api, seed: int = seed + 3) -> None:
                        await client.upload_single(s, api, size, seed, multipart=True)

                    await measure(f"{kind} multipart", pid, up_mp)
                if download:

                    async def down(api: client.FilesApi = api, ids: list[str] = ids) -> None:
                        url = api.file_url(ids[0]) + "/download"
                        if await client.download(s, url, api.auth) != size:
                            raise RuntimeError("short download")

                    await measure(f"{kind} download", pid, down)
                if tus is not None:
                    sent: list[float] = []

                    async def patch(
                        api: client.FilesApi = api, seed: int = seed + 1, sent: list[float] = sent
                    ) -> None:
                        await peers.tus_upload(s, api.uploads_url, size, seed, api.auth, sent)

                    await measure(f"{kind} tus PATCH", pid, patch, sent)
            if tus is not None:
                peer_sent: list[float] = []

                async def peer_patch(
                    url: str = tus[0], seed: int = seed + 2, peer_sent: list[float] = peer_sent
                ) -> None:
                    await peers.tus_upload(s, url, size, seed, sent=peer_sent)

                await measure("@tus/server tus PATCH", tus[1], peer_patch, peer_sent)
    for what in sorted(lines, key=lambda w: (w.rsplit(" ", 1)[-1], w)):
        print(_line(what, size, lines[what]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=KINDS, help="measure one kind of server")
    ap.add_argument("--tus", action="store_true", help="also tus PATCH, and @tus/server's")
    ap.add_argument("--multipart", action="store_true", help="also multipart uploads")
    ap.add_argument("--no-download", action="store_true", help="uploads only")
    ap.add_argument(
        "--before",
        metavar="COMMIT_OR_DIR",
        help="also run older server code (a tree, or a commit of this repository), same rounds",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filesvc-stream-cpu-"))
    secret = secrets.token_urlsafe(32)
    codes: dict[str, dict[str, str]] = {"": {}}
    if args.before is not None:
        old = before_code.tree(args.before, work / "before-code")
        codes = {"before ": before_code.server_env(old), "": {}}
    servers = {
        f"{label}{kind}": filesvc_server(
            work / f"{label.strip()}{kind}-data",
            work / f"{label.strip()}{kind}.log",
            secret,
            env={"FILESVC_ENCRYPTION": "on" if kind == "sealed" else "off", **env},
        )
        for label, env in codes.items()
        for kind in ([args.only] if args.only else KINDS)
    }
    filesvcs = dict(servers)
    tus = None
    if args.tus:
        peers.ensure_tus()
        servers["tus"] = peers.tus_server(work / "tus", work / "tus.log")
    try:
        for proc in servers.values():
            proc.start()
        for proc in filesvcs.values():
            client.wait_ready(f"http://127.0.0.1:{proc.port}")
        if args.tus:
            peer = servers["tus"]
            assert peer.proc is not None
            tus = (f"http://127.0.0.1:{peer.port}/files", peer.proc.pid)
        print(f"pids: {', '.join(f'{k} {p.proc.pid}' for k, p in servers.items() if p.proc)}")
        asyncio.run(
            _run(
                filesvcs,
                secret,
                args.size_mib * MiB,
                args.rounds,
                tus,
                multipart=args.multipart,
                download=not args.no_download,
            )
        )
    finally:
        for proc in servers.values():
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
