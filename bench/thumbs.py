"""Thumbnails of every previewed format: filesvc's renderer against the usual tool for each.

Run ``python -m bench.thumbs [--quick] [--runs N] [--formats jpeg,png...] [--json PATH]``; the
benchmark harness calls ``run(quick)``. The inputs (``bench/thumb_inputs.py``: photos of phone and
camera sizes in JPEG, PNG, WebP, TIFF, GIF, AVIF and HEIC, a 10-page PDF, a 1080p H.264 video and
a 10-page .docx) are generated once; then each method makes the thumbnails of one file in a fresh
Python process, several times, the methods alternating so that they share the machine's noise.

* filesvc: ``filesvc.thumbnails.render.render_thumbnails``, exactly what a worker runs (content
  sniffing, header checks, shrink-on-load, JPEG encode; all pages of the PDF and the .docx up to
  10), in the environment the service gives its workers (``filesvc.thumbnails.pool``), for its
  default of 2 workers: ``VIPS_CONCURRENCY=1`` on 2 cores, and glibc's huge-page tunable.
* Pillow, for the images: ``Image.draft`` (JPEG DCT scaling, the same trick libvips uses),
  ``ImageOps.exif_transpose``, ``Image.thumbnail``, JPEG encode at the same quality with
  optimised Huffman tables; pillow-heif's plugin for HEIC, Pillow's own AVIF plugin.
* The video: the minimal direct PyAV decode (open, first frame, ``to_image``, thumbnail, JPEG):
  what the ``ffmpeg`` command would do, without a CLI in PyAV's wheel.
* The .docx: the plain ``soffice --headless --convert-to pdf`` command (conversion only: filesvc
  also renders the pages).
* The PDF has no Pillow reader and no peer.

Each child reports wall and CPU time of the work alone (median of the calls after its first, as
in a long-lived worker; the first call is reported apart) and its memory increment: its peak RSS
(``ru_maxrss``) minus the RSS it had after importing its libraries, or the peak of the processes
it started (LibreOffice), whichever is larger.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.thumb_inputs import FILES, IMAGES
from bench.thumb_report import format_table, metrics, summary, targets

BOX = (600, 400)
JPEG_QUALITY = 80  # the renderer's
PEERS = {**dict.fromkeys(IMAGES, "pillow"), "pdf": None, "video": "pyav", "docx": "soffice"}
RUNS_FULL = 3
RUNS_QUICK = 1
REPEATS = {"full": 3, "quick": 2}
CHILD_TIMEOUT_S = 600.0
REPO = Path(__file__).resolve().parents[1]

Work = Callable[[], str]


# --- children: one file's thumbnails, timed, in a fresh process -----------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _filesvc(path: Path) -> Work:
    from filesvc.thumbnails.converter import resolve_converter
    from filesvc.thumbnails.limits import RenderLimits
    from filesvc.thumbnails.render import render_thumbnails

    limits = RenderLimits(box_width=BOX[0], box_height=BOX[1])
    converter = resolve_converter("soffice")

    def work() -> str:
        outcome = render_thumbnails(path, limits, converter)
        if outcome.status != "done" or not outcome.thumbnails:
            raise RuntimeError(f"render_thumbnails: {outcome.status} {outcome.reason}")
        first = outcome.thumbnails[0]
        return f"{len(outcome.thumbnails)} x {first.width}x{first.height}"

    return work


def _pillow(path: Path) -> Work:
    import pillow_heif
    from PIL import Image, ImageOps

    pillow_heif.register_heif_opener()

    def work() -> str:
        with Image.open(path) as image:
            # The box applies after orientation: ask the decoder for the rotated box when the
            # EXIF orientation swaps the sides (5-8).
            swapped = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            image.draft("RGB", (BOX[1], BOX[0]) if swapped else BOX)
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail(BOX)
            if upright.mode not in ("RGB", "L"):
                upright = upright.convert("RGB")
            out = io.BytesIO()
            upright.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
            return f"1 x {upright.width}x{upright.height}"

    return work


def _pyav(path: Path) -> Work:
    import av

    def work() -> str:
        with av.open(str(path)) as movie:
            frame = next(movie.decode(video=0))
            image = frame.to_image()  # type: ignore[no-untyped-call]
        image.thumbnail(BOX)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        return f"1 x {image.width}x{image.height}"

    return work


def _soffice(path: Path) -> Work:
    soffice = shutil.which("soffice")
    if soffice is None:
        raise RuntimeError("LibreOffice (soffice) is not installed")
    work_dir = Path(tempfile.mkdtemp(prefix="thumbs-bench-soffice-"))
    profile = (work_dir / "profile").as_uri()

    def convert() -> str:
        out = work_dir / "out"
        subprocess.run(
            [
                soffice,
                "--headless",
                f"-env:UserInstallation={profile}",
                "--convert-to",
                "pdf",
                "--outdir",
                str(out),
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        return "pdf"

    convert()  # the first start creates the profile: not timed, as filesvc's template is not
    return convert


_METHODS: dict[str, Callable[[Path], Work]] = {
    "filesvc": _filesvc,
    "pillow": _pillow,
    "pyav": _pyav,
    "soffice": _soffice,
}


def child_main(method: str, path: Path, repeats: int) -> dict[str, object]:
    """Measure one method on one file in this process; the libraries are imported first."""
    work = _METHODS[method](path)
    baseline = _rss_mib()
    kids_before = _children_rss_mib()
    walls: list[float] = []
    cpus: list[float] = []
    result = ""
    for _ in range(1 + repeats):
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        result = work()
        walls.append((time.perf_counter() - wall0) * 1000)
        cpus.append((_cpu_s() - cpu0) * 1000)
    kids = _children_rss_mib()
    increment = max(_rss_mib() - baseline, kids if kids > kids_before else 0.0)
    return {
        "method": method,
        "first_ms": walls[0],
        "ms": statistics.median(walls[1:] or walls),
        "cpu_ms": statistics.median(cpus[1:] or cpus),
        "baseline_rss_mib": baseline,
        "increment_mib": increment,
        "result": result,
    }


def measure_once(method: str, path: Path, repeats: int) -> dict[str, object]:
    env = {**os.environ}
    if method == "filesvc":
        from filesvc.setting_defaults import DEFAULT_THUMB_WORKERS
        from filesvc.thumbnails.pool import worker_environment

        env = worker_environment(env, DEFAULT_THUMB_WORKERS)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.thumbs",
            "--child",
            method,
            str(path),
            "--repeats",
            str(repeats),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"child {method} {path.name} exited {done.returncode}: {tail}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not isinstance(report, dict):
        raise RuntimeError(f"child {method} printed {report!r}")
    return report


# --- the comparison ------------------------------------------------------------------------------


def _median(reports: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(str(r[key])) for r in reports)


def compare(runs: int, repeats: int, formats: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="thumbs-bench-") as tmp:
        directory = Path(tmp)
        _make_inputs(directory, formats)
        per_format: dict[str, dict[str, object]] = {}
        for name in formats:
            path = directory / FILES[name]
            peer = PEERS[name]
            methods = ["filesvc"] + ([peer] if peer else [])
            reports: dict[str, list[dict[str, object]]] = {m: [] for m in methods}
            for _ in range(runs):
                for method in methods:
                    reports[method].append(measure_once(method, path, repeats))
            entry: dict[str, object] = {"bytes": path.stat().st_size, "peer": peer}
            for method in methods:
                entry[method] = {
                    "ms": _median(reports[method], "ms"),
                    "first_ms": _median(reports[method], "first_ms"),
                    "cpu_ms": _median(reports[method], "cpu_ms"),
                    "increment_mib": _median(reports[method], "increment_mib"),
                    "result": reports[method][-1]["result"],
                }
            per_format[name] = entry
    result: dict[str, object] = {"runs": runs, "repeats": repeats, "formats": per_format}
    totals = summary(per_format)
    result["summary"] = totals
    result["targets"] = targets(totals)
    result["metrics"] = metrics(per_format, totals, BOX, runs)
    return result


def _make_inputs(directory: Path, formats: list[str]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.thumbs",
            "--make",
            str(directory),
            "--formats",
            ",".join(formats),
        ],
        cwd=REPO,
        check=True,
        timeout=CHILD_TIMEOUT_S,
    )


def run(quick: bool) -> dict[str, object]:
    """The harness's entry point: every format, quick or full."""
    return compare(
        RUNS_QUICK if quick else RUNS_FULL, REPEATS["quick" if quick else "full"], list(PEERS)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{RUNS_QUICK} run, not {RUNS_FULL}")
    parser.add_argument("--runs", type=int, help="fresh processes per method and format")
    parser.add_argument(
        "--formats", help=f"comma-separated subset of {','.join(PEERS)} (default: all)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=REPEATS["full"], help=argparse.SUPPRESS)
    parser.add_argument("--make", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, path = args.child
        print(json.dumps(child_main(method, Path(path), args.repeats)))
        return 0
    if args.make:
        from bench.thumb_inputs import make_all

        make_all(args.make, args.formats.split(",") if args.formats else None)
        return 0
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    formats = args.formats.split(",") if args.formats else list(PEERS)
    unknown = sorted(set(formats) - set(PEERS))
    if unknown:
        parser.error(f"unknown formats: {', '.join(unknown)}")
    runs = args.runs or (RUNS_QUICK if args.quick else RUNS_FULL)
    result = compare(runs, REPEATS["quick" if args.quick else "full"], formats)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
