"""The scenarios of issue 5. Each runs its ceilings, then filesvc, then its peers, in that order,
on the same bytes, and returns a `ScenarioResult` whose ratios are taken within the run.

A failure of one measurement (filesvc not answering, a peer missing) is recorded as a figure with
no value and the reason; it never stops the other measurements or scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import shutil
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

from bench import ceilings, client, peers, seaweedfs
from bench.data import GiB, MiB
from bench.results_model import (
    Kind,
    Metric,
    PeerStatus,
    ScenarioResult,
    Target,
    median,
    percentiles_ms,
)
from bench.server import RssSampler, ServerProcess, filesvc_server

DISK = "ceiling: disk write + fdatasync"
DISK_REUSE = "ceiling: disk write + fdatasync, rewriting freed blocks"
LOOPBACK = "ceiling: loopback TCP copy"
DISCARD_RAW = "ceiling: aiohttp read-and-discard (raw body)"
DISCARD_MP = "ceiling: aiohttp read-and-discard (multipart body)"
FS_RAW = "filesvc upload, raw body"
FS_MP = "filesvc upload, multipart"
SW_PUT = "peer: SeaweedFS S3 PUT"
TUS_PATCH = "peer: tus PATCH"
FS_TUS = "filesvc tus PATCH"

CHUNK = 50 * MiB  # the reference web client's resumable.js chunk size
CHUNK_PARALLEL = 5  # and its simultaneous uploads
SMALL = 4096
SMALL_CONCURRENCY = 64
CLIENT_PROCESSES = 2  # one Python client process cannot saturate the server; two cores here

Timed = tuple[float, list[float]]  # (wall seconds, per-request latencies)


@dataclass
class Sizes:
    big: int
    reps: int
    small_requests: int
    range_reads: int
    many_files: int
    sustained: int

    @staticmethod
    def for_run(quick: bool) -> Sizes:
        if quick:
            return Sizes(
                big=256 * MiB,
                reps=2,
                small_requests=3000,
                range_reads=300,
                many_files=300,
                sustained=1 * GiB,
            )
        return Sizes(
            big=1 * GiB,
            reps=3,
            small_requests=20000,
            range_reads=2000,
            many_files=1000,
            sustained=4 * GiB,
        )


@dataclass
class Context:
    """What every scenario shares: sizes, where to write, how to reach the servers."""

    quick: bool
    peers: bool
    target: Literal["filesvc", "fake"]
    work_dir: Path  # on the file system filesvc writes to, so the disk ceiling is the same disk
    logs_dir: Path
    secret: str
    workers: int = 1  # `filesvc serve --workers`
    company: str = "bench-company"
    peer_status: dict[str, PeerStatus] = field(default_factory=dict)
    _seed: int = 0
    _small_seed: int = 10**9

    @property
    def sizes(self) -> Sizes:
        return Sizes.for_run(self.quick)

    def seed(self) -> int:
        self._seed += 1
        return self._seed

    def small_seeds(self, n: int) -> int:
        first = self._small_seed
        self._small_seed += n
        return first

    def scratch(self, name: str) -> Path:
        path = self.work_dir / f"{name}-{self.seed()}"
        path.mkdir(parents=True)
        return path


# --- measuring helpers ------------------------------------------------------------------------


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) < 300 else text[:297] + "..."


async def throughput(
    res: ScenarioResult,
    subject: str,
    kind: Kind,
    size: int,
    reps: int,
    once: Callable[[], Awaitable[float]],
    *,
    note: str = "",
) -> Metric:
    """MB/s of `size` bytes moved by `once()` (which returns its own seconds), median of reps."""
    runs: list[float] = []
    try:
        for _ in range(reps):
            runs.append(client.mb_per_s(size, await once()))
    except Exception as e:
        note = (note + "; " if note else "") + f"failed: {_short(e)}"
        if not runs:
            return res.add(Metric(subject, kind, None, "MB/s", note=note))
    return res.add(Metric(subject, kind, median(runs), "MB/s", runs=runs, note=note))


Once = Callable[[], Awaitable[float]]


async def interleaved(
    res: ScenarioResult, size: int, reps: int, items: list[tuple[str, Kind, Once, str]]
) -> None:
    """Like `throughput` for several figures, their repetitions interleaved (a, b, c, a, b, c…)
    so that slow drift of the machine (the disk's write-back state above all) hits each alike."""
    runs: dict[str, list[float]] = {subject: [] for subject, _, _, _ in items}
    failed: dict[str, str] = {}
    for _ in range(reps):
        for subject, _, once, _ in items:
            if subject in failed:
                continue
            try:
                runs[subject].append(client.mb_per_s(size, await once()))
            except Exception as e:
                failed[subject] = f"failed: {_short(e)}"
    for subject, kind, _, note in items:
        note = "; ".join(x for x in (note, failed.get(subject, "")) if x)
        res.add(Metric(subject, kind, median(runs[subject]), "MB/s", runs=runs[subject], note=note))


async def rate(
    res: ScenarioResult,
    subject: str,
    kind: Kind,
    count: int,
    once: Callable[[], Awaitable[tuple[float, list[float]]]],
    *,
    unit: str = "req/s",
    note: str = "",
) -> Metric:
    """Requests per second of a many-request workload, with latency percentiles."""
    try:
        seconds, latencies = await once()
    except Exception as e:
        note = (note + "; " if note else "") + f"failed: {_short(e)}"
        return res.add(Metric(subject, kind, None, unit, note=note))
    return res.add(
        Metric(
            subject,
            kind,
            count / seconds,
            unit,
            runs=[count / seconds],
            latency_ms=percentiles_ms(latencies),
            note=note,
        )
    )


def unavailable(res: ScenarioResult, subjects: list[str], kind: Kind, unit: str, why: str) -> None:
    """Record the figures that could not be measured (those not measured already), with why."""
    for s in subjects:
        if res.metric(s) is None:
            res.add(Metric(s, kind, None, unit, note=why))


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, peers.PeerUnavailable) else f"failed: {_short(e)}"


