"""The `scale` scenario: filesvc's configurations side by side, in one run, beside SeaweedFS.

Configurations: the embedded default (local disk + SQLite; also with encryption at rest off,
reported beside it, never instead) and PostgreSQL + S3 (a durable
PostgreSQL, fsync on, from `bench/pgserver.py`, and a `weed mini` from `bench/seaweedfs.py`), each
with one server process and with N (`--workers`, 2 when it is 1). Each gets a fresh data
directory, database and key prefix, and is measured the same way: 4 KiB uploads (durable
acknowledgement, 64 connections, after 300 uncounted ones), a raw single-stream upload of the
big size and its download (1 GiB; 256 MiB with --quick), and the peak RSS of the server's
process tree (supervisor, workers, thumbnail workers). The peers are the same `weed mini` the
PostgreSQL + S3 configuration writes to: 4 KiB S3 PUTs (after as many uncounted ones) and one
S3 PUT of the big size, with no fsync.  Every configuration's 4 KiB uploads are followed by as
many 4 KiB PUTs (the table's "x PUT beside"), and on PostgreSQL + S3 each big upload by such a
big PUT: the targets compare each pair, taken under the same load.

The engines run on the same 2 cores as filesvc and the clients, so PostgreSQL + S3 pays for
their CPU too; the ratios are what the issue's targets are about.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bench import client, many, peers, seaweedfs, trash
from bench.kit import (
    CLIENT_PROCESSES,
    SMALL_CONCURRENCY,
    Context,
    session,
    short,
    unavailable,
)
from bench.pgserver import PgServer, remove, start_postgres
from bench.results_model import (
    Metric,
    PeerStatus,
    ScenarioResult,
    Target,
    median,
    percentiles_ms,
)
from bench.server import filesvc_server, master_key_env

# 4 KiB requests sent before each timed run of them and not counted, alike for filesvc and the
# peer: a fresh server's first requests pay for its code and caches warming, which a run of
# 2,000 (--quick) would otherwise charge to the configuration.
WARM_SMALL = 300
SW_SMALL = "peer: SeaweedFS S3 PUT 4 KiB"
SW_BIG = "peer: SeaweedFS S3 PUT, one stream"
LOCAL = "local disk + SQLite"
SCALED = "PostgreSQL + S3 (SeaweedFS)"


@dataclass(frozen=True)
class Config:
    kind: str  # LOCAL or SCALED
    workers: int
    # FILESVC_ENCRYPTION=off: a configuration an operator may choose, reported beside the
    # default (encryption at rest on), never instead of it
    plain: bool = False
    # FILESVC_INLINE_MAX=0: every small blob written to the blob store (a file, an S3 PUT)
    # instead of kept in the metadata database, the default's comparison in the same run
    files: bool = False

    @property
    def name(self) -> str:
        plain = ", encryption off" if self.plain else ""
        files = ", small blobs as files" if self.files else ""
        return f"{self.kind}, {self.workers} worker{'s' if self.workers > 1 else ''}{plain}{files}"

    def env(self) -> dict[str, str]:
        env = {"FILESVC_ENCRYPTION": "off"} if self.plain else {}
        if self.files:
            env["FILESVC_INLINE_MAX"] = "0"
        return env


@dataclass
class Row:
    """One configuration's figures (None: not measured)."""

    small: float | None = None
    up: float | None = None
    down: float | None = None
    rss_peak: float | None = None
    # Direct SeaweedFS PUTs of the big size, each right after one of this row's uploads
    direct: list[float] = field(default_factory=list)
    # SeaweedFS 4 KiB PUTs (req/s) run right after this row's 4 KiB uploads
    peer_small: float | None = None


@dataclass
class Engines:
    pg: PgServer
    weed: seaweedfs.SeaweedFS

    def env(self) -> dict[str, str]:
        """A fresh database and a fresh key prefix, for one configuration."""
        return {
            "FILESVC_DB_URL": self.pg.new_database(),
            "FILESVC_BLOB_URL": self.weed.url(peers.S3_BUCKET, f"run-{uuid.uuid4().hex[:8]}"),
            **self.weed.env,
            **master_key_env(),
        }


