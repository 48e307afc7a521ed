"""Thumbnail of a 24 MP JPEG: filesvc's renderer (pyvips) against a best-effort Pillow version.

Run ``python -m bench.thumbs [--quick] [--runs N] [--json PATH]``; the benchmark harness calls
``run(quick)``. One 6000x4000 JPEG with photo-like content (gradients, blurred texture, grain:
about 6 MB at quality 90) is generated once; then each method makes a thumbnail fitting 600x400 in
a fresh Python process, several times, the methods alternating so they share the machine's noise.

Each child process reports, for the thumbnail work alone, wall time and CPU time (libvips uses a
thread pool, Pillow one thread, so both matter on two cores), and its own peak RSS
(``ru_maxrss``): the total, and the part above the RSS it had after importing its libraries.

* pyvips: ``filesvc.thumbnails.render.render_thumbnails``, exactly what the service runs (content
  sniffing, header check, shrink-on-load ``thumbnail_source``, JPEG encode).
* Pillow: ``Image.draft`` (libjpeg DCT scaling to the smallest scale that still covers the box,
  the same trick libvips uses), ``ImageOps.exif_transpose``, ``Image.thumbnail`` (default
  bicubic, reducing_gap 2.0), JPEG encode at the same quality with optimised Huffman tables.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WIDTH, HEIGHT = 6000, 4000
BOX = (600, 400)
JPEG_QUALITY = 80  # the renderer's; the input is saved at 90 like a phone camera
METHODS = ("pyvips", "pillow")
RUNS_FULL = 7
RUNS_QUICK = 3
REPEATS_IN_PROCESS = 3  # thumbnails per child after its first
CHILD_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[1]


def make_photo(path: Path) -> None:
    """Write a 6000x4000 JPEG that compresses like a photo (flat black would be trivial)."""
    import pyvips

    xyz = pyvips.Image.xyz(WIDTH, HEIGHT)
    x, y = xyz.extract_band(0), xyz.extract_band(1)
    gradient = (x * (255 / WIDTH)).bandjoin(
        [y * (255 / HEIGHT), (x + y) * (255 / (WIDTH + HEIGHT))]
    )
    # Blurred noise reads like foliage or fabric; fine grain like sensor noise.
    texture = pyvips.Image.gaussnoise(WIDTH, HEIGHT, sigma=40, mean=0).gaussblur(2)
    grain = pyvips.Image.gaussnoise(WIDTH, HEIGHT, sigma=6, mean=0)
    photo = (gradient + texture + grain).cast("uchar").copy(interpretation="srgb")
    photo.jpegsave(str(path), Q=90)


# --- children: one thumbnail each, in a fresh process --------------------------------------------


def _rss_mib() -> float:
    """Peak RSS of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thumb_pyvips(path: Path) -> Callable[[], tuple[int, int, int]]:
    from filesvc.thumbnails.limits import RenderLimits
    from filesvc.thumbnails.render import render_thumbnails

    limits = RenderLimits(box_width=BOX[0], box_height=BOX[1])

    def work() -> tuple[int, int, int]:
        outcome = render_thumbnails(path, limits)
        if outcome.status != "done" or len(outcome.thumbnails) != 1:
            raise RuntimeError(f"render_thumbnails: {outcome.status} {outcome.reason}")
        thumb = outcome.thumbnails[0]
        return thumb.width, thumb.height, len(thumb.data)

    return work


def _thumb_pillow(path: Path) -> Callable[[], tuple[int, int, int]]:
    import io

    from PIL import Image, ImageOps

    def work() -> tuple[int, int, int]:
        with Image.open(path) as image:
            # The box applies after orientation: ask the decoder for the rotated box when the
            # EXIF orientation swaps the sides (5-8).
            swapped = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            image.draft("RGB", (BOX[1], BOX[0]) if swapped else BOX)
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail(BOX)
            out = io.BytesIO()
            upright.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
            return upright.width, upright.height, out.tell()

    return work


_CHILDREN: dict[str, Callable[[Path], Callable[[], tuple[int, int, int]]]] = {
    "pyvips": _thumb_pyvips,
    "pillow": _thumb_pillow,
}


def child_main(method: str, path: Path, repeats: int) -> dict[str, object]:
    """Measure thumbnails in this process; the libraries are imported before the clock.

    The first call is reported apart (a fresh worker pays one-time setup in it); ``ms`` and
    ``cpu_ms`` are the medians of the ``repeats`` calls after it, as in a long-lived worker.
    Peak RSS is taken after the first call and after all of them (malloc arenas of the decoder's
    threads grow over the first few calls, then stay).
    """
    work = _CHILDREN[method](path)
    baseline = _rss_mib()
    walls: list[float] = []
    cpus: list[float] = []
    first_peak = 0.0
    for _ in range(1 + repeats):
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        width, height, size = work()
        walls.append((time.perf_counter() - wall0) * 1000)
        cpus.append((_cpu_s() - cpu0) * 1000)
        first_peak = first_peak or _rss_mib()
    return {
        "method": method,
        "first_ms": walls[0],
        "ms": statistics.median(walls[1:] or walls),
        "cpu_ms": statistics.median(cpus[1:] or cpus),
        "peak_rss_mib": _rss_mib(),
        "first_peak_rss_mib": first_peak,
        "baseline_rss_mib": baseline,
        "width": width,
        "height": height,
        "bytes": size,
    }


