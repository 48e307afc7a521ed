"""Scenarios of the read path and of load over time: large downloads and ranges, many files,
sustained uploads, each beside its ceilings and peers in the same run."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from bench import ceilings, client, many, peers
from bench.data import GiB, MiB
from bench.kit import (
    CHUNK,
    CHUNK_PARALLEL,
    CLIENT_PROCESSES,
    LOOPBACK,
    SMALL,
    Context,
    Timed,
    filesvc,
    interleaved,
    peer_failure,
    rate,
    ratio_target,
    seaweed,
    session,
    short,
    throughput,
    to_thread,
    tus,
    unavailable,
)
from bench.results_model import (
    Metric,
    ScenarioResult,
    Target,
    percentiles_ms,
)


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
                unavailable(res, [subject], "filesvc", unit, short(e))
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
        unavailable(res, [sw_get], "peer", "MB/s", peer_failure(e))
        unavailable(res, [sw_range], "peer", "req/s", peer_failure(e))
    try:
        async with tus(ctx, res) as base, session() as s:
            turl = await peers.tus_upload(s, base + "/files", sz.big, ctx.seed())

            async def tget() -> float:
                t = time.perf_counter()
                await client.download(s, turl, peers.TUS_HEADERS)
                return time.perf_counter() - t

            await throughput(res, tus_get, "peer", sz.big, sz.reps, tget)
    except Exception as e:
        unavailable(res, [tus_get], "peer", "MB/s", peer_failure(e))
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
                spec = many.SmallSpec("files-raw", api.files_url, tuple(api.auth.items()))
                first = ctx.small_seeds(count)
                seconds, lat = await asyncio.to_thread(
                    many.run_many, spec, count, 16, CLIENT_PROCESSES, first
                )
                res.add(
                    Metric(up, "filesvc", seconds / count * 1e6, "µs/file",
                           runs=[seconds / count * 1e6], latency_ms=percentiles_ms(lat))
                )  # fmt: skip
                per_file[count] = seconds / count * 1e6
                ids = await _some_ids(api, 200)
                gspec = many.SmallSpec("files-get", api.files_url, tuple(api.auth.items()), ids=ids)
                gets = min(count, 2000)
                seconds, lat = await asyncio.to_thread(
                    many.run_many, gspec, gets, 16, CLIENT_PROCESSES, 0
                )
                res.add(
                    Metric(get, "filesvc", seconds / gets * 1e6, "µs/req",
                           runs=[seconds / gets * 1e6], latency_ms=percentiles_ms(lat))
                )  # fmt: skip
                per_get[count] = seconds / gets * 1e6
        except Exception as e:
            for subject, unit in ((up, "µs/file"), (get, "µs/req")):
                if res.metric(subject) is None:
                    unavailable(res, [subject], "filesvc", unit, short(e))
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
        unavailable(res, [subject], "filesvc", "MB/s", short(e))
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
