"""Scenario ``encryption``: the cost of encryption at rest, same run, same bytes.

Two filesvc servers on fresh data directories, one sealing blobs (the default) and one with
``FILESVC_ENCRYPTION=off``; their repetitions interleave so the machine's drift hits both alike.
Targets (docs/encryption.md): sealed 1 GiB upload and download ≥ 0.8 x plain, 4 KiB uploads
≥ 0.9 x plain, and the sealing server's RSS growth while streaming under 64 MiB.  Each streamed
figure also notes the server's CPU seconds per GiB (median), which a loaded machine distorts
far less than the rate: on two cores shared with the client, what sealing adds to it is what
the rate loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from bench import client, many, trash
from bench.data import GiB
from bench.kit import (
    CLIENT_PROCESSES,
    SMALL_CONCURRENCY,
    Context,
    Once,
    interleaved,
    rate,
    ratio_target,
    session,
    short,
    unavailable,
)
from bench.read_cpu import tree_cpu_seconds
from bench.results_model import Metric, ScenarioResult, Target, median
from bench.server import filesvc_server

SEALED = "sealed"
PLAIN = "plain"


@contextlib.asynccontextmanager
async def server(
    ctx: Context, res: ScenarioResult, kind: str, pids: dict[str, int]
) -> AsyncIterator[client.FilesApi]:
    """A fresh filesvc, sealing or not; its RSS lands in ``res.rss[f"filesvc {kind}"]``, its
    pid in ``pids[kind]``."""
    data = ctx.scratch(f"{res.name}-{kind}-data")
    env = {"FILESVC_ENCRYPTION": "on" if kind == SEALED else "off"}
    proc = filesvc_server(
        data, ctx.logs_dir / f"{res.name}-{kind}-filesvc.log", ctx.secret, env=env
    )
    try:
        await asyncio.to_thread(proc.start)
        assert proc.sampler is not None
        proc.sampler.reset()
        assert proc.proc is not None
        pids[kind] = proc.proc.pid
        yield client.FilesApi.local(proc.port, ctx.company, ctx.secret)
        if proc.proc is not None and proc.proc.poll() is not None:
            res.notes.append(f"filesvc {kind} exited during the scenario: {proc.log_tail(300)}")
    finally:
        if proc.sampler is not None:
            res.rss[f"filesvc {kind}"] = proc.sampler.stats()
        await asyncio.to_thread(proc.stop)
        trash.retire(data)


async def scenario_encryption(ctx: Context) -> ScenarioResult:
    sz = ctx.sizes
    res = ScenarioResult(
        "encryption",
        f"encryption at rest: {sz.big / GiB:g} GiB upload and download and"
        f" {sz.small_requests} uploads of 4 KiB, sealed against FILESVC_ENCRYPTION=off",
    )
    up = {k: f"filesvc {k}: upload, raw body" for k in (SEALED, PLAIN)}
    down = {k: f"filesvc {k}: download" for k in (SEALED, PLAIN)}
    small = {k: f"filesvc {k}: 4 KiB uploads" for k in (SEALED, PLAIN)}
    try:
        pids: dict[str, int] = {}
        cpu: dict[str, list[float]] = {}
        async with (
            server(ctx, res, SEALED, pids) as sealed,
            server(ctx, res, PLAIN, pids) as plain,
            session() as s,
        ):
            apis = {SEALED: sealed, PLAIN: plain}
            ids: dict[str, str] = {}

            def upload(kind: str) -> Once:
                async def once() -> float:
                    c = tree_cpu_seconds(pids[kind])
                    t = time.perf_counter()
                    ids[kind] = await client.upload_single(
                        s, apis[kind], sz.big, ctx.seed(), multipart=False
                    )
                    t = time.perf_counter() - t
                    cpu.setdefault(up[kind], []).append(tree_cpu_seconds(pids[kind]) - c)
                    return t

                return once

            def download(kind: str) -> Once:
                async def once() -> float:
                    url = apis[kind].file_url(ids[kind]) + "/download"
                    c = tree_cpu_seconds(pids[kind])
                    t = time.perf_counter()
                    n = await client.download(s, url, apis[kind].auth)
                    if n != sz.big:
                        raise client.WorkloadError(f"downloaded {n} bytes, not {sz.big}")
                    t = time.perf_counter() - t
                    cpu.setdefault(down[kind], []).append(tree_cpu_seconds(pids[kind]) - c)
                    return t

                return once

            await interleaved(
                res, sz.big, sz.reps,
                [(up[k], "filesvc", upload(k), "") for k in (PLAIN, SEALED)],
            )  # fmt: skip
            await interleaved(
                res, sz.big, sz.reps,
                [(down[k], "filesvc", download(k), "") for k in (PLAIN, SEALED)],
            )  # fmt: skip
            for kind in (PLAIN, SEALED, PLAIN, SEALED):
                api = apis[kind]
                spec = many.SmallSpec("files-raw", api.files_url, tuple(api.auth.items()))
                first = ctx.small_seeds(sz.small_requests)

                async def uploads(
                    spec: many.SmallSpec = spec, first: int = first
                ) -> tuple[float, list[float]]:
                    return await asyncio.to_thread(
                        many.run_many,
                        spec,
                        sz.small_requests,
                        SMALL_CONCURRENCY,
                        CLIENT_PROCESSES,
                        first,
                    )

                name = small[kind] + (" (2nd)" if res.metric(small[kind]) else "")
                await rate(res, name, "filesvc", sz.small_requests, uploads)
    except Exception as e:
        subjects = [*up.values(), *down.values(), *small.values()]
        unavailable(res, subjects, "filesvc", "MB/s", f"failed: {short(e)}")
    for kind in (PLAIN, SEALED):
        _merge_small(res, small[kind])
        for subject in (up[kind], down[kind]):
            _note_cpu(res, subject, cpu.get(subject, []), sz.big)
    ratio_target(res, "sealed upload ≥ 0.8 x plain", up[SEALED], up[PLAIN], 0.8)
    ratio_target(res, "sealed download ≥ 0.8 x plain", down[SEALED], down[PLAIN], 0.8)
    ratio_target(res, "sealed 4 KiB uploads ≥ 0.9 x plain", small[SEALED], small[PLAIN], 0.9)
    rss = res.rss.get(f"filesvc {SEALED}")
    res.targets.append(
        Target(
            "sealing server's RSS growth < 64 MiB while streaming",
            rss.peak_growth_mib if rss is not None and res.metric(up[SEALED]) else None,
            "<",
            64.0,
            note="peak minus the RSS at the scenario's start",
        )
    )
    return res


def _note_cpu(res: ScenarioResult, subject: str, seconds: list[float], size: int) -> None:
    metric = res.metric(subject)
    mid = median(seconds)
    if metric is None or mid is None:
        return
    per_gib = mid / (size / GiB)
    metric.note = "; ".join(x for x in (metric.note, f"server CPU {per_gib:.2f} s/GiB") if x)


def _merge_small(res: ScenarioResult, subject: str) -> None:
    """Two interleaved rounds of 4 KiB uploads per server: keep the mean as the figure."""
    second = res.metric(subject + " (2nd)")
    first = res.metric(subject)
    if first is None or second is None or first.value is None or second.value is None:
        return
    res.metrics.remove(second)
    first.runs = [*first.runs, *second.runs]
    first.value = sum(first.runs) / len(first.runs)


__all__ = ["Metric", "scenario_encryption"]
