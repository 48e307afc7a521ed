"""A large upload on PostgreSQL + S3, this tree's server beside older server code and a direct
SeaweedFS PUT of the same size, interleaved: the A/B form of the ``s3-upload`` scenario.

    python -m bench.s3upload_ab --before 3c14029                    # 256 MiB, 9 rounds
    python -m bench.s3upload_ab --before 3c14029 --size-mib 1024 --rounds 5
    python -m bench.s3upload_ab --set FILESVC_ENCRYPTION=off

Starts a durable PostgreSQL and a ``weed mini`` (as the ``scale`` scenario does), then one
``filesvc serve`` per code (this tree, and with ``--before`` a tree or a commit extracted with
``git archive``, :mod:`bench.before_code`), each on its own database and key prefix, sealed
unless ``--set`` says otherwise.  Each round makes, in turn, a direct S3 PUT of the size (the
bench's own SigV4 client, one streamed request) and a raw-body upload to each server.  Printed
per subject: every round's MB/s and the CPU seconds of the client, the server and SeaweedFS,
then the medians and each server's ratio to the direct PUT.  Every process shares the two
cores, so compare the ratios within a run, not MB/s between runs.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs in the venv

from bench import before_code, client, cpu_args, peers
from bench.data import MiB
from bench.kit import Context, session
from bench.results_model import ScenarioResult
from bench.s3upload import cpu_seconds
from bench.scale import engines
from bench.server import ServerProcess, filesvc_server, master_key_env

DIRECT = "direct SeaweedFS PUT"


@dataclass
class Subject:
    label: str
    server: ServerProcess | None = None  # None: the direct PUT
    runs: list[tuple[float, float, float, float]] = field(default_factory=list)


async def _round(
    ctx: Context, subjects: list[Subject], size: int, direct: peers.S3Client, weed: psutil.Process
) -> None:
    me = psutil.Process()
    async with session() as s:
        for subject in subjects:
            server = subject.server
            fs = psutil.Process(server.proc.pid) if server and server.proc else None
            c0, f0, w0 = cpu_seconds(me), cpu_seconds(fs), cpu_seconds(weed)
            t0 = time.perf_counter()
            if server is None:
                seed = ctx.seed()
                await direct.put_stream(s, peers.S3_BUCKET, f"ab-{seed}", size, seed)
            else:
                api = client.FilesApi.local(server.port, ctx.company, ctx.secret)
                await client.upload_single(s, api, size, ctx.seed(), multipart=False)
            mb = client.mb_per_s(size, time.perf_counter() - t0)
            run = (mb, cpu_seconds(me) - c0, cpu_seconds(fs) - f0, cpu_seconds(weed) - w0)
            subject.runs.append(run)
            print(
                f"{subject.label:40} {mb:7.1f} MB/s   CPU s: client {run[1]:.2f}"
                f" server {run[2]:.2f} SeaweedFS {run[3]:.2f}",
                flush=True,
            )


async def _run(codes: list[tuple[str, dict[str, str]]], size: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="filesvc-s3upload-ab-"))
    try:
        (work / "logs").mkdir()
        ctx = Context(
            quick=True,
            peers=True,
            target="filesvc",
            work_dir=work,
            logs_dir=work / "logs",
            secret=uuid.uuid4().hex * 2,
        )
        async with engines(ctx, ScenarioResult("s3upload-ab", "")) as eng:
            assert eng.weed.proc is not None
            subjects = [Subject(DIRECT)]
            try:
                for label, env in codes:
                    full = {
                        "FILESVC_DB_URL": await asyncio.to_thread(eng.pg.new_database),
                        "FILESVC_BLOB_URL": eng.weed.url(peers.S3_BUCKET, uuid.uuid4().hex[:8]),
                        **eng.weed.env,
                        **master_key_env(),
                        **env,
                    }
                    slug = label.replace(" ", "-")
                    server = filesvc_server(
                        ctx.scratch(slug), ctx.logs_dir / f"{slug}.log", ctx.secret, env=full
                    )
                    subjects.append(Subject(label, server))
                    await asyncio.to_thread(server.start)
                weed = psutil.Process(eng.weed.proc.pid)
                direct = peers.seaweedfs_client(eng.weed)
                for _ in range(rounds):
                    await _round(ctx, subjects, size, direct, weed)
            finally:
                for subject in subjects:
                    if subject.server is not None:
                        await asyncio.to_thread(subject.server.stop)
        base = median(r[0] for r in subjects[0].runs)
        print(f"\n{size // MiB} MiB, {rounds} rounds; medians:")
        for subject in subjects:
            mb = median(r[0] for r in subject.runs)
            cpu = [median(r[i] for r in subject.runs) for i in (1, 2, 3)]
            print(
                f"{subject.label:40} {mb:7.1f} MB/s  {mb / base:.2f} x direct   CPU s: client"
                f" {cpu[0]:.2f} server {cpu[1]:.2f} SeaweedFS {cpu[2]:.2f} (all {sum(cpu):.2f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = cpu_args.parser("bench.s3upload_ab", __doc__)
    p.add_argument("--size-mib", type=int, default=256, help="the upload's size")
    p.add_argument("--rounds", type=int, default=9, help="uploads to each, interleaved")
    p.add_argument("--before", metavar="DIR_OR_COMMIT", help="older server code beside this")
    args = p.parse_args(argv)
    env = cpu_args.settings(args)
    with before_code.codes(args.before, env) as codes:
        asyncio.run(_run(codes, args.size_mib * MiB, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