@contextlib.asynccontextmanager
async def engines(ctx: Context, res: ScenarioResult) -> AsyncIterator[Engines]:
    work = ctx.scratch("scale-engines")
    pg: PgServer | None = None
    weed: seaweedfs.SeaweedFS | None = None
    try:
        pg = await asyncio.to_thread(start_postgres, durable=True)
        weed = await asyncio.to_thread(
            seaweedfs.start_seaweedfs,
            work,
            [peers.S3_BUCKET],
            ctx.logs_dir / "scale-seaweedfs.log",
        )
        await peers.wait_s3_writable(peers.seaweedfs_client(weed))
        version = await asyncio.to_thread(seaweedfs.version)
        ctx.peer_status.setdefault(
            "seaweedfs", PeerStatus("seaweedfs", "ok", f"{version}; weed mini")
        )
        yield Engines(pg, weed)
    finally:
        if weed is not None:
            await asyncio.to_thread(weed.stop)
        if pg is not None:
            await asyncio.to_thread(remove, pg)
        trash.retire(work)


async def measure(
    ctx: Context,
    res: ScenarioResult,
    config: Config,
    env: dict[str, str],
    weed: seaweedfs.SeaweedFS | None = None,
) -> Row:
    """One configuration's figures; with ``weed``, its 4 KiB uploads are followed by as many
    4 KiB S3 PUTs to it, and on PostgreSQL + S3 each big upload by a direct PUT of the same
    size, so each ratio is taken under the same load."""
    sz = ctx.sizes
    row = Row()
    data = ctx.scratch("scale-data")
    slug = f"{config.kind.split()[0].lower()}-w{config.workers}{'-plain' if config.plain else ''}"
    server = filesvc_server(
        data,
        ctx.logs_dir / f"scale-{slug}-filesvc.log",
        ctx.secret,
        workers=config.workers,
        env={**env, **config.env()},
    )
    try:
        await asyncio.to_thread(server.start)
        api = client.FilesApi.local(server.port, ctx.company, ctx.secret)
        assert server.sampler is not None
        server.sampler.reset()
        spec = many.SmallSpec("files-raw", api.files_url, tuple(api.auth.items()))
        total = small_requests(ctx)
        await warm_small(ctx, spec)
        first = ctx.small_seeds(total)
        seconds, lat = await asyncio.to_thread(
            many.run_many, spec, total, SMALL_CONCURRENCY, CLIENT_PROCESSES, first
        )
        row.small = total / seconds
        res.add(
            Metric(f"{config.name}: 4 KiB uploads", "filesvc", row.small, "req/s",
                   runs=[row.small], latency_ms=percentiles_ms(lat))
        )  # fmt: skip
        if weed is not None:
            row.peer_small = await small_puts(ctx, weed)
        ups: list[float] = []
        downs: list[float] = []
        async with session() as s:
            for _ in range(big_reps(ctx)):
                t = time.perf_counter()
                fid = await client.upload_single(s, api, sz.big, ctx.seed(), multipart=False)
                ups.append(client.mb_per_s(sz.big, time.perf_counter() - t))
                t = time.perf_counter()
                n = await client.download(s, api.file_url(fid) + "/download", api.auth)
                if n != sz.big:
                    raise client.WorkloadError(f"downloaded {n} bytes, not {sz.big}")
                downs.append(client.mb_per_s(sz.big, time.perf_counter() - t))
                if weed is not None and config.kind == SCALED:
                    t = time.perf_counter()
                    await peers.seaweedfs_client(weed).put_stream(
                        s, peers.S3_BUCKET, f"big-{ctx.seed()}", sz.big, ctx.seed()
                    )
                    row.direct.append(client.mb_per_s(sz.big, time.perf_counter() - t))
        row.up, row.down = median(ups), median(downs)
        res.add(Metric(f"{config.name}: upload, raw body", "filesvc", row.up, "MB/s", runs=ups))
        res.add(Metric(f"{config.name}: download", "filesvc", row.down, "MB/s", runs=downs))
    except Exception as e:
        for what, unit in (("4 KiB uploads", "req/s"), ("upload, raw body", "MB/s"),
                           ("download", "MB/s")):  # fmt: skip
            unavailable(res, [f"{config.name}: {what}"], "filesvc", unit, f"failed: {short(e)}")
        res.notes.append(f"{config.name}: {short(e)}; log tail: {server.log_tail(300)}")
    finally:
        if server.sampler is not None:
            stats = server.sampler.stats()
            row.rss_peak = stats.peak_mib
            res.rss[config.name] = stats
        await asyncio.to_thread(server.stop)
        trash.retire(data)
    return row


