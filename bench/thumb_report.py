"""The thumbnail benchmark's figures: ratios against the peers, the harness's metrics, a table."""

from __future__ import annotations

import math

from bench.thumb_inputs import IMAGES


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _ratios(per_format: dict[str, dict[str, object]]) -> dict[str, tuple[float, float]]:
    """format -> (speed vs peer: peer ms / filesvc ms, memory vs peer: filesvc / peer MiB)."""
    out = {}
    for name, entry in per_format.items():
        peer = entry.get("peer")
        mine, theirs = entry.get("filesvc"), entry.get(str(peer)) if peer else None
        if isinstance(mine, dict) and isinstance(theirs, dict):
            speed = float(theirs["ms"]) / max(float(mine["ms"]), 1e-9)
            memory = float(mine["increment_mib"]) / max(float(theirs["increment_mib"]), 0.1)
            out[name] = (speed, memory)
    return out


def _increment(entry: dict[str, object], method: str) -> float:
    figures = entry.get(method)
    return float(figures["increment_mib"]) if isinstance(figures, dict) else 0.0


def summary(per_format: dict[str, dict[str, object]]) -> dict[str, object]:
    """Ratios against Pillow over the image formats, and per format."""
    ratios = _ratios(per_format)
    images = [name for name in IMAGES if name in ratios]
    mine = sum(_increment(per_format[n], "filesvc") for n in images)
    pillow = sum(_increment(per_format[n], "pillow") for n in images)
    return {
        "image_formats": images,
        "image_speed_geomean_vs_pillow": _geomean([ratios[n][0] for n in images]),
        "image_memory_geomean_vs_pillow": _geomean([ratios[n][1] for n in images]),
        "image_memory_sum_vs_pillow": mine / pillow if images and pillow > 0 else None,
        "jpeg_speed_vs_pillow": ratios["jpeg"][0] if "jpeg" in ratios else None,
        "per_format": {name: {"speed": s, "memory": m} for name, (s, m) in ratios.items()},
    }


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
    for key in ("image_speed_geomean_vs_pillow", "jpeg_speed_vs_pillow"):
        out.append({"subject": key, "kind": "filesvc", "value": totals[key], "unit": "x"})
    for key in ("image_memory_geomean_vs_pillow", "image_memory_sum_vs_pillow"):
        out.append({"subject": key, "kind": "filesvc", "value": totals[key], "unit": "x"})
    return out


def format_table(result: dict[str, object]) -> str:
    rows = [
        f"{'format':<7} {'filesvc ms':>10} {'peer ms':>8} {'speed':>6} {'filesvc MiB':>11} "
        f"{'peer MiB':>8}  peer / output"
    ]
    per_format = result["formats"]
    assert isinstance(per_format, dict)
    for name, entry in per_format.items():
        mine = entry["filesvc"]
        peer = entry.get("peer")
        theirs = entry.get(peer) if peer else None
        if theirs:
            rows.append(
                f"{name:<7} {mine['ms']:>10.0f} {theirs['ms']:>8.0f} "
                f"{theirs['ms'] / max(mine['ms'], 1e-9):>5.2f}x {mine['increment_mib']:>11.1f} "
                f"{theirs['increment_mib']:>8.1f}  {peer} / {mine['result']}"
            )
        else:
            rows.append(
                f"{name:<7} {mine['ms']:>10.0f} {'-':>8} {'-':>6} {mine['increment_mib']:>11.1f} "
                f"{'-':>8}  - / {mine['result']}"
            )
    summary = result["summary"]
    assert isinstance(summary, dict)

    def show(value: object) -> str:
        return f"{value:.2f}x" if isinstance(value, float) else "-"

    rows.append(
        f"images ({', '.join(summary['image_formats'])}): speed vs Pillow, geometric mean "
        f"{show(summary['image_speed_geomean_vs_pillow'])} (JPEG "
        f"{show(summary['jpeg_speed_vs_pillow'])}); memory above baseline vs Pillow, geometric "
        f"mean {show(summary['image_memory_geomean_vs_pillow'])}, total "
        f"{show(summary['image_memory_sum_vs_pillow'])}"
    )
    rows.append(
        f"{result['runs']} fresh processes per method and format, each timing a first call, then "
        f"{result['repeats']} more (median ms); speed = peer ms / filesvc ms"
    )
    return "\n".join(rows)
