"""Many small requests (uploads, GETs, ranges) from several client processes.

One Python client process tops out below what the server can take on this 2-core machine, so
each workload is a picklable :class:`SmallSpec` run by spawned worker processes (`run_many`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp

from bench.client import (
    TIMEOUT,
    WorkloadError,
    check_status,
    download,
    multipart_parts,
    timed_many,
)
from bench.data import small_body
from bench.rawhttp import Expect, RawClient, target_of

SmallKind = Literal[
    "files-raw",
    "files-multipart",
    "discard",
    "s3-put",
    "tus-post",
    "files-get",
    "files-download",
    "files-range",
    "s3-get",
    "url-get",
]


@dataclass(frozen=True)
class SmallSpec:
    """A picklable description of one small-request workload, run by `run_many`."""

    kind: SmallKind
    url: str  # base url of the target (for files-*: FilesApi.files_url; tus: its endpoint)
    headers: tuple[tuple[str, str], ...] = ()
    size: int = 4096
    s3: tuple[str, str, str] | None = None  # (bucket, access key, secret key)
    ids: tuple[str, ...] = ()  # for files-get/-download/-range, s3-get: ids (keys) to read
    span: int = 0  # for files-range: the file's size (ranges of `size` bytes fall inside it)
    # Which client reads a read workload's bodies: aiohttp's, or the lean one of bench/rawhttp.py
    # (files-download, files-range, s3-get and url-get only).
    client: Literal["aiohttp", "raw"] = "aiohttp"


async def _small_one(session: aiohttp.ClientSession, spec: SmallSpec, seed: int) -> None:
    hdrs = dict(spec.headers)
    if spec.kind == "files-get":
        url = f"{spec.url}/{spec.ids[seed % len(spec.ids)]}"
        async with session.get(url, headers=hdrs) as resp:
            await check_status(resp, "GET metadata")
        return
    if spec.kind in ("files-download", "files-range", "s3-get", "url-get"):
        await _read_one(session, spec, seed, hdrs)
        return
    body = small_body(seed, spec.size)
    if spec.kind == "files-raw" or spec.kind == "discard":
        hdrs["Content-Type"] = "application/octet-stream"
        params = {"filename": f"small-{seed}.bin", "total_size": str(spec.size)}
        async with session.post(spec.url, data=body, headers=hdrs, params=params) as resp:
            await check_status(resp, "small upload")
    elif spec.kind == "files-multipart":
        head, tail, ctype = multipart_parts(f"small-{seed}.bin")
        hdrs["Content-Type"] = ctype
        async with session.post(spec.url, data=head + body + tail, headers=hdrs) as resp:
            await check_status(resp, "small multipart upload")
    elif spec.kind == "s3-put":
        from bench.peers import S3Client

        assert spec.s3 is not None
        bucket, key_id, secret = spec.s3
        s3 = S3Client(spec.url, key_id, secret)
        await s3.put_bytes(session, bucket, f"small/{seed}", body)
    elif spec.kind == "tus-post":
        from bench.peers import tus_post_with_body

        await tus_post_with_body(session, spec.url, body, hdrs)
    else:  # pragma: no cover - exhaustive
        raise AssertionError(spec.kind)


async def _read_one(
    session: aiohttp.ClientSession, spec: SmallSpec, seed: int, hdrs: dict[str, str]
) -> None:
    """One read of a read workload; the byte count is checked, so an error page never counts."""
    if spec.kind == "files-download":
        n = await download(session, f"{spec.url}/{spec.ids[seed % len(spec.ids)]}/download", hdrs)
    elif spec.kind == "files-range":
        url = f"{spec.url}/{spec.ids[0]}/download"
        n = await download(session, url, hdrs, _range_of(spec, seed))
    elif spec.kind == "s3-get":
        from bench.peers import S3Client

        assert spec.s3 is not None
        bucket, key_id, secret = spec.s3
        s3 = S3Client(spec.url, key_id, secret)
        key = spec.ids[seed % len(spec.ids)]
        if spec.span:
            n = await s3.get(session, bucket, key, _range_of(spec, seed))
        else:
            n = await s3.get(session, bucket, key)
    else:
        async with session.get(spec.url, headers=hdrs) as resp:
            if resp.status != 200:
                raise WorkloadError(f"GET {spec.url}: HTTP {resp.status}")
            n = len(await resp.read())
    if spec.size and n != spec.size:
        raise WorkloadError(f"{spec.kind}: read {n} bytes, not {spec.size}")


def _range_of(spec: SmallSpec, seed: int) -> tuple[int, int]:
    """The inclusive byte range read ``seed`` of a range workload asks for."""
    start = (seed * 7919 * 4096) % (spec.span - spec.size)
    return start, start + spec.size - 1


async def _raw_one(raw: RawClient, spec: SmallSpec, seed: int, hdrs: list[tuple[str, str]]) -> None:
    """One read of a read workload through the lean client, which checks status, length and
    Content-Range itself."""
    first_last: tuple[int, int] | None = None
    if spec.kind == "files-download":
        target = f"{spec.url}/{spec.ids[seed % len(spec.ids)]}/download"
    elif spec.kind == "files-range":
        target = f"{spec.url}/{spec.ids[0]}/download"
        first_last = _range_of(spec, seed)
    elif spec.kind == "s3-get":
        from bench.peers import EMPTY_SHA256, S3Client

        assert spec.s3 is not None
        bucket, key_id, secret = spec.s3
        key = spec.ids[seed % len(spec.ids)]
        url, signed = S3Client(spec.url, key_id, secret).sign(
            "GET", f"/{bucket}/{key}", payload_hash=EMPTY_SHA256
        )
        target = str(url)
        hdrs = [*hdrs, *signed.items()]
        if spec.span:
            first_last = _range_of(spec, seed)
    elif spec.kind == "url-get":
        target = spec.url
    else:
        raise WorkloadError(f"{spec.kind}: not a read the lean client makes")
    if first_last is not None:
        hdrs = [*hdrs, ("Range", f"bytes={first_last[0]}-{first_last[1]}")]
        expect = Expect(206, spec.size, (first_last[0], first_last[1], spec.span or None))
    else:
        expect = Expect(200, spec.size)
    await raw.get(target_of(target)[1], hdrs, expect)


async def _raw_batch(spec: SmallSpec, seeds: list[int], concurrency: int) -> list[float]:
    raw = RawClient(target_of(spec.url)[0], concurrency)
    hdrs = list(spec.headers)
    try:
        _, lat = await timed_many(lambda s: _raw_one(raw, spec, s, hdrs), seeds, concurrency)
    finally:
        raw.close()
    return lat


async def _small_batch(spec: SmallSpec, seeds: list[int], concurrency: int) -> list[float]:
    if spec.client == "raw":
        return await _raw_batch(spec, seeds, concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=TIMEOUT) as session:
        _, lat = await timed_many(lambda s: _small_one(session, spec, s), seeds, concurrency)
    return lat


def _small_worker(spec: SmallSpec, seeds: list[int], concurrency: int) -> list[float]:
    return asyncio.run(_small_batch(spec, seeds, concurrency))


def _small_worker_cpu(
    spec: SmallSpec, seeds: list[int], concurrency: int
) -> tuple[list[float], float]:
    """`_small_worker`, and the CPU seconds this client process spent on the requests alone
    (not its start-up and imports, which its rusage as a child would include)."""
    before = time.process_time()
    lat = asyncio.run(_small_batch(spec, seeds, concurrency))
    return lat, time.process_time() - before


def _warm_worker() -> int:
    return 0


def run_many(
    spec: SmallSpec, total: int, concurrency: int, processes: int, first_seed: int
) -> tuple[float, list[float]]:
    """`total` small requests, `concurrency` connections split over `processes` client processes;
    (wall seconds, per-request latencies). Worker start-up is kept out of the timing."""
    seconds, latencies, _ = run_many_cpu(spec, total, concurrency, processes, first_seed)
    return seconds, latencies


def run_many_cpu(
    spec: SmallSpec, total: int, concurrency: int, processes: int, first_seed: int
) -> tuple[float, list[float], float]:
    """`run_many`, and the CPU seconds the client processes spent on the requests (their
    start-up left out): on a machine where client and server share the cores, the rate is
    about the cores over the sum of server and client CPU per request."""
    procs = max(1, min(processes, concurrency))
    seeds = list(range(first_seed, first_seed + total))
    shares = [seeds[i::procs] for i in range(procs)]
    per_conc = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
        for f in [pool.submit(_warm_worker) for _ in range(procs)]:
            f.result()
        t0 = time.perf_counter()
        futs = [
            pool.submit(_small_worker_cpu, spec, share, c)
            for share, c in zip(shares, per_conc, strict=True)
        ]
        done = [f.result() for f in futs]
        elapsed = time.perf_counter() - t0
    latencies = [x for lat, _ in done for x in lat]
    return elapsed, latencies, sum(cpu for _, cpu in done)