def ratio_target(
    res: ScenarioResult, name: str, subject: str, reference: str, factor: float
) -> None:
    """Target `subject >= factor x reference` (both higher-is-better)."""
    m, r = res.metric(subject), res.metric(reference)
    value = None
    if m is not None and r is not None and m.value is not None and r.value:
        value = m.value / r.value
    res.targets.append(Target(name, value, ">=", factor, note=f"{subject} ÷ {reference}"))


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=client.TIMEOUT)


async def to_thread(fn: Callable[[], float]) -> float:
    return await asyncio.to_thread(fn)


# --- servers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def filesvc(ctx: Context, res: ScenarioResult) -> AsyncIterator[client.FilesApi]:
    """A fresh filesvc on a fresh data directory; its RSS lands in `res.rss["filesvc"]`."""
    data = ctx.scratch(f"{res.name}-data")
    server = filesvc_server(
        data,
        ctx.logs_dir / f"{res.name}-filesvc.log",
        ctx.secret,
        fake=ctx.target == "fake",
        workers=ctx.workers,
    )
    try:
        await asyncio.to_thread(server.start)
        api = client.FilesApi.local(server.port, ctx.company, ctx.secret)
        assert server.sampler is not None
        server.sampler.reset()
        yield api
        if server.proc is not None and server.proc.poll() is not None:
            res.notes.append(f"filesvc exited during the scenario: {server.log_tail(300)}")
    finally:
        if server.sampler is not None:
            res.rss["filesvc"] = server.sampler.stats()
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data, ignore_errors=True)


def _peer_usable(ctx: Context, name: str) -> str | None:
    """None when the peer may be tried; otherwise why not."""
    if not ctx.peers:
        ctx.peer_status.setdefault(name, PeerStatus(name, "skipped", "--no-peers"))
        return "skipped (--no-peers)"
    st = ctx.peer_status.get(name)
    if st is not None and st.status == "unavailable":
        return f"unavailable: {st.detail}"
    return None


