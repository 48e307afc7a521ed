"""The read scenario: what most traffic of a file service is.  Each filesvc figure is measured
with the same client, in the same run, beside the reference it is judged against:

- 4 KiB downloads against SeaweedFS S3 GETs of the same objects;
- metadata GETs against a bare aiohttp handler answering a constant JSON document;
- random 1 MiB ranges of a large file (SeaweedFS range GETs of a large object beside them);
- one large download against an aiohttp client reading the same size from an aiohttp server's
  memory.

filesvc is measured in three configurations: the embedded default (SQLite, local disk), the
same with two server processes (``--workers 2``), and PostgreSQL + S3 (the SeaweedFS that is also
the peer, another key prefix of its bucket).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from bench import ceilings, client, peers, pgserver
from bench import scenarios as sc
from bench.data import GiB, MiB, small_body
from bench.results_model import ScenarioResult
from bench.server import filesvc_server

FILES = 500
CONCURRENCY = 48
RANGE_CONCURRENCY = 8
SMALL = 4096
# The peer's large object for range GETs: ranges fall anywhere inside it.
PEER_BIG = 64 * MiB

SW_SMALL = "peer: SeaweedFS S3 GET 4 KiB"
SW_RANGE = "peer: SeaweedFS S3 range GET 1 MiB"
BARE_JSON = "reference: bare aiohttp JSON handler"
MEM_BIG = "reference: aiohttp download from an aiohttp server's memory"

Many = Callable[[], Awaitable[tuple[float, list[float]]]]


@dataclass(frozen=True)
class Config:
    """One way of running filesvc: a label and the settings that make it."""

    label: str
    env: dict[str, str] = field(default_factory=dict)
    # Only the per-request figures (4 KiB, metadata): the large transfers do not change with it.
    small_only: bool = False

    def subject(self, what: str) -> str:
        return f"filesvc {what} [{self.label}]"


LOCAL = Config("local")
WORKERS = Config("local, 2 workers", {"FILESVC_WORKERS": "2"}, small_only=True)
PG_S3 = "PostgreSQL + S3"


def _many(spec: client.SmallSpec, count: int, conc: int = CONCURRENCY) -> Many:
    return lambda: asyncio.to_thread(client.run_many, spec, count, conc, sc.CLIENT_PROCESSES, 0)


async def scenario_reads(ctx: sc.Context) -> ScenarioResult:
    sz = ctx.sizes
    total = sz.small_requests
    res = ScenarioResult(
        "reads",
        f"{total} GETs of {FILES} files of 4 KiB and {total} metadata GETs ({CONCURRENCY} "
        f"connections, {sc.CLIENT_PROCESSES} client processes); {sz.range_reads} random 1 MiB "
        f"ranges ({RANGE_CONCURRENCY} connections); a {sz.big / GiB:g} GiB download",
    )
    await _references(ctx, res)
    configs = [LOCAL, WORKERS]
    async with contextlib.AsyncExitStack() as stack:
        s3: peers.S3Client | None = None
        try:
            s3 = await stack.enter_async_context(sc.seaweed(ctx, res))
            await _peer_reads(ctx, res, s3)
        except Exception as e:
            sc.unavailable(res, [SW_SMALL, SW_RANGE], "peer", "req/s", sc._why(e))
        if s3 is not None:
            try:
                url = await stack.enter_async_context(_postgres())
                configs.append(
                    Config(
                        PG_S3,
                        {
                            "FILESVC_DB_URL": url,
                            "FILESVC_BLOB_URL": f"s3://{peers.S3_BUCKET}/filesvc?endpoint="
                            f"{s3.endpoint}&region={s3.region}",
                            "AWS_ACCESS_KEY_ID": s3.key_id,
                            "AWS_SECRET_ACCESS_KEY": s3.secret,
                        },
                    )
                )
            except Exception as e:
                res.notes.append(f"PostgreSQL + S3 not measured: {sc._short(e)}")
        for config in configs:
            await _filesvc_reads(ctx, res, config)
    for config in configs:
        res.relate(config.subject("download 4 KiB"), SW_SMALL)
        res.relate(config.subject("metadata GET"), BARE_JSON)
        if not config.small_only:
            res.relate(config.subject("range 1 MiB"), SW_RANGE)
            res.relate(config.subject("download large"), MEM_BIG)
    for config in (LOCAL, *(c for c in configs if c.label == PG_S3)):
        tag = f" [{config.label}]"
        sc.ratio_target(
            res,
            "4 KiB GET ≥ 1.0 x SeaweedFS S3 GET" + tag,
            config.subject("download 4 KiB"),
            SW_SMALL,
            1.0,
        )
        sc.ratio_target(
            res,
            "metadata GET ≥ 0.5 x bare aiohttp JSON" + tag,
            config.subject("metadata GET"),
            BARE_JSON,
            0.5,
        )
        sc.ratio_target(
            res,
            "large download ≥ 0.8 x aiohttp from memory" + tag,
            config.subject("download large"),
            MEM_BIG,
            0.8,
        )
    return res


async def _references(ctx: sc.Context, res: ScenarioResult) -> None:
    sz = ctx.sizes
    with ceilings.DiscardServer() as bare:
        spec = client.SmallSpec("url-get", f"{bare.url}/json", size=0)
        n = sz.small_requests
        await sc.rate(res, BARE_JSON, "reference", n, _many(spec, n))
        async with sc.session() as s:

            async def mem_get() -> float:
                t = time.perf_counter()
                n = await client.download(s, f"{bare.url}/bytes/{sz.big}")
                if n != sz.big:
                    raise client.WorkloadError(f"downloaded {n} bytes, not {sz.big}")
                return time.perf_counter() - t

            await sc.throughput(res, MEM_BIG, "reference", sz.big, sz.reps, mem_get)


async def _peer_reads(ctx: sc.Context, res: ScenarioResult, s3: peers.S3Client) -> None:
    sz = ctx.sizes
    keys = tuple(f"read/{i}" for i in range(FILES))
    async with sc.session() as s:
        for i, key in enumerate(keys):
            await s3.put_bytes(s, peers.S3_BUCKET, key, small_body(i, SMALL))
        await s3.put_stream(s, peers.S3_BUCKET, "read/big", PEER_BIG, ctx.seed())
    creds = (peers.S3_BUCKET, s3.key_id, s3.secret)
    small = client.SmallSpec("s3-get", s3.endpoint, s3=creds, ids=keys, size=SMALL)
    await sc.rate(res, SW_SMALL, "peer", sz.small_requests, _many(small, sz.small_requests))
    ranges = client.SmallSpec(
        "s3-get", s3.endpoint, s3=creds, ids=("read/big",), size=MiB, span=PEER_BIG
    )
    await sc.rate(
        res, SW_RANGE, "peer", sz.range_reads, _many(ranges, sz.range_reads, RANGE_CONCURRENCY)
    )


@contextlib.asynccontextmanager
async def _postgres() -> AsyncIterator[str]:
    """A throwaway PostgreSQL cluster; yields a database URL."""
    server = await asyncio.to_thread(pgserver.start_postgres)
    try:
        yield await asyncio.to_thread(server.new_database)
    finally:
        await asyncio.to_thread(pgserver.remove, server)


def _wait_ready(base_url: str, timeout_s: float = 60.0) -> None:
    """Until ``/readyz`` answers 200 (PostgreSQL connected and migrated)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2):  # noqa: S310
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"filesvc at {base_url} not ready within {timeout_s:.0f} s")


