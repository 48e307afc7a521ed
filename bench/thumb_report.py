"""The thumbnail benchmark's figures: ratios against the peers, the harness's metrics, a table."""

from __future__ import annotations

import math

from bench.thumb_inputs import IMAGES


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _ratios(per_format: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """format -> speed vs the peer by wall and by CPU time (peer ms / filesvc ms), and memory
    (filesvc MiB / peer MiB)."""
    out = {}
    for name, entry in per_format.items():
        peer = entry.get("peer")
        mine, theirs = entry.get("filesvc"), entry.get(str(peer)) if peer else None
        if isinstance(mine, dict) and isinstance(theirs, dict):
            out[name] = {
                "speed": float(theirs["ms"]) / max(float(mine["ms"]), 1e-9),
                "cpu_speed": float(theirs["cpu_ms"]) / max(float(mine["cpu_ms"]), 1e-9),
                "memory": float(mine["increment_mib"]) / max(float(theirs["increment_mib"]), 0.1),
            }
    return out


def _increment(entry: dict[str, object], method: str) -> float:
    figures = entry.get(method)
    return float(figures["increment_mib"]) if isinstance(figures, dict) else 0.0


# Issue 11's targets, over the image formats, same run: speed (wall time, what a user waiting
# for a thumbnail sees; CPU time is given beside it) and the memory increment.
SPEED_TARGET = 1.5
JPEG_TARGET = 1.0
MEMORY_TARGET = 0.5


def summary(per_format: dict[str, dict[str, object]]) -> dict[str, object]:
    """Ratios against Pillow over the image formats, and per format."""
    ratios = _ratios(per_format)
    images = [name for name in IMAGES if name in ratios]
    mine = sum(_increment(per_format[n], "filesvc") for n in images)
    pillow = sum(_increment(per_format[n], "pillow") for n in images)
    jpeg = ratios.get("jpeg", {})
    return {
        "image_formats": images,
        "image_speed_geomean_vs_pillow": _geomean([ratios[n]["speed"] for n in images]),
        "image_cpu_speed_geomean_vs_pillow": _geomean([ratios[n]["cpu_speed"] for n in images]),
        "image_memory_geomean_vs_pillow": _geomean([ratios[n]["memory"] for n in images]),
        "image_memory_sum_vs_pillow": mine / pillow if images and pillow > 0 else None,
        "jpeg_speed_vs_pillow": jpeg.get("speed"),
        "jpeg_cpu_speed_vs_pillow": jpeg.get("cpu_speed"),
        "per_format": ratios,
    }


def targets(totals: dict[str, object]) -> list[dict[str, object]]:
    """The issue's three targets as (name, value, op, threshold, met), for the table and the
    harness; a target whose figures are missing (a subset of formats) is left out."""
    wanted = (
        (
            f"image speed vs Pillow, geometric mean (wall) >= {SPEED_TARGET}x",
            "image_speed_geomean_vs_pillow",
            ">=",
            SPEED_TARGET,
            "by CPU time: {image_cpu_speed_geomean_vs_pillow}",
        ),
        (
            f"JPEG speed vs Pillow (wall) >= {JPEG_TARGET}x",
            "jpeg_speed_vs_pillow",
            ">=",
            JPEG_TARGET,
            "by CPU time: {jpeg_cpu_speed_vs_pillow}",
        ),
        (
            f"image memory increment vs Pillow, total <= {MEMORY_TARGET}x",
            "image_memory_sum_vs_pillow",
            "<=",
            MEMORY_TARGET,
            "geometric mean: {image_memory_geomean_vs_pillow}",
        ),
    )
    out: list[dict[str, object]] = []
    formats = totals.get("image_formats")
    if not isinstance(formats, list) or len(formats) < len(IMAGES):
        return out  # the targets are over every image format
    for name, key, op, threshold, note in wanted:
        value = totals.get(key)
        if not isinstance(value, float):
            continue
        met = value >= threshold if op == ">=" else value <= threshold
        shown = {k: _show(v) for k, v in totals.items()}
        out.append(
            {
                "name": name,
                "value": value,
                "op": op,
                "threshold": threshold,
                "met": met,
                "note": note.format(**shown),
            }
        )
    return out


def _show(value: object) -> str:
    return f"{value:.2f}x" if isinstance(value, float) else "-"


def metrics(
    per_format: dict[str, dict[str, object]], totals: object, box: tuple[int, int], runs: int
) -> list[dict[str, object]]:
    """The figures in the harness's shape (subject, kind, value, unit, note)."""
    out: list[dict[str, object]] = []
    note = f"fit {box[0]}x{box[1]}, fresh process per run, {runs} runs"
    for name, entry in per_format.items():
        for method in ("filesvc", str(entry.get("peer"))):
            figures = entry.get(method)
            if not isinstance(figures, dict):
                continue
            kind = "filesvc" if method == "filesvc" else "peer"
            for suffix, key, unit in (
                ("time", "ms", "ms"),
                ("CPU time", "cpu_ms", "ms"),
                ("first call", "first_ms", "ms"),
                ("memory above baseline", "increment_mib", "MiB"),
            ):
                out.append(
                    {
                        "subject": f"{name}: {method}, {suffix}",
                        "kind": kind,
                        "value": figures[key],
                        "unit": unit,
                        "note": note,
                    }
                )
    assert isinstance(totals, dict)
    for key in (
        "image_speed_geomean_vs_pillow",
        "image_cpu_speed_geomean_vs_pillow",
        "jpeg_speed_vs_pillow",
        "jpeg_cpu_speed_vs_pillow",
    ):
        out.append({"subject": key, "kind": "filesvc", "value": totals[key], "unit": "x"})
    for key in ("image_memory_geomean_vs_pillow", "image_memory_sum_vs_pillow"):
        out.append({"subject": key, "kind": "filesvc", "value": totals[key], "unit": "x"})
    return out


def format_table(result: dict[str, object]) -> str:
    rows = [
        f"{'format':<7} {'filesvc ms':>10} {'(CPU)':>6} {'peer ms':>8} {'(CPU)':>6} "
        f"{'speed':>6} {'(CPU)':>6} {'filesvc MiB':>11} {'peer MiB':>8}  peer / output"
    ]
    per_format = result["formats"]
    assert isinstance(per_format, dict)
    for name, entry in per_format.items():
        mine = entry["filesvc"]
        peer = entry.get("peer")
        theirs = entry.get(peer) if peer else None
        if theirs:
            rows.append(
                f"{name:<7} {mine['ms']:>10.0f} {mine['cpu_ms']:>6.0f} {theirs['ms']:>8.0f} "
                f"{theirs['cpu_ms']:>6.0f} {theirs['ms'] / max(mine['ms'], 1e-9):>5.2f}x "
                f"{theirs['cpu_ms'] / max(mine['cpu_ms'], 1e-9):>5.2f}x "
                f"{mine['increment_mib']:>11.1f} {theirs['increment_mib']:>8.1f}  "
                f"{peer} / {mine['result']}"
            )
        else:
            rows.append(
                f"{name:<7} {mine['ms']:>10.0f} {mine['cpu_ms']:>6.0f} {'-':>8} {'-':>6} "
                f"{'-':>6} {'-':>6} {mine['increment_mib']:>11.1f} {'-':>8}  - / {mine['result']}"
            )
    summary = result["summary"]
    assert isinstance(summary, dict)
    rows.append(
        f"images ({', '.join(summary['image_formats'])}): speed vs Pillow, geometric mean "
        f"{_show(summary['image_speed_geomean_vs_pillow'])} by wall time, "
        f"{_show(summary['image_cpu_speed_geomean_vs_pillow'])} by CPU time (JPEG "
        f"{_show(summary['jpeg_speed_vs_pillow'])}, "
        f"{_show(summary['jpeg_cpu_speed_vs_pillow'])}); memory above baseline vs Pillow, "
        f"geometric mean {_show(summary['image_memory_geomean_vs_pillow'])}, total "
        f"{_show(summary['image_memory_sum_vs_pillow'])}"
    )
    found = result.get("targets")
    for target in found if isinstance(found, list) else []:
        mark = "met" if target["met"] else "MISSED"
        rows.append(f"target {mark}: {target['name']}: {_show(target['value'])} ({target['note']})")
    rows.append(
        f"{result['runs']} fresh processes per method and format, each timing a first call, then "
        f"{result['repeats']} more (median ms); speed = peer ms / filesvc ms"
    )
    return "\n".join(rows)