def small_requests(ctx: Context) -> int:
    return 2000 if ctx.quick else 6000


async def warm_small(ctx: Context, spec: many.SmallSpec) -> None:
    """``WARM_SMALL`` uncounted requests of ``spec``, with bodies of their own."""
    first = ctx.small_seeds(WARM_SMALL)
    await asyncio.to_thread(
        many.run_many, spec, WARM_SMALL, SMALL_CONCURRENCY, CLIENT_PROCESSES, first
    )


def big_reps(ctx: Context) -> int:
    return 1 if ctx.quick else 2


async def small_puts(ctx: Context, weed: seaweedfs.SeaweedFS) -> float | None:
    """As many 4 KiB S3 PUTs to ``weed`` as a configuration's 4 KiB uploads: req/s, or None
    when they failed."""
    s3 = peers.seaweedfs_client(weed)
    total = small_requests(ctx)
    spec = many.SmallSpec("s3-put", s3.endpoint, s3=(peers.S3_BUCKET, s3.key_id, s3.secret))
    try:
        await warm_small(ctx, spec)
        first = ctx.small_seeds(total)
        seconds, _lat = await asyncio.to_thread(
            many.run_many, spec, total, SMALL_CONCURRENCY, CLIENT_PROCESSES, first
        )
    except Exception:
        return None
    return total / seconds


async def peers_on(
    ctx: Context,
    res: ScenarioResult,
    weed: seaweedfs.SeaweedFS,
    direct: list[float],
    beside: list[float],
) -> None:
    """The same engine the PostgreSQL + S3 configuration writes to, without filesvc: the 4 KiB
    PUTs made right after each configuration's 4 KiB uploads (``beside``), and the big PUTs
    made right after each PostgreSQL + S3 upload (``direct``); each measured here when there
    are none."""
    if beside:
        note = "no fsync; each run right after a configuration's 4 KiB uploads"
        res.add(Metric(SW_SMALL, "peer", median(beside), "req/s", runs=beside, note=note))
    else:
        rate = await small_puts(ctx, weed)
        if rate is None:
            unavailable(res, [SW_SMALL], "peer", "req/s", "failed")
        else:
            res.add(Metric(SW_SMALL, "peer", rate, "req/s", runs=[rate], note="no fsync"))
    s3 = peers.seaweedfs_client(weed)
    sz = ctx.sizes
    if direct:
        note = "no fsync; each right after a PostgreSQL + S3 upload"
        res.add(Metric(SW_BIG, "peer", median(direct), "MB/s", runs=direct, note=note))
        return
    runs: list[float] = []
    try:
        async with session() as s:
            for _ in range(big_reps(ctx)):
                t = time.perf_counter()
                await s3.put_stream(s, peers.S3_BUCKET, f"big-{ctx.seed()}", sz.big, ctx.seed())
                runs.append(client.mb_per_s(sz.big, time.perf_counter() - t))
        res.add(Metric(SW_BIG, "peer", median(runs), "MB/s", runs=runs, note="no fsync"))
    except Exception as e:
        unavailable(res, [SW_BIG], "peer", "MB/s", f"failed: {short(e)}")


def closing_table(rows: dict[Config, Row], size_label: str) -> str:
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:,.0f}"

    def ratio(row: Row) -> str:
        if row.small is None or not row.peer_small:
            return "n/a"
        return f"{row.small / row.peer_small:.2f}"

    head = (
        f"{'configuration':<64} {'4 KiB req/s':>12} {size_label + ' up MB/s':>14} "
        f"{size_label + ' down MB/s':>16} {'peak RSS MiB':>13} {'x PUT beside':>13}"
    )
    lines = [head]
    for config, row in rows.items():
        lines.append(
            f"{config.name:<64} {num(row.small):>12} {num(row.up):>14} {num(row.down):>16} "
            f"{num(row.rss_peak):>13} {ratio(row):>13}"
        )
    return "\n".join(lines)