async def _filesvc_reads(ctx: sc.Context, res: ScenarioResult, config: Config) -> None:
    sz = ctx.sizes
    subjects = [config.subject("download 4 KiB"), config.subject("metadata GET")]
    data = ctx.scratch(f"reads-{config.label.replace(' ', '').replace(',', '-')}-data")
    server = filesvc_server(
        data, ctx.logs_dir / f"reads-{len(res.metrics)}-filesvc.log", ctx.secret, env=config.env
    )
    try:
        await asyncio.to_thread(server.start)
        api = client.FilesApi(
            f"http://127.0.0.1:{server.port}",
            ctx.company,
            client.mint_token(ctx.secret, ctx.company),
        )
        await asyncio.to_thread(_wait_ready, api.base_url)
        ids, big_id = await _fill(ctx, api, config)
        headers = tuple(api.auth.items())
        n = sz.small_requests
        small = client.SmallSpec("files-download", api.files_url, headers, SMALL, ids=ids)
        await sc.rate(res, subjects[0], "filesvc", n, _many(small, n))
        meta = client.SmallSpec("files-get", api.files_url, headers, 0, ids=ids)
        await sc.rate(res, subjects[1], "filesvc", n, _many(meta, n))
        if big_id is not None:
            await _large_reads(ctx, res, config, api, big_id)
        if server.sampler is not None:
            res.rss[f"filesvc [{config.label}]"] = server.sampler.stats()
    except Exception as e:
        if not config.small_only:
            subjects += [config.subject("range 1 MiB")]
            sc.unavailable(res, [config.subject("download large")], "filesvc", "MB/s", sc._short(e))
        sc.unavailable(res, subjects, "filesvc", "req/s", sc._short(e))
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data, ignore_errors=True)


async def _fill(
    ctx: sc.Context, api: client.FilesApi, config: Config
) -> tuple[tuple[str, ...], str | None]:
    """Upload the 4 KiB files (and the large one): their ids."""
    ids = []
    async with sc.session() as s:
        for i in range(FILES):
            async with s.post(
                api.files_url,
                data=small_body(i, SMALL),
                headers={**api.auth, "Content-Type": "application/octet-stream"},
                params={"filename": f"read-{i}.bin", "total_size": str(SMALL)},
            ) as resp:
                ids.append(client._resource_id(await client._check(resp, "upload"), "upload"))
        big_id = None
        if not config.small_only:
            big_id = await client.upload_single(s, api, ctx.sizes.big, ctx.seed(), multipart=False)
    return tuple(ids), big_id


async def _large_reads(
    ctx: sc.Context, res: ScenarioResult, config: Config, api: client.FilesApi, big_id: str
) -> None:
    sz = ctx.sizes
    ranges = client.SmallSpec(
        "files-range",
        api.files_url,
        tuple(api.auth.items()),
        MiB,
        ids=(big_id,),
        span=sz.big,
    )
    await sc.rate(
        res,
        config.subject("range 1 MiB"),
        "filesvc",
        sz.range_reads,
        _many(ranges, sz.range_reads, RANGE_CONCURRENCY),
    )
    url = api.file_url(big_id) + "/download"
    async with sc.session() as s:

        async def get() -> float:
            t = time.perf_counter()
            n = await client.download(s, url, api.auth)
            if n != sz.big:
                raise client.WorkloadError(f"downloaded {n} bytes, not {sz.big}")
            return time.perf_counter() - t

        await sc.throughput(res, config.subject("download large"), "filesvc", sz.big, sz.reps, get)