@contextlib.asynccontextmanager
async def seaweed(ctx: Context, res: ScenarioResult) -> AsyncIterator[peers.S3Client]:
    """A fresh `weed mini`; raises PeerUnavailable (with the reason recorded) if it can't run."""
    why = _peer_usable(ctx, "seaweedfs")
    if why is not None:
        raise peers.PeerUnavailable(why)
    work = ctx.scratch(f"{res.name}-seaweedfs")
    server: seaweedfs.SeaweedFS | None = None
    sampler: RssSampler | None = None
    try:
        try:
            version = await asyncio.to_thread(seaweedfs.version)
            server = await asyncio.to_thread(
                seaweedfs.start_seaweedfs,
                work,
                [peers.S3_BUCKET],
                ctx.logs_dir / f"{res.name}-seaweedfs.log",
            )
            s3 = peers.seaweedfs_client(server)
            await peers.wait_s3_writable(s3)
        except (peers.PeerUnavailable, RuntimeError, OSError) as e:
            ctx.peer_status["seaweedfs"] = PeerStatus("seaweedfs", "unavailable", _short(e))
            raise peers.PeerUnavailable(f"unavailable: {_short(e)}") from e
        ctx.peer_status["seaweedfs"] = PeerStatus(
            "seaweedfs", "ok", f"{version}; weed mini, S3 via a SigV4 client on aiohttp"
        )
        assert server.proc is not None
        sampler = RssSampler(server.proc.pid)
        yield s3
    finally:
        if sampler is not None:
            res.rss["seaweedfs"] = sampler.stats()
            sampler.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.asynccontextmanager
async def tus(ctx: Context, res: ScenarioResult) -> AsyncIterator[str]:
    """A fresh tus Node server; yields its base URL."""
    why = _peer_usable(ctx, "tus")
    if why is not None:
        raise peers.PeerUnavailable(why)
    work = ctx.scratch(f"{res.name}-tus")
    proc: ServerProcess | None = None
    try:
        try:
            versions = await asyncio.to_thread(peers.ensure_tus)
            proc = peers.tus_server(work, ctx.logs_dir / f"{res.name}-tus.log")
            await asyncio.to_thread(proc.start)
        except (peers.PeerUnavailable, RuntimeError, OSError) as e:
            ctx.peer_status["tus"] = PeerStatus("tus", "unavailable", _short(e))
            raise peers.PeerUnavailable(f"unavailable: {_short(e)}") from e
        ctx.peer_status["tus"] = PeerStatus("tus", "ok", f"{versions} on Node, FileStore")
        assert proc.sampler is not None
        proc.sampler.reset()
        yield f"http://127.0.0.1:{proc.port}"
    finally:
        if proc is not None:
            if proc.sampler is not None:
                res.rss["tus"] = proc.sampler.stats()
            await asyncio.to_thread(proc.stop)
        shutil.rmtree(work, ignore_errors=True)


# --- scenarios ------------------------------------------------------------------------------


