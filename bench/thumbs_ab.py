"""Thumbnails, old code against new, with Pillow in the same run: ``python -m bench.thumbs_ab``.

``--before`` is a commit of this repository (extracted for the run) or another source tree of
filesvc (``git archive <commit> | tar -x -C DIR``).
For each format, fresh child processes of ``bench.thumbs --child`` run in turn, the old tree's
renderer, this tree's, then Pillow, ``--runs`` times, so that the three share the machine's
noise; each child times a first call and three more (median), as ``bench.thumbs`` does. The
old tree's child runs in the worker environment that tree's pool gives (``VIPS_CONCURRENCY=1``
where it has no ``worker_environment``), this tree's in this tree's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.before_code import tree
from bench.thumb_inputs import FILES, IMAGES
from bench.thumbs import CHILD_TIMEOUT_S, REPO, _make_inputs

LABELS = ("before", "after", "pillow")
_ENV_CODE = (
    "import json, os\n"
    "try:\n"
    "    from filesvc.setting_defaults import DEFAULT_THUMB_WORKERS\n"
    "except ImportError:\n"
    "    from filesvc.settings import DEFAULT_THUMB_WORKERS\n"
    "from filesvc.thumbnails.pool import worker_environment\n"
    "print(json.dumps(worker_environment(dict(os.environ), DEFAULT_THUMB_WORKERS)))\n"
)


def _tree_env(tree: Path) -> dict[str, str]:
    """The environment ``tree``'s pool gives its workers."""
    base = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _ENV_CODE],
        cwd=tree,
        env=base,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        return {**base, "VIPS_CONCURRENCY": "1"}  # before worker_environment existed
    env = json.loads(done.stdout)
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def _child(tree: Path, env: dict[str, str], method: str, path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.thumbs", "--child", method, str(path), "--repeats", "3"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=CHILD_TIMEOUT_S,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: float(report[k]) for k in ("ms", "cpu_ms", "increment_mib")}


def compare(before: Path, formats: list[str], runs: int) -> dict[str, dict[str, dict[str, float]]]:
    """format -> label -> median ms, cpu_ms and increment_mib over ``runs`` children."""
    trees = {
        "before": (before, _tree_env(before), "filesvc"),
        "after": (REPO, _tree_env(REPO), "filesvc"),
        "pillow": (REPO, {**os.environ}, "pillow"),
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="thumbs-ab-") as tmp:
        _make_inputs(Path(tmp), formats)
        for name in formats:
            reports: dict[str, list[dict[str, float]]] = {label: [] for label in LABELS}
            for _ in range(runs):
                for label in LABELS:
                    tree, env, method = trees[label]
                    reports[label].append(_child(tree, env, method, Path(tmp) / FILES[name]))
            out[name] = {
                label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                for label, rs in reports.items()
            }
            print(_row(name, out[name]), flush=True)
    return out


def _row(name: str, figures: dict[str, dict[str, float]]) -> str:
    return f"{name:<5} " + "  ".join(
        f"{label} {f['ms']:6.0f} ms ({f['cpu_ms']:4.0f} CPU) {f['increment_mib']:5.1f} MiB"
        for label, f in figures.items()
    )


def summary(result: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Geometric means of Pillow's time over each filesvc's, wall and CPU, and memory totals."""
    lines = []
    for label in ("before", "after"):
        walls, cpus, mine, theirs = [], [], 0.0, 0.0
        for figures in result.values():
            walls.append(figures["pillow"]["ms"] / figures[label]["ms"])
            cpus.append(figures["pillow"]["cpu_ms"] / figures[label]["cpu_ms"])
            mine += figures[label]["increment_mib"]
            theirs += figures["pillow"]["increment_mib"]
        wall = math.exp(statistics.fmean(math.log(v) for v in walls))
        cpu = math.exp(statistics.fmean(math.log(v) for v in cpus))
        lines.append(
            f"{label}: speed vs Pillow, geometric mean {wall:.2f}x by wall time, {cpu:.2f}x by "
            f"CPU time; memory increment total {mine / max(theirs, 0.1):.2f}x Pillow's"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbs_ab", description=__doc__)
    parser.add_argument("--before", required=True, metavar="COMMIT_OR_DIR")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", default=",".join(IMAGES))
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    unknown = sorted(set(formats) - set(IMAGES))
    if unknown:
        parser.error(f"not an image format: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="thumbs-ab-before-") as scratch:
        before = tree(args.before, Path(scratch)).resolve()
        result = compare(before, formats, max(1, args.runs))
    print("\n".join(summary(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
