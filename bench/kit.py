"""What every scenario is built from: the run's sizes and context, the measuring helpers (MB/s,
req/s, interleaved repetitions, ratio targets) and the servers a scenario starts fresh (filesvc,
SeaweedFS, the tus peer).  A failure of one measurement is recorded as a figure with no value and
the reason; it never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

from bench import client, peers, seaweedfs, trash
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


def short(e: BaseException) -> str:
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
        note = (note + "; " if note else "") + f"failed: {short(e)}"
        if not runs:
            return res.add(Metric(subject, kind, None, "MB/s", note=note))
    return res.add(Metric(subject, kind, median(runs), "MB/s", runs=runs, note=note))


Once = Callable[[], Awaitable[float]]


async def interleaved(
    res: ScenarioResult,
    size: int,
    reps: int,
    items: list[tuple[str, Kind, Once, str]],
    *,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Like `throughput` for several figures, their repetitions interleaved (a, b, c, a, b, c…)
    so that slow drift of the machine (the disk's write-back state above all) hits each alike.
    ``settle``, when given, runs untimed before each repetition (e.g. :func:`flush_disk`)."""
    runs: dict[str, list[float]] = {subject: [] for subject, _, _, _ in items}
    failed: dict[str, str] = {}
    for _ in range(reps):
        for subject, _, once, _ in items:
            if subject in failed:
                continue
            try:
                if settle is not None:
                    await settle()
                runs[subject].append(client.mb_per_s(size, await once()))
            except Exception as e:
                failed[subject] = f"failed: {short(e)}"
    for subject, kind, _, note in items:
        note = "; ".join(x for x in (note, failed.get(subject, "")) if x)
        res.add(Metric(subject, kind, median(runs[subject]), "MB/s", runs=runs[subject], note=note))


async def flush_disk() -> None:
    """Write back every dirty page (untimed, between repetitions): a subject that does not
    fsync leaves its bytes in the page cache, and the next one's fsync (filesvc's, or the disk
    ceiling's) would otherwise write them back on its own clock."""
    await asyncio.to_thread(os.sync)


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
        note = (note + "; " if note else "") + f"failed: {short(e)}"
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


def peer_failure(e: BaseException) -> str:
    return str(e) if isinstance(e, peers.PeerUnavailable) else f"failed: {short(e)}"


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
        trash.retire(data)


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
            ctx.peer_status["seaweedfs"] = PeerStatus("seaweedfs", "unavailable", short(e))
            raise peers.PeerUnavailable(f"unavailable: {short(e)}") from e
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
        trash.retire(work)


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
            ctx.peer_status["tus"] = PeerStatus("tus", "unavailable", short(e))
            raise peers.PeerUnavailable(f"unavailable: {short(e)}") from e
        ctx.peer_status["tus"] = PeerStatus("tus", "ok", f"{versions} on Node, FileStore")
        assert proc.sampler is not None
        proc.sampler.reset()
        yield f"http://127.0.0.1:{proc.port}"
    finally:
        if proc is not None:
            if proc.sampler is not None:
                res.rss["tus"] = proc.sampler.stats()
            await asyncio.to_thread(proc.stop)
        trash.retire(work)
