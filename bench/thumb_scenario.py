"""The thumbnail scenario: `bench/thumbs.py` run as a child process, its figures and targets
taken into the run's results."""

from __future__ import annotations

import asyncio
import importlib

from bench.kit import (
    Context,
    short,
)
from bench.results_model import (
    Kind,
    Metric,
    ScenarioResult,
)


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
        res.error = f"bench/thumbs.py is not usable: {short(e)}"
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