def _spawn(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench.thumbs", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"child {args[:2]} exited {done.returncode}: {tail}")
    return done.stdout


def measure_once(method: str, path: Path) -> dict[str, object]:
    """One thumbnail by ``method`` in a fresh interpreter; its report."""
    args = ["--child", method, str(path), "--repeats", str(REPEATS_IN_PROCESS)]
    report = json.loads(_spawn(args).strip().splitlines()[-1])
    if not isinstance(report, dict):
        raise RuntimeError(f"child {method} printed {report!r}")
    return report


# --- the comparison ------------------------------------------------------------------------------


def _floats(reports: list[dict[str, object]], key: str) -> list[float]:
    values = []
    for report in reports:
        value = report[key]
        if not isinstance(value, int | float):
            raise RuntimeError(f"{key} is {value!r}")
        values.append(float(value))
    return values


def _summary(reports: list[dict[str, object]]) -> dict[str, object]:
    ms = _floats(reports, "ms")
    peaks = _floats(reports, "peak_rss_mib")
    last = reports[-1]
    return {
        "median_ms": statistics.median(ms),
        "median_first_ms": statistics.median(_floats(reports, "first_ms")),
        "median_cpu_ms": statistics.median(_floats(reports, "cpu_ms")),
        "peak_rss_mib": max(peaks),
        "median_peak_rss_mib": statistics.median(peaks),
        "first_peak_rss_mib": max(_floats(reports, "first_peak_rss_mib")),
        "baseline_rss_mib": statistics.median(_floats(reports, "baseline_rss_mib")),
        "runs_ms": [round(value, 1) for value in ms],
        "thumbnail": f"{last['width']}x{last['height']}, {last['bytes']} bytes",
    }


def run(quick: bool) -> dict[str, object]:
    """Generate the photo, measure both methods, return figures (the harness's entry point).

    The result holds, per method, median wall and CPU ms and peak RSS MiB, and a ``metrics``
    list in the harness's shape (subject, kind, value, unit, note).
    """
    runs = RUNS_QUICK if quick else RUNS_FULL
    return compare(runs)


def compare(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="thumbs-bench-") as tmp:
        photo = Path(tmp) / "photo-24mp.jpg"
        _spawn(["--make", str(photo)])  # pyvips stays out of the caller's process
        reports: dict[str, list[dict[str, object]]] = {method: [] for method in METHODS}
        for _ in range(runs):
            for method in METHODS:
                reports[method].append(measure_once(method, photo))
        size = photo.stat().st_size
    summaries = {method: _summary(reports[method]) for method in METHODS}
    result: dict[str, object] = {
        "image": {"width": WIDTH, "height": HEIGHT, "bytes": size},
        "box": list(BOX),
        "runs": runs,
        **summaries,
    }
    result["metrics"] = _metrics(summaries, runs)
    return result


def _metrics(summaries: dict[str, dict[str, object]], runs: int) -> list[dict[str, object]]:
    note = f"24 MP JPEG -> fit {BOX[0]}x{BOX[1]}, fresh process per run, {runs} runs"
    names = {
        "pyvips": ("filesvc thumbnail (pyvips)", "filesvc"),
        "pillow": ("peer: Pillow draft+thumbnail", "peer"),
    }
    metrics: list[dict[str, object]] = []
    for method, (subject, kind) in names.items():
        summary = summaries[method]
        for suffix, key, unit in (
            ("time", "median_ms", "ms"),
            ("first call in a fresh process", "median_first_ms", "ms"),
            ("CPU time", "median_cpu_ms", "ms"),
            ("peak RSS after one thumbnail", "first_peak_rss_mib", "MiB"),
            ("peak RSS", "peak_rss_mib", "MiB"),
        ):
            metrics.append(
                {
                    "subject": f"{subject}, {suffix}",
                    "kind": kind,
                    "value": summary[key],
                    "unit": unit,
                    "note": note,
                }
            )
    return metrics


def format_table(result: dict[str, object]) -> str:
    rows = [
        f"{'method':<8} {'median ms':>10} {'first ms':>9} {'CPU ms':>7} {'RSS MiB: imports':>17} "
        f"{'1st thumb':>9} {'peak':>6}  thumbnail"
    ]
    for method in METHODS:
        summary = result[method]
        assert isinstance(summary, dict)
        rows.append(
            f"{method:<8} {summary['median_ms']:>10.0f} {summary['median_first_ms']:>9.0f} "
            f"{summary['median_cpu_ms']:>7.0f} {summary['baseline_rss_mib']:>17.1f} "
            f"{summary['first_peak_rss_mib']:>9.1f} {summary['peak_rss_mib']:>6.1f}  "
            f"{summary['thumbnail']}"
        )
    image = result["image"]
    assert isinstance(image, dict)
    rows.append(
        f"input: {image['width']}x{image['height']} JPEG, {image['bytes'] / 1e6:.1f} MB; "
        f"{result['runs']} fresh processes per method, each timing its first call, then "
        f"{REPEATS_IN_PROCESS} more (median ms, CPU ms)"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{RUNS_QUICK} runs, not {RUNS_FULL}")
    parser.add_argument("--runs", type=int, help="runs per method (overrides --quick)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "JPEG"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=REPEATS_IN_PROCESS, help=argparse.SUPPRESS)
    parser.add_argument("--make", type=Path, metavar="JPEG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, path = args.child
        print(json.dumps(child_main(method, Path(path), args.repeats)))
        return 0
    if args.make:
        make_photo(args.make)
        return 0
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    result = compare(args.runs) if args.runs else run(args.quick)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