def small_targets(rows: dict[Config, Row], peer: float | None) -> list[Target]:
    """Issue 8's 4 KiB target for the best configuration of all, and for the best of the
    default (encryption on) beside it, each naming its configuration.  A configuration is
    judged against the SeaweedFS PUTs run right after its own uploads (the same load), else
    against ``peer``."""
    ratios = {
        c: r.small / ref
        for c, r in rows.items()
        if r.small is not None and (ref := r.peer_small or peer)
    }
    return [
        best_target(
            f"4 KiB durable uploads ({label}) ≥ 1.0 x SeaweedFS S3 PUT",
            pool,
            1.0,
            "each beside PUTs run right after it",
        )
        for label, pool in (
            ("best configuration", ratios),
            ("best with encryption on", {c: v for c, v in ratios.items() if not c.plain}),
        )
    ]


def best_target(what: str, ratios: dict[Config, float], want: float, how: str) -> Target:
    """The target met by the configuration with the highest ratio, naming it (none measured:
    not measured)."""
    best = max(ratios, key=lambda c: ratios[c]) if ratios else None
    return Target(
        what,
        ratios[best] if best is not None else None,
        ">=",
        want,
        note=f"best: {best.name if best else 'n/a'}; {how}",
    )


async def scenario_scale(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    many = ctx.workers if ctx.workers > 1 else 2
    size_label = f"{sz.big / (1 << 30):g} GiB" if sz.big >= 1 << 30 else f"{sz.big >> 20} MiB"
    res = ScenarioResult(
        "scale",
        f"configurations side by side: {LOCAL} and {SCALED}, 1 and {many} server processes "
        f"({small_requests(ctx)} 4 KiB uploads, {size_label} up and down)",
    )
    local = [Config(LOCAL, 1), Config(LOCAL, many)]
    local += [Config(LOCAL, 1, plain=True), Config(LOCAL, many, plain=True)]
    local += [Config(LOCAL, many, files=True)]
    configs = [*local, Config(SCALED, 1), Config(SCALED, many), Config(SCALED, many, files=True)]
    rows: dict[Config, Row] = {}
    # The engines first: the SeaweedFS 4 KiB PUTs run right after every configuration's.
    try:
        async with engines(ctx, res) as eng:
            for config in configs:
                env = await asyncio.to_thread(eng.env) if config.kind == SCALED else {}
                rows[config] = await measure(ctx, res, config, env, eng.weed)
            direct = [r for c in configs if c in rows for r in rows[c].direct]
            beside = [r.peer_small for r in rows.values() if r.peer_small is not None]
            await peers_on(ctx, res, eng.weed, direct, beside)
    except Exception as e:
        res.notes.append(f"PostgreSQL + S3 engines: {short(e)}")
        for config in local:
            if config not in rows:
                rows[config] = await measure(ctx, res, config, {})
        for config in configs[len(local) :]:
            rows.setdefault(config, Row())
    res.extra["table"] = closing_table(rows, size_label)
    res.notes.append("configuration x figures\n" + closing_table(rows, size_label))
    sw_small, sw_big = res.metric(SW_SMALL), res.metric(SW_BIG)
    res.targets += small_targets(rows, sw_small.value if sw_small is not None else None)
    # Each configuration against the direct PUTs made beside its own uploads (the same load),
    # else against the peer's figure.
    reference = {
        c: median(r.direct) if r.direct else (sw_big.value if sw_big is not None else None)
        for c, r in rows.items()
        if c.kind == SCALED
    }
    ups = {
        c: r.up / ref
        for c, r in rows.items()
        if c.kind == SCALED and r.up is not None and (ref := reference.get(c))
    }
    res.targets.append(
        best_target(
            f"{size_label} upload on PostgreSQL + S3 ≥ 0.8 x a direct SeaweedFS S3 PUT",
            ups,
            0.8,
            "each upload beside a direct PUT",
        )
    )
    return res
