"""The report of a run: a plain-text table on stdout, `results.json`, and three PNG plots
(throughput by scenario, latency percentiles, RSS over time)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # the backend is chosen first

from bench.results_model import Metric, RunResult, ScenarioResult

KIND_COLOURS = {
    "filesvc": "#1f77b4",
    "ceiling": "#7f7f7f",
    "peer": "#ff7f0e",
    "reference": "#2ca02c",
}
THROUGHPUT_UNITS = ("MB/s", "req/s")


def _num(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 100 or digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio(m: Metric) -> str:
    out = []
    for ref, ratio in m.ratios.items():
        short = ref.removeprefix("ceiling: ").removeprefix("peer: ")
        out.append(f"{ratio:.2f} x {short}" if ratio is not None else f"n/a vs {short}")
    return "; ".join(out)


def _lat(m: Metric) -> str:
    if not m.latency_ms:
        return ""
    lat = m.latency_ms
    return f"{lat.get('p50', 0):.1f} / {lat.get('p99', 0):.1f}"


def scenario_table(sc: ScenarioResult) -> str:
    lines = [f"== {sc.name}: {sc.title}  [{sc.seconds:.0f} s]"]
    if sc.error:
        lines.append(f"   ERROR: {sc.error}")
    if sc.metrics:
        width = max(len(m.subject) for m in sc.metrics)
        lines.append(f"   {'':{width}}  {'value':>14}  {'p50/p99 ms':>13}  ratios; note")
        for m in sc.metrics:
            value = f"{_num(m.value, 1)} {m.unit}"
            tail = "; ".join(x for x in (_ratio(m), m.note) if x)
            lines.append(f"   {m.subject:{width}}  {value:>14}  {_lat(m):>13}  {tail}".rstrip())
    for name, r in sc.rss.items():
        lines.append(
            f"   RSS {name}: start {r.start_mib:.0f} MiB, peak {r.peak_mib:.0f} MiB, "
            f"growth {r.growth_mib:+.0f} MiB (peak {r.peak_growth_mib:+.0f} MiB)"
        )
    for t in sc.targets:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t.met]
        value = "n/a" if t.value is None else f"{t.value:.2f}"
        lines.append(f"   target {mark} {t.name}: {value} (want {t.op} {t.threshold:g})")
    for note in sc.notes:
        lines.append(f"   note: {note.strip()}")
    return "\n".join(lines)


def format_table(run: RunResult) -> str:
    head = [
        f"filesvc benchmark, {run.started}{' (quick)' if run.quick else ''}",
        "machine: " + ", ".join(f"{k} {v}" for k, v in run.machine.items()),
        "peers: "
        + (
            "; ".join(f"{p.name} {p.status} ({p.detail})" for p in run.peers.values())
            or "none tried"
        ),
        "",
    ]
    body = [scenario_table(sc) + "\n" for sc in run.scenarios]
    targets = [(sc.name, t) for sc in run.scenarios for t in sc.targets]
    met = sum(1 for _, t in targets if t.met)
    missed = [f"{n}: {t.name}" for n, t in targets if t.met is False]
    unknown = [f"{n}: {t.name}" for n, t in targets if t.met is None]
    tail = [f"targets: {met} met, {len(missed)} missed, {len(unknown)} not measured"]
    tail += [f"  missed: {x}" for x in missed] + [f"  not measured: {x}" for x in unknown]
    return "\n".join(head + body + tail)


def write_json(run: RunResult, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "results.json"
    path.write_text(json.dumps(run.to_json(), indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def _bar_panels(run: RunResult) -> list[tuple[str, str, list[Metric]]]:
    panels = []
    for sc in run.scenarios:
        for unit in THROUGHPUT_UNITS:
            ms = [m for m in sc.metrics if m.unit == unit]
            if ms:
                panels.append((sc.name, unit, ms))
    return panels


def plot_throughput(run: RunResult, path: Path) -> Path | None:
    panels = _bar_panels(run)
    if not panels:
        return None
    heights = [0.45 * len(ms) + 0.9 for _, _, ms in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    axes_list = list(axes) if len(panels) > 1 else [axes]
    for ax, (name, unit, ms) in zip(axes_list, panels, strict=True):
        labels = [m.subject for m in ms]
        values = [m.value or 0.0 for m in ms]
        colours = [KIND_COLOURS.get(m.kind, "#333333") for m in ms]
        ax.barh(labels, values, color=colours)
        ax.invert_yaxis()
        for i, m in enumerate(ms):
            text = "n/a" if m.value is None else f"{m.value:,.0f}"
            if m.ratio is not None:
                text += f"  ({m.ratio:.2f}x)"
            ax.text(values[i], i, " " + text, va="center", fontsize=8)
        ax.set_title(f"{name} ({unit})", fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(x=0.25)
    fig.suptitle("Throughput by scenario (grey: ceilings, blue: filesvc, orange: peers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(run: RunResult, path: Path) -> Path | None:
    ms = [(sc.name, m) for sc in run.scenarios for m in sc.metrics if m.latency_ms]
    if not ms:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(ms) + 1.5))
    keys = ("p50", "p90", "p99")
    bar_h = 0.8 / len(keys)
    for j, key in enumerate(keys):
        ys = [i + j * bar_h for i in range(len(ms))]
        xs = [(m.latency_ms or {}).get(key, 0.0) for _, m in ms]
        ax.barh(ys, xs, height=bar_h, label=key)
    ax.set_yticks([i + bar_h for i in range(len(ms))])
    ax.set_yticklabels([f"{n}: {m.subject}" for n, m in ms], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency per request (ms, log scale)")
    ax.legend()
    ax.set_title("Latency percentiles")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rss(run: RunResult, path: Path) -> Path | None:
    scs = [sc for sc in run.scenarios if sc.rss]
    if not scs:
        return None
    fig, axes = plt.subplots(len(scs), 1, figsize=(10, 2.4 * len(scs)), squeeze=False)
    for ax, sc in zip(axes[:, 0], scs, strict=True):
        for name, r in sc.rss.items():
            ts = [t for t, _ in r.samples]
            vs = [v for _, v in r.samples]
            ax.plot(ts, vs, label=f"{name} (peak {r.peak_mib:.0f} MiB)")
        ax.set_title(sc.name, fontsize=10, loc="left")
        ax.set_ylabel("RSS (MiB)")
        ax.legend(fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("seconds since the server started its part of the scenario")
    fig.suptitle("Server RSS over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(run: RunResult, results_dir: Path) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    made = [
        plot_throughput(run, results_dir / "throughput.png"),
        plot_latency(run, results_dir / "latency.png"),
        plot_rss(run, results_dir / "rss.png"),
    ]
    return [p for p in made if p is not None]
