"""`python -m bench`: run the benchmark scenarios, print the table, write JSON and plots.

python -m bench                      # every scenario, full size, with peers
python -m bench --quick              # a short run
python -m bench --scenario upload --scenario small
python -m bench --no-peers --results /tmp/r
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench import report, trash
from bench.kit import Context
from bench.results_model import RunResult
from bench.scenarios import SCENARIOS, run_scenario

BENCH_DIR = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark filesvc against ceilings and peers measured in the same run.",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes and one repetition")
    p.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--results",
        type=Path,
        help="folder for results.json and the plots (default bench/results/<timestamp>)",
    )
    p.add_argument("--no-peers", action="store_true", help="skip SeaweedFS and tus")
    p.add_argument(
        "--target",
        choices=["filesvc", "fake"],
        default="filesvc",
        help="server under test: `filesvc serve`, or the bench's own fake of the contract",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes of filesvc (`filesvc serve --workers N`) in every scenario; "
        "the `scale` scenario measures 1 and N (2 when N is 1) on both configurations",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        help="where servers and the disk ceiling write (default: a temp dir; use the disk "
        "you want measured)",
    )
    return p


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def machine_info(work_dir: Path) -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
        "work fs": _fs_type(work_dir),
        "commit": _git_head(),
    }


async def run(args: argparse.Namespace, work_dir: Path, results_dir: Path) -> RunResult:
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    result = RunResult(started=started, quick=args.quick, argv=sys.argv[1:])
    result.machine = machine_info(work_dir)
    if args.workers != 1:
        result.machine["filesvc workers"] = str(args.workers)
    ctx = Context(
        quick=args.quick,
        peers=not args.no_peers,
        target=args.target,
        work_dir=work_dir,
        logs_dir=results_dir / "logs",
        secret=secrets.token_urlsafe(32),
        workers=args.workers,
    )
    if ctx.target == "fake":
        result.machine["target"] = "FAKE filesvc (bench/fake_server.py)"
    for name in args.scenario or list(SCENARIOS):
        print(f"-- running {name} ...", flush=True)
        sc = await run_scenario(name, ctx)
        result.scenarios.append(sc)
        result.peers = dict(ctx.peer_status)
        print(report.scenario_table(sc) + "\n", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be from 1 to 64")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_dir: Path = args.results or BENCH_DIR / "results" / stamp
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="filesvc-bench-", dir=args.work_dir))
    if _fs_type(work_dir) == "tmpfs":
        print(f"warning: {work_dir} is on tmpfs; the disk figures will not be disk figures")
    trash.settle()
    try:
        result = asyncio.run(run(args, work_dir, results_dir))
    finally:
        trash.empty()
        shutil.rmtree(work_dir, ignore_errors=True)
    print("=" * 100)
    print(report.format_table(result))
    json_path = report.write_json(result, results_dir)
    (results_dir / "table.txt").write_text(report.format_table(result) + "\n")
    plots = report.write_plots(result, results_dir)
    print(f"\nresults: {json_path}")
    for p in plots:
        print(f"plot:    {p}")
    return 1 if any(sc.error for sc in result.scenarios if sc.name != "thumbnail") else 0


if __name__ == "__main__":
    sys.exit(main())
