"""The read scenario: what most traffic of a file service is.  Each filesvc figure is measured
with the same client, right beside the reference it is judged against (this machine's load
moves within minutes, so a reference measured at another moment would not compare):

- 4 KiB downloads against SeaweedFS S3 GETs of the same objects;
- metadata GETs against a bare aiohttp handler answering a constant JSON document;
- random 1 MiB ranges of a large file against SeaweedFS range GETs of a large object and, for
  the issue's target ("1 MiB ranges ≥ 2 x today"), the server code from before issue 14
  (:data:`bench.before_code.READS_BEFORE`) on its own data directory, repetitions interleaved;
- a large download against the same size sent from an aiohttp server's memory (repetitions
  interleaved), and beside the same bytes held whole in that server's memory (no target: the
  reference sends one MiB over and over, which stays in the CPU's cache, where a file's bytes,
  like a held copy's, are read from DRAM).

The 4 KiB and metadata figures are read with aiohttp's client; the 1 MiB ranges and the large
downloads, for every subject alike, with the lean client of :mod:`bench.rawhttp`: aiohttp's
client costs about as much CPU per MiB as the servers it measures, and on two shared cores that
compresses every difference between them.

filesvc is measured in four configurations: the embedded default (SQLite, local disk), the
same with two server processes (``--workers 2``, per-request figures only), PostgreSQL + S3
(the SeaweedFS that is also the peer, under another key prefix of its bucket; its large download
also beside a SeaweedFS GET of the same size, the engine's own rate), and PostgreSQL + S3
without the blob cache (per-request figures only: the files are uploaded through filesvc, so
with the cache every 4 KiB GET is served from memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from statistics import median

from bench import before_code, ceilings, client, many, peers, pgserver, rawhttp, trash
from bench import kit as sc
from bench.data import GiB, MiB, small_body
from bench.results_model import Kind, Metric, ScenarioResult
from bench.server import filesvc_server, master_key_env

FILES = 500
CONCURRENCY = 48
RANGE_CONCURRENCY = 8
SMALL = 4096
# The peer's large object for range GETs: ranges fall anywhere inside it.
PEER_BIG = 64 * MiB
PG_S3 = "PostgreSQL + S3"
PG_S3_UNCACHED = "PostgreSQL + S3, FILESVC_BLOB_CACHE_BYTES=0"
# Repetitions of the range figures, interleaved (the machine's load moves within seconds; single
# repetitions of 300 ranges swung by 1.7x in one run).
RANGE_REPS = 5
# Repetitions of the large download and its references, at least (each is a second or less;
# single downloads of 256 MiB swung by 2x at load, so the median needs many).
LARGE_REPS = 9

Many = Callable[[], Awaitable[tuple[float, list[float]]]]


@dataclass(frozen=True)
class Config:
    """One way of running filesvc: a label and the settings that make it."""

    label: str
    env: dict[str, str] = field(default_factory=dict)
    # Only the per-request figures (4 KiB, metadata): the large transfers do not change with it.
    small_only: bool = False
    # Ranges also measured on the server code from before issue 14 (the target's "today").
    before: bool = False

    def subject(self, what: str) -> str:
        return f"filesvc {what} [{self.label}]"

    def peer(self, what: str) -> str:
        return f"{what} [beside {self.label}]"


@dataclass(frozen=True)
class Peers:
    """The references, running for the whole scenario."""

    bare_url: str
    s3: peers.S3Client | None


SW_SMALL = "peer: SeaweedFS S3 GET 4 KiB"
SW_RANGE = "peer: SeaweedFS S3 range GET 1 MiB"
BARE_JSON = "reference: bare aiohttp JSON handler"
MEM_BIG = "reference: download from an aiohttp server's memory"
# Not a target's reference: the same size sent by aiohttp from a copy held whole in memory, read
# from DRAM as a page-cached file is (MEM_BIG's one MiB stays in the CPU's cache).
MEM_HELD = "reference: the same bytes held whole in an aiohttp server's memory"
SW_BIG = "peer: SeaweedFS S3 GET of the large size"
# The peer's object of the large download's size (PostgreSQL + S3 is judged against it too).
PEER_LARGE = "read/large"
BEFORE_RANGE = f"filesvc range 1 MiB, code before issue 14 ({before_code.READS_BEFORE})"


def _many(spec: many.SmallSpec, count: int, conc: int = CONCURRENCY) -> Many:
    return lambda: asyncio.to_thread(many.run_many, spec, count, conc, sc.CLIENT_PROCESSES, 0)


async def scenario_reads(ctx: sc.Context) -> ScenarioResult:
    sz = ctx.sizes
    total = sz.small_requests
    res = ScenarioResult(
        "reads",
        f"{total} GETs of {FILES} files of 4 KiB and {total} metadata GETs ({CONCURRENCY} "
        f"connections, {sc.CLIENT_PROCESSES} client processes); {sz.range_reads} random 1 MiB "
        f"ranges ({RANGE_CONCURRENCY} connections); a {sz.big / GiB:g} GiB download; each beside "
        "its reference",
    )
    configs = [
        Config("local", before=True),
        Config("local, 2 workers", {"FILESVC_WORKERS": "2"}, True),
    ]
    async with contextlib.AsyncExitStack() as stack:
        bare = stack.enter_context(ceilings.DiscardServer())
        s3: peers.S3Client | None = None
        try:
            s3 = await stack.enter_async_context(sc.seaweed(ctx, res))
            await _fill_peer(ctx, s3)
        except Exception as e:
            s3 = None
            res.notes.append(f"SeaweedFS not measured: {sc.peer_failure(e)}")
        if s3 is not None:
            try:
                pg = await stack.enter_async_context(_postgres())
                url = await asyncio.to_thread(pg.new_database)
                configs.append(Config(PG_S3, _pg_s3_env(url, s3)))
                # The 4 KiB files above are served from the blob cache (filled as they were
                # uploaded): this one shows what each read costs when they come from S3.
                url = await asyncio.to_thread(pg.new_database)
                uncached = {
                    **_pg_s3_env(url, s3, "filesvc-uncached"),
                    "FILESVC_BLOB_CACHE_BYTES": "0",
                }
                configs.append(Config(PG_S3_UNCACHED, uncached, small_only=True))
            except Exception as e:
                res.notes.append(f"PostgreSQL + S3 not measured: {sc.short(e)}")
        for config in configs:
            await _filesvc_reads(ctx, res, config, Peers(bare.url, s3))
    for config in configs:
        if config.small_only:
            continue
        tag = f" [{config.label}]"
        for name, what, reference, factor in (
            ("4 KiB GET ≥ 1.0 x SeaweedFS S3 GET", "download 4 KiB", SW_SMALL, 1.0),
            ("metadata GET ≥ 0.5 x bare aiohttp JSON", "metadata GET", BARE_JSON, 0.5),
            ("large download ≥ 0.8 x aiohttp from memory", "download large", MEM_BIG, 0.8),
        ):
            sc.ratio_target(res, name + tag, config.subject(what), config.peer(reference), factor)
        if config.before:
            sc.ratio_target(
                res,
                f"1 MiB ranges ≥ 2 x the code before issue 14{tag}",
                config.subject("range 1 MiB"),
                config.peer(BEFORE_RANGE),
                2.0,
            )
    return res


async def _interleaved_rates(
    res: ScenarioResult, count: int, items: list[tuple[str, Kind, Many]]
) -> None:
    """Requests per second of each workload, RANGE_REPS runs each, interleaved (a, b, c, a, b,
    c...); the median is the figure."""
    runs: dict[str, list[float]] = {subject: [] for subject, _, _ in items}
    failed: dict[str, str] = {}
    for _ in range(RANGE_REPS):
        for subject, _, ranges in items:
            if subject in failed:
                continue
            try:
                seconds, _ = await ranges()
            except Exception as e:
                failed[subject] = f"failed: {sc.short(e)}"
                continue
            runs[subject].append(count / seconds)
    for subject, kind, _ in items:
        rates = runs[subject]
        value = median(rates) if rates else None
        note = failed.get(subject, "")
        res.add(Metric(subject, kind, value, "req/s", runs=rates, note=note))


def _pg_s3_env(db_url: str, s3: peers.S3Client, prefix: str = "filesvc") -> dict[str, str]:
    return {
        "FILESVC_DB_URL": db_url,
        "FILESVC_BLOB_URL": f"s3://{peers.S3_BUCKET}/{prefix}?endpoint={s3.endpoint}"
        f"&region={s3.region}",
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
        **master_key_env(),
    }


async def _fill_peer(ctx: sc.Context, s3: peers.S3Client) -> None:
    async with sc.session() as s:
        for i in range(FILES):
            await s3.put_bytes(s, peers.S3_BUCKET, f"read/{i}", small_body(i, SMALL))
        await s3.put_stream(s, peers.S3_BUCKET, "read/big", PEER_BIG, ctx.seed())
        await s3.put_stream(s, peers.S3_BUCKET, PEER_LARGE, ctx.sizes.big, ctx.seed())


@contextlib.asynccontextmanager
async def _postgres() -> AsyncIterator[pgserver.PgServer]:
    """A throwaway PostgreSQL cluster (a database of its own per configuration)."""
    server = await asyncio.to_thread(pgserver.start_postgres)
    try:
        yield server
    finally:
        await asyncio.to_thread(pgserver.remove, server)


async def _filesvc_reads(ctx: sc.Context, res: ScenarioResult, config: Config, ref: Peers) -> None:
    data = ctx.scratch("reads-data")
    server = filesvc_server(
        data, ctx.logs_dir / f"reads-{len(res.metrics)}-filesvc.log", ctx.secret, env=config.env
    )
    try:
        await asyncio.to_thread(server.start)
        api = client.FilesApi.local(server.port, ctx.company, ctx.secret)
        await asyncio.to_thread(client.wait_ready, api.base_url)
        ids, big_id = await _fill(ctx, api, config)
        if server.sampler is not None:
            server.sampler.reset()
        await _small_reads(ctx, res, config, api, ids, ref)
        if big_id is not None:
            async with _before_server(ctx, res, config) as before:
                await _large_reads(ctx, res, config, api, big_id, ref, before)
        if server.sampler is not None:
            res.rss[f"filesvc [{config.label}]"] = server.sampler.stats()
    except Exception as e:
        res.notes.append(f"filesvc [{config.label}] failed: {sc.short(e)}")
    finally:
        await asyncio.to_thread(server.stop)
        trash.retire(data)


@contextlib.asynccontextmanager
async def _before_server(
    ctx: sc.Context, res: ScenarioResult, config: Config
) -> AsyncIterator[tuple[client.FilesApi, str] | None]:
    """The server code before issue 14 with the same large file: (api, file id), or None when
    this configuration does not measure it or it could not be started (noted)."""
    if not config.before:
        yield None
        return
    data = ctx.scratch("reads-before-data")
    server = None
    try:
        code = await asyncio.to_thread(
            before_code.extract, before_code.READS_BEFORE, ctx.scratch("reads-before-code")
        )
        env = {**config.env, **before_code.server_env(code)}
        log = ctx.logs_dir / f"reads-{len(res.metrics)}-filesvc-before.log"
        server = filesvc_server(data, log, ctx.secret, env=env)
        await asyncio.to_thread(server.start)
        api = client.FilesApi.local(server.port, ctx.company, ctx.secret)
        await asyncio.to_thread(client.wait_ready, api.base_url)
        async with sc.session() as s:
            big_id = await client.upload_single(s, api, ctx.sizes.big, ctx.seed(), multipart=False)
        started: tuple[client.FilesApi, str] | None = (api, big_id)
    except Exception as e:
        res.notes.append(f"the code before issue 14 not measured: {sc.short(e)}")
        started = None
    try:
        yield started
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        trash.retire(data)


async def _fill(
    ctx: sc.Context, api: client.FilesApi, config: Config
) -> tuple[tuple[str, ...], str | None]:
    """Upload the 4 KiB files (and the large one): their ids."""
    async with sc.session() as s:
        ids = await client.upload_small_files(s, api, FILES, SMALL, "read-")
        big_id = None
        if not config.small_only:
            big_id = await client.upload_single(s, api, ctx.sizes.big, ctx.seed(), multipart=False)
    return ids, big_id


async def _small_reads(
    ctx: sc.Context,
    res: ScenarioResult,
    config: Config,
    api: client.FilesApi,
    ids: tuple[str, ...],
    ref: Peers,
) -> None:
    n = ctx.sizes.small_requests
    headers = tuple(api.auth.items())
    small = many.SmallSpec("files-download", api.files_url, headers, SMALL, ids=ids)
    await sc.rate(res, config.subject("download 4 KiB"), "filesvc", n, _many(small, n))
    if ref.s3 is not None:
        creds = (peers.S3_BUCKET, ref.s3.key_id, ref.s3.secret)
        keys = tuple(f"read/{i}" for i in range(FILES))
        peer = many.SmallSpec("s3-get", ref.s3.endpoint, s3=creds, ids=keys, size=SMALL)
        await sc.rate(res, config.peer(SW_SMALL), "peer", n, _many(peer, n))
        res.relate(config.subject("download 4 KiB"), config.peer(SW_SMALL))
    meta = many.SmallSpec("files-get", api.files_url, headers, 0, ids=ids)
    await sc.rate(res, config.subject("metadata GET"), "filesvc", n, _many(meta, n))
    bare = many.SmallSpec("url-get", f"{ref.bare_url}/json", size=0)
    await sc.rate(res, config.peer(BARE_JSON), "reference", n, _many(bare, n))
    res.relate(config.subject("metadata GET"), config.peer(BARE_JSON))


async def _large_reads(
    ctx: sc.Context,
    res: ScenarioResult,
    config: Config,
    api: client.FilesApi,
    big_id: str,
    ref: Peers,
    before: tuple[client.FilesApi, str] | None,
) -> None:
    sz = ctx.sizes
    count = sz.range_reads

    def ranges(target: client.FilesApi, file_id: str) -> Many:
        headers = tuple(target.auth.items())
        spec = many.SmallSpec(
            "files-range", target.files_url, headers, MiB, ids=(file_id,), span=sz.big, client="raw"
        )
        return _many(spec, count, RANGE_CONCURRENCY)

    subject = config.subject("range 1 MiB")
    items: list[tuple[str, Kind, Many]] = [(subject, "filesvc", ranges(api, big_id))]
    if before is not None:
        items.append((config.peer(BEFORE_RANGE), "reference", ranges(*before)))
    if ref.s3 is not None:
        creds = (peers.S3_BUCKET, ref.s3.key_id, ref.s3.secret)
        peer = many.SmallSpec(
            "s3-get",
            ref.s3.endpoint,
            s3=creds,
            ids=("read/big",),
            size=MiB,
            span=PEER_BIG,
            client="raw",
        )
        items.append((config.peer(SW_RANGE), "peer", _many(peer, count, RANGE_CONCURRENCY)))
    await _interleaved_rates(res, count, items)
    for reference, _, _ in items[1:]:
        res.relate(subject, reference)

    def timed(url: str, headers: dict[str, str]) -> sc.Once:
        async def once() -> float:
            t = time.perf_counter()
            await rawhttp.download(url, headers.items(), sz.big)  # checks status and length
            return time.perf_counter() - t

        return once

    big = config.subject("download large")
    figures: list[tuple[str, Kind, sc.Once, str]] = [
        (big, "filesvc", timed(api.file_url(big_id) + "/download", api.auth), ""),
        (config.peer(MEM_BIG), "reference", timed(f"{ref.bare_url}/bytes/{sz.big}", {}), ""),
        (config.peer(MEM_HELD), "reference", timed(f"{ref.bare_url}/held/{sz.big}", {}), ""),
    ]
    s3 = ref.s3
    if s3 is not None and config.label == PG_S3:
        # What the engine itself delivers to one client: filesvc's bytes come from it.
        async def engine_get() -> float:
            url, headers = s3.sign(
                "GET", f"/{peers.S3_BUCKET}/{PEER_LARGE}", payload_hash=peers.EMPTY_SHA256
            )
            t = time.perf_counter()
            await rawhttp.download(str(url), headers.items(), sz.big)
            return time.perf_counter() - t

        figures.append((config.peer(SW_BIG), "peer", engine_get, ""))
    # One untimed download of each first (page cache, connection and the server's first
    # mapping warm for every subject alike), then at least LARGE_REPS interleaved rounds:
    # a median of two (--quick's repetitions) moved by a tenth from run to run.
    for _, _, once, _ in figures:
        with contextlib.suppress(Exception):  # a failure is noted by the timed rounds
            await once()
    await sc.interleaved(res, sz.big, max(sz.reps, LARGE_REPS), figures)
    res.relate(big, config.peer(MEM_BIG))
    res.relate(big, config.peer(MEM_HELD))
    if len(figures) > 3:
        res.relate(big, config.peer(SW_BIG))
