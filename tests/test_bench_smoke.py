"""Cheap checks of the benchmark harness: the report and plots render a synthetic result, the
command line accepts its flags. No benchmark runs here and nothing asserts a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import build_parser
from bench.data import iter_stream
from bench.results_model import (
    Metric,
    PeerStatus,
    RssStats,
    RunResult,
    ScenarioResult,
    Target,
    percentiles_ms,
)
from bench.scenarios import SCENARIOS
from bench.server import server_code_dir
from bench.thumb_scenario import absorb_thumbs


def synthetic_run() -> RunResult:
    sc = ScenarioResult("upload", "single-stream upload")
    sc.add(Metric("ceiling: disk write + fdatasync", "ceiling", 1500.0, "MB/s", runs=[1500.0]))
    sc.add(Metric("filesvc upload, raw body", "filesvc", 1200.0, "MB/s", runs=[1100.0, 1300.0]))
    sc.add(Metric("peer: SeaweedFS S3 PUT", "peer", None, "MB/s", note="unavailable: no weed"))
    sc.relate("filesvc upload, raw body", "ceiling: disk write + fdatasync")
    sc.targets.append(Target("raw upload >= 0.7 x disk", 0.8, ">=", 0.7))
    sc.targets.append(Target("raw upload >= SeaweedFS PUT", None, ">=", 1.0))
    sc.rss["filesvc"] = RssStats(40.0, 70.0, 45.0, samples=[(0.0, 40.0), (0.1, 70.0), (0.2, 45.0)])
    small = ScenarioResult("small", "4 KiB uploads")
    small.add(
        Metric(
            "filesvc 4 KiB upload",
            "filesvc",
            2000.0,
            "req/s",
            latency_ms=percentiles_ms([0.01, 0.02, 0.03, 0.5]),
        )
    )
    small.targets.append(Target("rss", 80.0, "<", 64.0))
    broken = ScenarioResult("thumbnail", "thumbs", error="bench/thumbs.py is not usable")
    run = RunResult("2026-01-01T00:00:00+00:00", True, ["--quick"])
    run.peers["tus"] = PeerStatus("tus", "unavailable", "npm install failed")
    run.scenarios += [sc, small, broken]
    return run


def test_table_names_every_figure_target_and_peer() -> None:
    text = report.format_table(synthetic_run())
    assert "filesvc upload, raw body" in text
    assert "0.80 x disk write + fdatasync" in text
    assert "unavailable: no weed" in text
    assert "tus unavailable (npm install failed)" in text
    assert "targets: 1 met, 1 missed, 1 not measured" in text
    assert "ERROR: bench/thumbs.py is not usable" in text


def test_json_and_plots_are_written(tmp_path: Path) -> None:
    run = synthetic_run()
    data = json.loads(report.write_json(run, tmp_path).read_text())
    assert data["scenarios"][0]["targets"][0]["met"] is True
    assert data["scenarios"][0]["rss"]["filesvc"]["peak_growth_mib"] == 30.0
    plots = report.write_plots(run, tmp_path)
    assert {p.name for p in plots} == {"throughput.png", "latency.png", "rss.png"}
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parser_accepts_the_documented_flags(tmp_path: Path) -> None:
    argv = ["--quick", "--scenario", "upload", "--scenario", "small", "--no-peers"]
    args = build_parser().parse_args([*argv, "--results", str(tmp_path)])
    assert args.quick and args.no_peers
    assert args.scenario == ["upload", "small"]
    assert args.results == tmp_path
    assert build_parser().parse_args([]).scenario is None


def test_parser_refuses_an_unknown_scenario() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--scenario", "nope"])


def test_every_scenario_is_selectable() -> None:
    for name in SCENARIOS:
        assert build_parser().parse_args(["--scenario", name]).scenario == [name]


def test_streams_have_the_exact_size_and_differ_by_seed() -> None:
    for size in (0, 1, 4096, (1 << 20) + 3):
        assert sum(len(p) for p in iter_stream(size, seed=1)) == size
    assert bytes(next(iter(iter_stream(64, 1)))) != bytes(next(iter(iter_stream(64, 2))))


def test_thumbs_results_become_metrics() -> None:
    sc = ScenarioResult("thumbnail", "thumbs")
    absorb_thumbs(sc, {"filesvc_ms": 95.0, "pillow": {"thumb_ms": 91.0}, "note": "24 MP"})
    assert [(m.subject, m.kind, m.unit) for m in sc.metrics] == [
        ("filesvc_ms", "filesvc", "ms"),
        ("pillow.thumb_ms", "peer", "ms"),
    ]


def test_thumbs_targets_become_the_scenarios_targets() -> None:
    from bench.thumb_report import summary, targets

    def method(ms: float, cpu_ms: float, mib: float) -> dict[str, object]:
        return {"ms": ms, "cpu_ms": cpu_ms, "increment_mib": mib, "result": "1 x 600x400"}

    # Every image format twice as fast as Pillow by wall time, JPEG only as fast by CPU time.
    per_format: dict[str, dict[str, object]] = {
        name: {"peer": "pillow", "filesvc": method(50, 80, 4), "pillow": method(100, 80, 10)}
        for name in ("jpeg", "png", "webp", "tiff", "gif", "avif", "heic")
    }
    totals = summary(per_format)
    sc = ScenarioResult("thumbnail", "thumbs")
    absorb_thumbs(sc, {"metrics": [], "targets": targets(totals)})
    assert [(t.value, t.op, t.threshold, t.met) for t in sc.targets] == [
        (2.0, ">=", 1.5, True),
        (2.0, ">=", 1.0, True),
        (0.4, "<=", 0.5, True),
    ]
    assert sc.targets[0].note == "by CPU time: 1.00x"
    # A subset of the formats judges no target.
    del per_format["heic"]
    assert targets(summary(per_format)) == []


def test_workers_flag_is_taken_and_bounded() -> None:
    from bench.__main__ import main

    assert build_parser().parse_args(["--workers", "4"]).workers == 4
    assert build_parser().parse_args([]).workers == 1
    for bad in ("0", "65"):
        with pytest.raises(SystemExit) as exit_:
            main(["--workers", bad, "--scenario", "scale"])
        assert exit_.value.code == 2


def test_scale_table_has_a_row_per_configuration() -> None:
    from bench.scale import LOCAL, SCALED, Config, Row, closing_table

    table = closing_table(
        {
            Config(LOCAL, 1): Row(1000.0, 900.0, 1800.0, 80.0, peer_small=800.0),
            Config(SCALED, 2): Row(),
        },
        "1 GiB",
    )
    head, local, scaled = table.splitlines()
    assert head.split() == (
        [
            "configuration",
            "4",
            "KiB",
            "req/s",
            "1",
            "GiB",
            "up",
            "MB/s",
            "1",
            "GiB",
            "down",
            "MB/s",
            "peak",
            "RSS",
            "MiB",
            "x",
            "PUT",
            "beside",
        ]
    )
    assert local.split()[-5:] == ["1,000", "900", "1,800", "80", "1.25"]
    assert scaled.startswith("PostgreSQL + S3 (SeaweedFS), 2 workers")
    assert scaled.split()[-5:] == ["n/a"] * 5


def test_a_server_given_older_code_starts_in_that_tree(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    assert server_code_dir({"PYTHONPATH": str(tmp_path)}) == tmp_path
    assert server_code_dir({"PYTHONPATH": "relative/tree"}) == repo
    assert server_code_dir({"FILESVC_WORKERS": "2"}) == repo
    assert server_code_dir(None) == repo


def test_scale_names_the_best_configuration_and_the_best_with_encryption_on() -> None:
    from bench.scale import LOCAL, SCALED, Config, Row, small_targets

    overall, default = small_targets(
        {
            Config(LOCAL, 1): Row(500.0, peer_small=1000.0),
            Config(LOCAL, 2): Row(600.0, peer_small=500.0),
            Config(LOCAL, 2, plain=True): Row(900.0, peer_small=600.0),
            # No PUTs beside it: judged against the peer's overall figure
            Config(SCALED, 2): Row(300.0),
        },
        800.0,
    )
    assert (overall.value, overall.met) == (1.5, True)
    assert overall.note.startswith("best: local disk + SQLite, 2 workers, encryption off;")
    assert (default.value, default.met) == (1.2, True)
    assert default.note.startswith("best: local disk + SQLite, 2 workers;")
    missing = small_targets({Config(LOCAL, 1): Row(500.0)}, None)
    assert [t.value for t in missing] == [None, None]