async def scenario_upload(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    res = ScenarioResult(
        "upload", f"single-stream upload of {sz.big / GiB:g} GiB (multipart and raw body)"
    )
    disk_dir = ctx.scratch("disk")

    def disk_once() -> Awaitable[float]:
        return to_thread(lambda: ceilings.disk_write(disk_dir, sz.big, ctx.seed()))

    await throughput(
        res, LOOPBACK, "ceiling", sz.big, sz.reps,
        lambda: to_thread(lambda: ceilings.loopback_copy(sz.big)),
    )  # fmt: skip
    with ceilings.DiscardServer() as discard:
        async with session() as s:
            for subject, mp in ((DISCARD_RAW, False), (DISCARD_MP, True)):

                async def send(mp: bool = mp) -> float:
                    t = time.perf_counter()
                    await client.post_stream(s, discard.url + "/", sz.big, ctx.seed(), multipart=mp)
                    return time.perf_counter() - t

                await throughput(res, subject, "ceiling", sz.big, sz.reps, send)
    try:
        async with filesvc(ctx, res) as api, session() as s:

            async def up(mp: bool) -> float:
                t = time.perf_counter()
                await client.upload_single(s, api, sz.big, ctx.seed(), multipart=mp)
                return time.perf_counter() - t

            async def tus_up() -> float:
                t = time.perf_counter()
                await peers.tus_upload(s, api.uploads_url, sz.big, ctx.seed(), api.auth)
                return time.perf_counter() - t

            await interleaved(
                res, sz.big, sz.reps,
                [
                    (DISK, "ceiling", disk_once, ""),
                    (FS_RAW, "filesvc", lambda: up(False), ""),
                    (FS_MP, "filesvc", lambda: up(True), ""),
                    (FS_TUS, "filesvc", tus_up, ""),
                ],
            )  # fmt: skip
    except Exception as e:
        unavailable(res, [FS_RAW, FS_MP, FS_TUS], "filesvc", "MB/s", f"failed: {_short(e)}")
    if res.metric(DISK) is None:
        await throughput(res, DISK, "ceiling", sz.big, sz.reps, disk_once)
    await throughput(
        res, DISK_REUSE, "ceiling", sz.big, sz.reps,
        lambda: to_thread(lambda: ceilings.disk_write(disk_dir, sz.big, ctx.seed(), keep=False)),
        note="each file deleted before the next: optimistic, for reference",
    )  # fmt: skip
    try:
        async with seaweed(ctx, res) as s3, session() as s:

            async def put() -> float:
                t = time.perf_counter()
                await s3.put_stream(s, peers.S3_BUCKET, f"big-{ctx.seed()}", sz.big, ctx.seed())
                return time.perf_counter() - t

            await throughput(res, SW_PUT, "peer", sz.big, sz.reps, put, note="no fsync")
    except Exception as e:
        unavailable(res, [SW_PUT], "peer", "MB/s", _why(e))
    try:
        async with tus(ctx, res) as base, session() as s:

            async def patch() -> float:
                t = time.perf_counter()
                await peers.tus_upload(s, base + "/files", sz.big, ctx.seed())
                return time.perf_counter() - t

            await throughput(res, TUS_PATCH, "peer", sz.big, sz.reps, patch, note="no fsync")
    except Exception as e:
        unavailable(res, [TUS_PATCH], "peer", "MB/s", _why(e))
    shutil.rmtree(disk_dir, ignore_errors=True)
    for m in res.metrics:
        if m.subject != DISK:
            res.relate(m.subject, DISK)
    res.relate(FS_RAW, DISCARD_RAW)
    res.relate(FS_MP, DISCARD_MP)
    ratio_target(res, "raw upload ≥ 0.7 x disk write", FS_RAW, DISK, 0.7)
    ratio_target(res, "multipart upload ≥ 0.7 x disk write", FS_MP, DISK, 0.7)
    ratio_target(res, "raw upload ≥ SeaweedFS PUT", FS_RAW, SW_PUT, 1.0)
    ratio_target(res, "multipart upload ≥ SeaweedFS PUT", FS_MP, SW_PUT, 1.0)
    res.relate(FS_TUS, TUS_PATCH)
    ratio_target(res, "tus PATCH ≥ @tus/server PATCH", FS_TUS, TUS_PATCH, 1.0)
    return res


async def scenario_chunks(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    n = -(-sz.big // CHUNK)
    res = ScenarioResult(
        "chunks",
        f"reference web client: {sz.big / GiB:g} GiB as {n} x 50 MiB chunks, "
        f"{CHUNK_PARALLEL} in parallel",
    )
    single = "filesvc single stream, multipart (reference)"
    chunked_mp = f"filesvc {CHUNK_PARALLEL}-parallel 50 MiB chunks, multipart"
    chunked_raw = f"filesvc {CHUNK_PARALLEL}-parallel 50 MiB chunks, raw body"
    sw_mp = f"peer: SeaweedFS S3 multipart, {CHUNK_PARALLEL}-parallel 50 MiB parts"
    disk_dir = ctx.scratch("disk")

    def disk_once() -> Awaitable[float]:
        return to_thread(lambda: ceilings.disk_write(disk_dir, sz.big, ctx.seed()))

    try:
        async with filesvc(ctx, res) as api, session() as s:

            async def one() -> float:
                t = time.perf_counter()
                await client.upload_single(s, api, sz.big, ctx.seed(), multipart=True)
                return time.perf_counter() - t

            async def chunked(mp: bool) -> float:
                t = time.perf_counter()
                await client.upload_chunked(
                    s, api, sz.big, CHUNK, CHUNK_PARALLEL, ctx.seed(), multipart=mp
                )
                return time.perf_counter() - t

            await interleaved(
                res, sz.big, sz.reps,
                [
                    (DISK, "ceiling", disk_once, ""),
                    (single, "reference", one, ""),
                    (chunked_mp, "filesvc", lambda: chunked(True), ""),
                    (chunked_raw, "filesvc", lambda: chunked(False), ""),
                ],
            )  # fmt: skip
    except Exception as e:
        unavailable(res, [single, chunked_mp, chunked_raw], "filesvc", "MB/s", _short(e))
    if res.metric(DISK) is None:
        await throughput(res, DISK, "ceiling", sz.big, sz.reps, disk_once)
    try:
        async with seaweed(ctx, res) as s3, session() as s:

            async def mpu() -> float:
                t = time.perf_counter()
                await s3.multipart_upload(
                    s,
                    peers.S3_BUCKET,
                    f"mp-{ctx.seed()}",
                    sz.big,
                    CHUNK,
                    CHUNK_PARALLEL,
                    ctx.seed(),
                )
                return time.perf_counter() - t

            await throughput(res, sw_mp, "peer", sz.big, sz.reps, mpu, note="no fsync")
    except Exception as e:
        unavailable(res, [sw_mp], "peer", "MB/s", _why(e))
    shutil.rmtree(disk_dir, ignore_errors=True)
    res.notes.append(
        "tus is not measured here: parallel chunks need its concatenation extension, "
        "which resumable.js-style clients do not use"
    )
    for m in res.metrics:
        if m.subject != DISK:
            res.relate(m.subject, DISK)
    res.relate(chunked_mp, single)
    res.relate(chunked_raw, single)
    ratio_target(res, "5-parallel chunks ≥ 0.8 x single stream", chunked_mp, single, 0.8)
    ratio_target(res, "5-parallel raw chunks ≥ 0.8 x single stream", chunked_raw, single, 0.8)
    return res


async def scenario_small(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    total = sz.small_requests
    res = ScenarioResult(
        "small",
        f"{total} uploads of 4 KiB at {SMALL_CONCURRENCY} concurrent connections "
        f"(durable acknowledgement; {CLIENT_PROCESSES} client processes)",
    )
    discard_s = "ceiling: aiohttp read-and-discard, 4 KiB"
    fs = "filesvc 4 KiB upload, raw body"
    sw = "peer: SeaweedFS S3 PUT 4 KiB"
    tp = "peer: tus POST (creation-with-upload) 4 KiB"
    ftp = "filesvc tus POST (creation-with-upload) 4 KiB"

    def many(spec: client.SmallSpec) -> Callable[[], Awaitable[tuple[float, list[float]]]]:
        first = ctx.small_seeds(total)
        return lambda: asyncio.to_thread(
            client.run_many, spec, total, SMALL_CONCURRENCY, CLIENT_PROCESSES, first
        )

    with ceilings.DiscardServer() as discard:
        await rate(res, discard_s, "ceiling", total, many(client.SmallSpec("discard", discard.url)))
    try:
        async with filesvc(ctx, res) as api:
            spec = client.SmallSpec("files-raw", api.files_url, tuple(api.auth.items()))
            await rate(res, fs, "filesvc", total, many(spec))
            spec = client.SmallSpec("tus-post", api.uploads_url, tuple(api.auth.items()))
            await rate(res, ftp, "filesvc", total, many(spec))
    except Exception as e:
        unavailable(res, [fs, ftp], "filesvc", "req/s", _short(e))
    try:
        async with seaweed(ctx, res) as s3:
            spec = client.SmallSpec(
                "s3-put", s3.endpoint, s3=(peers.S3_BUCKET, s3.key_id, s3.secret)
            )
            await rate(res, sw, "peer", total, many(spec), note="no fsync")
    except Exception as e:
        unavailable(res, [sw], "peer", "req/s", _why(e))
    try:
        async with tus(ctx, res) as base:
            await rate(
                res,
                tp,
                "peer",
                total,
                many(client.SmallSpec("tus-post", base + "/files")),
                note="no fsync",
            )
    except Exception as e:
        unavailable(res, [tp], "peer", "req/s", _why(e))
    for m in res.metrics:
        if m.subject != discard_s:
            res.relate(m.subject, discard_s)
    ratio_target(res, "4 KiB durable uploads ≥ 0.5 x read-and-discard", fs, discard_s, 0.5)
    # Issue 8's target is judged by the scale scenario (best configuration); shown here too.
    res.relate(fs, sw)
    res.relate(ftp, tp)
    ratio_target(res, "4 KiB tus creation-with-upload ≥ @tus/server", ftp, tp, 1.0)
    return res


async def scenario_download(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    reads = sz.range_reads
    res = ScenarioResult(
        "download",
        f"single-stream download of {sz.big / GiB:g} GiB, and {reads} random 1 MiB range reads "
        "(8 in flight)",
    )
    fs_get = "filesvc download"
    fs_range = "filesvc range reads, 1 MiB"
    sw_get = "peer: SeaweedFS S3 GET"
    sw_range = "peer: SeaweedFS S3 range GET, 1 MiB"
    tus_get = "peer: tus GET"
    rng = random.Random(7)
    offsets = [rng.randrange(0, sz.big - MiB) for _ in range(reads)]

    def ranges(fetch: Callable[[int], Awaitable[object]]) -> Callable[[], Awaitable[Timed]]:
        return lambda: client.timed_many(fetch, offsets, 8)

    def loop_once() -> Awaitable[float]:
        return to_thread(lambda: ceilings.loopback_copy(sz.big))

    client_get = "ceiling: aiohttp client GET from an aiohttp server's memory"
    with ceilings.DiscardServer() as mem:
        async with session() as s:

            async def mem_get() -> float:
                t = time.perf_counter()
                await client.download(s, f"{mem.url}/bytes/{sz.big}")
                return time.perf_counter() - t

            await throughput(res, client_get, "ceiling", sz.big, sz.reps, mem_get)

    try:
        async with filesvc(ctx, res) as api, session() as s:
            fid = await client.upload_single(s, api, sz.big, ctx.seed(), multipart=False)
            url = api.file_url(fid) + "/download"

            async def get() -> float:
                t = time.perf_counter()
                n = await client.download(s, url, api.auth)
                if n != sz.big:
                    raise client.WorkloadError(f"downloaded {n} bytes, not {sz.big}")
                return time.perf_counter() - t

            await interleaved(
                res, sz.big, sz.reps,
                [(LOOPBACK, "ceiling", loop_once, ""), (fs_get, "filesvc", get, "")],
            )  # fmt: skip
            await rate(
                res, fs_range, "filesvc", reads,
                ranges(lambda o: client.download(s, url, api.auth, (o, o + MiB - 1))),
            )  # fmt: skip
    except Exception as e:
        for subject, unit in ((fs_get, "MB/s"), (fs_range, "req/s")):
            if res.metric(subject) is None:
                unavailable(res, [subject], "filesvc", unit, _short(e))
    if res.metric(LOOPBACK) is None:
        await throughput(res, LOOPBACK, "ceiling", sz.big, sz.reps, loop_once)
    try:
        async with seaweed(ctx, res) as s3, session() as s:
            await s3.put_stream(s, peers.S3_BUCKET, "dl", sz.big, ctx.seed())

            async def sget() -> float:
                t = time.perf_counter()
                await s3.get(s, peers.S3_BUCKET, "dl")
                return time.perf_counter() - t

            await throughput(res, sw_get, "peer", sz.big, sz.reps, sget)
            await rate(
                res, sw_range, "peer", reads,
                ranges(lambda o: s3.get(s, peers.S3_BUCKET, "dl", (o, o + MiB - 1))),
            )  # fmt: skip
    except Exception as e:
        unavailable(res, [sw_get], "peer", "MB/s", _why(e))
        unavailable(res, [sw_range], "peer", "req/s", _why(e))
    try:
        async with tus(ctx, res) as base, session() as s:
            turl = await peers.tus_upload(s, base + "/files", sz.big, ctx.seed())

            async def tget() -> float:
                t = time.perf_counter()
                await client.download(s, turl, peers.TUS_HEADERS)
                return time.perf_counter() - t

            await throughput(res, tus_get, "peer", sz.big, sz.reps, tget)
    except Exception as e:
        unavailable(res, [tus_get], "peer", "MB/s", _why(e))
    for subject in (fs_get, sw_get, tus_get, client_get):
        res.relate(subject, LOOPBACK)
    res.relate(fs_get, client_get)
    res.relate(fs_range, sw_range)
    ratio_target(res, "download ≥ 0.8 x loopback copy", fs_get, LOOPBACK, 0.8)
    return res


async def scenario_many_files(ctx: Context) -> ScenarioResult:
    n = ctx.sizes.many_files
    res = ScenarioResult(
        "many-files",
        f"per-file cost with {n} and with {10 * n} files (4 KiB each, 16 connections); "
        "metadata reads of random files at each size",
    )
    per_file: dict[int, float | None] = {}
    per_get: dict[int, float | None] = {}
    for count in (n, 10 * n):
        up = f"filesvc upload cost per file, {count} files"
        get = f"filesvc metadata GET cost, {count} files"
        try:
            async with filesvc(ctx, res) as api:
                spec = client.SmallSpec("files-raw", api.files_url, tuple(api.auth.items()))
                first = ctx.small_seeds(count)
                seconds, lat = await asyncio.to_thread(
                    client.run_many, spec, count, 16, CLIENT_PROCESSES, first
                )
                res.add(
                    Metric(up, "filesvc", seconds / count * 1e6, "µs/file",
                           runs=[seconds / count * 1e6], latency_ms=percentiles_ms(lat))
                )  # fmt: skip
                per_file[count] = seconds / count * 1e6
                ids = await _some_ids(api, 200)
                gspec = client.SmallSpec(
                    "files-get", api.files_url, tuple(api.auth.items()), ids=ids
                )
                gets = min(count, 2000)
                seconds, lat = await asyncio.to_thread(
                    client.run_many, gspec, gets, 16, CLIENT_PROCESSES, 0
                )
                res.add(
                    Metric(get, "filesvc", seconds / gets * 1e6, "µs/req",
                           runs=[seconds / gets * 1e6], latency_ms=percentiles_ms(lat))
                )  # fmt: skip
                per_get[count] = seconds / gets * 1e6
        except Exception as e:
            for subject, unit in ((up, "µs/file"), (get, "µs/req")):
                if res.metric(subject) is None:
                    unavailable(res, [subject], "filesvc", unit, _short(e))
            per_file.setdefault(count, None)
            per_get.setdefault(count, None)
    for d, what in ((per_file, "upload"), (per_get, "metadata GET")):
        a, b = d.get(n), d.get(10 * n)
        value = b / a if a and b else None
        res.targets.append(
            Target(
                f"{what} cost per file flat at 10x files (≤ 1.25)",
                value,
                "<=",
                1.25,
                note=f"cost per file at {10 * n} ÷ at {n}; 1.25 is our reading of 'flat'",
            )
        )
    return res


async def _some_ids(api: client.FilesApi, k: int) -> tuple[str, ...]:
    """Ids of `k` fresh files (the small workers do not report the ids they created)."""
    async with session() as s:
        ids = [
            await client.upload_single(s, api, SMALL, 5_000_000_000 + i, multipart=False)
            for i in range(k)
        ]
    return tuple(ids)


async def scenario_sustained(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    total = sz.sustained
    res = ScenarioResult(
        "sustained",
        f"server RSS over {total / GiB:g} GiB uploaded (1 GiB raw single streams alternating with "
        f"{CHUNK_PARALLEL}-parallel 50 MiB chunked files)",
    )
    each = min(GiB, total)
    subject = "filesvc mixed uploads"
    try:
        async with filesvc(ctx, res) as api, session() as s:
            t = time.perf_counter()
            done = 0
            i = 0
            while done < total:
                this = min(each, total - done)
                if i % 2 == 0:
                    await client.upload_single(s, api, this, ctx.seed(), multipart=False)
                else:
                    await client.upload_chunked(s, api, this, CHUNK, CHUNK_PARALLEL, ctx.seed())
                done += this
                i += 1
            res.add(Metric(subject, "filesvc", client.mb_per_s(total, time.perf_counter() - t),
                           "MB/s"))  # fmt: skip
    except Exception as e:
        unavailable(res, [subject], "filesvc", "MB/s", _short(e))
    rss = res.rss.get("filesvc")
    res.targets.append(
        Target(
            f"RSS growth < 64 MiB at {total / GiB:g} GiB uploaded",
            rss.peak_growth_mib if rss is not None and res.metric(subject) else None,
            "<",
            64.0,
            note="peak minus the RSS at the scenario's start"
            + ("" if total >= 4 * GiB else " (quick run: less than the 4 GiB of the target)"),
        )
    )
    return res


async def scenario_thumbnail(ctx: Context) -> ScenarioResult:
    """Delegates to `bench/thumbs.py` (written by the thumbnail engineer): `run(quick) -> dict`."""
    res = ScenarioResult(
        "thumbnail", "thumbnails of every previewed format (filesvc vs Pillow, PyAV, soffice)"
    )
    try:
        run = getattr(importlib.import_module("bench.thumbs"), "run")  # noqa: B009
        out = await asyncio.to_thread(run, ctx.quick)
        if not isinstance(out, dict):
            raise TypeError(f"run() returned {type(out).__name__}, not a dict")
    except Exception as e:
        res.error = f"bench/thumbs.py is not usable: {_short(e)}"
        return res
    absorb_thumbs(res, out)
    return res


def _kind(x: object) -> Kind:
    if x == "ceiling" or x == "peer" or x == "reference":
        return x
    return "filesvc"


def absorb_thumbs(res: ScenarioResult, out: dict[str, object]) -> None:
    """Turn thumbs.run()'s dict into metrics: a `metrics` list in our own shape if it gives one,
    else every number it holds (nested one level), keyed by its path."""
    res.extra["thumbs"] = out
    raw = out.get("metrics")
    if isinstance(raw, list):
        for m in raw:
            if isinstance(m, dict) and isinstance(m.get("subject"), str):
                v = m.get("value")
                kind = m.get("kind")
                res.add(
                    Metric(
                        str(m["subject"]),
                        _kind(kind),
                        float(v) if isinstance(v, int | float) else None,
                        str(m.get("unit", "")),
                        note=str(m.get("note", "")),
                    )
                )
        return

    def walk(prefix: str, d: dict[str, object]) -> None:
        for k, v in d.items():
            name = f"{prefix}{k}"
            if isinstance(v, bool):
                continue
            if isinstance(v, int | float):
                kind: Kind = "peer" if "pillow" in name.lower() else "filesvc"
                unit = "ms" if name.endswith("_ms") else ("s" if name.endswith("_s") else "")
                res.add(Metric(name, kind, float(v), unit))
            elif isinstance(v, dict) and not prefix:
                walk(f"{k}.", v)
            elif isinstance(v, str) and k in ("error", "note", "status"):
                res.notes.append(f"{name}: {v}")

    walk("", out)


async def scenario_encryption(ctx: Context) -> ScenarioResult:
    """Sealed against plain filesvc (`bench/encryption.py`, which builds on this module)."""
    from bench.encryption import scenario_encryption as run

    return await run(ctx)


SCENARIOS: dict[str, Callable[[Context], Awaitable[ScenarioResult]]] = {
    "upload": scenario_upload,
    "chunks": scenario_chunks,
    "small": scenario_small,
    "download": scenario_download,
    "thumbnail": scenario_thumbnail,
    "many-files": scenario_many_files,
    "sustained": scenario_sustained,
    "encryption": scenario_encryption,
}


def _scale(ctx: Context) -> Awaitable[ScenarioResult]:
    from bench.scale import scenario_scale  # it imports this module

    return scenario_scale(ctx)


SCENARIOS["scale"] = _scale


async def run_scenario(name: str, ctx: Context) -> ScenarioResult:
    t = time.perf_counter()
    try:
        res = await SCENARIOS[name](ctx)
    except Exception as e:
        res = ScenarioResult(name, name, error=_short(e))
        res.notes.append(traceback.format_exc(limit=5))
    order = {"ceiling": 0, "reference": 1, "filesvc": 2, "peer": 3}
    res.metrics.sort(key=lambda m: order.get(m.kind, 9))  # stable: keeps each group's order
    res.seconds = time.perf_counter() - t
    return res


# The read scenario lives in its own module (it uses the helpers above).
from bench.reads import scenario_reads  # noqa: E402

SCENARIOS["reads"] = scenario_reads
