"""The `s3-upload` scenario: the big upload through filesvc on PostgreSQL + S3 beside a direct
SeaweedFS S3 PUT of the same bytes, repetitions interleaved in one run (issue 8: "we add one hop").

One filesvc (one server process, encryption on as by default, a durable PostgreSQL from
`bench/pgserver.py`, a `weed mini` from `bench/seaweedfs.py`), then per repetition, in turn:

- **peer**: one S3 PUT of the big size straight to SeaweedFS through the bench's SigV4 client
  (`bench/peers.py`: aiohttp, `UNSIGNED-PAYLOAD`, one streamed request), the `scale` scenario's
  peer figure;
- **reference**: the same bytes stored by `blobstore.ContentStore` on the S3 backend in this
  process, their size announced as a raw body's Content-Length announces it: one PUT through
  filesvc's own client (`blobstore.s3_one_put`), hashed, not sealed, with no HTTP hop.
  What filesvc's upload could reach if the hop to it cost nothing;
- **filesvc**: the raw-body upload (`POST /files`), then the download of that file, and an
  S3 GET of the peer's object for the download's reference.

The target line is the median filesvc upload over the median direct PUT. Every process (client,
filesvc, SeaweedFS, PostgreSQL) shares the machine's cores, so the ratio, not the MB/s, is the
figure to compare between runs.  On a loaded machine even the ratio drifts (each process gets a
share of the cores whatever it needs), so the scenario also reports the CPU seconds one upload
costs the client, filesvc and SeaweedFS together, for both paths: on an idle machine, where the
direct PUT already keeps both cores busy, their quotient is about what the throughput ratio
can reach, and load distorts it least.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs in the venv

from bench import client, peers, seaweedfs
from bench.data import iter_stream
from bench.kit import Context, ratio_target, session, short, unavailable
from bench.results_model import Kind, Metric, ScenarioResult, median
from bench.scale import engines
from bench.server import filesvc_server, master_key_env
from blobstore import s3
from blobstore.backends import S3Location
from blobstore.store import ContentStore

FS_UP = "filesvc on PostgreSQL + S3: upload, raw body"
FS_DOWN = "filesvc on PostgreSQL + S3: download"
SW_PUT = "peer: SeaweedFS S3 PUT, one stream"
SW_GET = "peer: SeaweedFS S3 GET"
STORE_PUT = "reference: blobstore put on the S3 backend (no HTTP hop, not sealed)"
CPU_DIRECT = "peer: CPU s per upload, direct PUT (client + SeaweedFS)"
CPU_FS = "filesvc: CPU s per upload (client + filesvc + SeaweedFS)"


def reps(ctx: Context) -> int:
    """Three either way: the ratio wants repetitions more than size."""
    return 3


async def _pieces(size: int, seed: int) -> AsyncIterator[bytes]:
    for piece in iter_stream(size, seed):
        yield bytes(piece)


def cpu_seconds(proc: psutil.Process | None) -> float:
    """User + system CPU seconds of ``proc`` so far (0 when there is none, or it is gone)."""
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


async def scenario_s3_upload(ctx: Context) -> ScenarioResult:
    size = ctx.sizes.big
    label = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"
    res = ScenarioResult(
        "s3-upload",
        f"{label} upload through filesvc on PostgreSQL + S3 (1 process, sealed) beside a direct "
        f"SeaweedFS S3 PUT and a blobstore put of the same bytes, {reps(ctx)} repetitions "
        "interleaved",
    )
    runs: dict[str, list[float]] = {s: [] for s in (SW_PUT, STORE_PUT, FS_UP, FS_DOWN, SW_GET)}
    # (client, filesvc, SeaweedFS) CPU seconds of each upload
    cpu: dict[str, list[tuple[float, float, float]]] = {SW_PUT: [], STORE_PUT: [], FS_UP: []}
    me = psutil.Process()
    try:
        async with engines(ctx, res) as eng:
            prefix = f"run-{uuid.uuid4().hex[:8]}"
            env = {
                "FILESVC_DB_URL": await asyncio.to_thread(eng.pg.new_database),
                "FILESVC_BLOB_URL": eng.weed.url(peers.S3_BUCKET, prefix),
                **eng.weed.env,
                **master_key_env(),
            }
            location = S3Location(
                bucket=peers.S3_BUCKET,
                endpoint=eng.weed.endpoint,
                region=seaweedfs.REGION,
                access_key_id=seaweedfs.KEY_ID,
                secret_access_key=seaweedfs.SECRET_KEY,
                prefix=f"{prefix}-store/",
            )
            backend = s3.S3Backend(location)
            store = ContentStore(backend)
            weed = psutil.Process(eng.weed.proc.pid) if eng.weed.proc is not None else None
            server = filesvc_server(
                ctx.scratch("s3-upload-data"),
                ctx.logs_dir / "s3-upload-filesvc.log",
                ctx.secret,
                env=env,
            )
            await asyncio.to_thread(server.start)
            try:
                assert server.proc is not None
                fs = psutil.Process(server.proc.pid)
                api = client.FilesApi.local(server.port, ctx.company, ctx.secret)
                direct = peers.seaweedfs_client(eng.weed)
                async with session() as s:
                    for _ in range(reps(ctx)):
                        seed = ctx.seed()
                        key = f"big-{seed}"
                        c0, w0, t = cpu_seconds(me), cpu_seconds(weed), time.perf_counter()
                        await direct.put_stream(s, peers.S3_BUCKET, key, size, seed)
                        runs[SW_PUT].append(client.mb_per_s(size, time.perf_counter() - t))
                        cpu[SW_PUT].append((cpu_seconds(me) - c0, 0.0, cpu_seconds(weed) - w0))

                        c0, w0, t = cpu_seconds(me), cpu_seconds(weed), time.perf_counter()
                        await store.put(_pieces(size, ctx.seed()), size=size)
                        runs[STORE_PUT].append(client.mb_per_s(size, time.perf_counter() - t))
                        cpu[STORE_PUT].append((cpu_seconds(me) - c0, 0.0, cpu_seconds(weed) - w0))

                        c0, f0, w0 = cpu_seconds(me), cpu_seconds(fs), cpu_seconds(weed)
                        t = time.perf_counter()
                        fid = await client.upload_single(s, api, size, ctx.seed(), multipart=False)
                        runs[FS_UP].append(client.mb_per_s(size, time.perf_counter() - t))
                        cpu[FS_UP].append(
                            (cpu_seconds(me) - c0, cpu_seconds(fs) - f0, cpu_seconds(weed) - w0)
                        )

                        t = time.perf_counter()
                        n = await client.download(s, api.file_url(fid) + "/download", api.auth)
                        if n != size:
                            raise client.WorkloadError(f"downloaded {n} bytes, not {size}")
                        runs[FS_DOWN].append(client.mb_per_s(size, time.perf_counter() - t))

                        t = time.perf_counter()
                        n = await direct.get(s, peers.S3_BUCKET, key)
                        if n != size:
                            raise client.WorkloadError(f"S3 GET gave {n} bytes, not {size}")
                        runs[SW_GET].append(client.mb_per_s(size, time.perf_counter() - t))
            finally:
                await asyncio.to_thread(server.stop)
                await backend.close()
    except Exception as e:
        res.notes.append(f"s3-upload: {short(e)}")
    kinds: dict[str, Kind] = {SW_PUT: "peer", SW_GET: "peer", STORE_PUT: "reference"}
    for subject, values in runs.items():
        kind = kinds.get(subject, "filesvc")
        if values:
            res.add(Metric(subject, kind, median(values), "MB/s", runs=values))
        else:
            unavailable(res, [subject], kind, "MB/s", "not measured")
    for subject, triples in cpu.items():
        if triples:
            res.notes.append(
                f"CPU seconds per {label} upload, {subject}: "
                + "; ".join(
                    f"client {c:.2f}"
                    + (f" + filesvc {f:.2f}" if f else "")
                    + f" + SeaweedFS {w:.2f}"
                    for c, f, w in triples
                )
            )
    for subject, source in ((CPU_DIRECT, SW_PUT), (CPU_FS, FS_UP)):
        totals = [sum(t) for t in cpu[source]]
        if totals:
            res.add(Metric(subject, "filesvc" if source == FS_UP else "peer",
                           median(totals), "s", runs=totals))  # fmt: skip
    direct_cpu, fs_cpu = res.metric(CPU_DIRECT), res.metric(CPU_FS)
    if direct_cpu is not None and fs_cpu is not None and direct_cpu.value and fs_cpu.value:
        res.notes.append(
            f"CPU cost quotient (direct PUT's CPU seconds over filesvc's, all processes): "
            f"{direct_cpu.value / fs_cpu.value:.2f}: about the throughput ratio an idle machine "
            "can reach, where the direct PUT keeps both cores busy"
        )
    ratio_target(
        res,
        f"{label} upload on PostgreSQL + S3 ≥ 0.8 x a direct SeaweedFS S3 PUT (interleaved)",
        FS_UP,
        SW_PUT,
        0.8,
    )
    return res
