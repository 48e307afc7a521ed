"""What the service adds around a thumbnail: ``python -m bench.thumbs_handoff [--formats ...]``.

The bench's ``thumbs`` scenario times the renderer in-process. A job in the service also copies
the content into an in-memory file (memfd), asks a worker process for the pixel cost (probe),
then for the render, over pipes (``filesvc.thumbnails.pool.ProcessRenderer``). Here, per format,
alternating: the renderer in this process, and the same file through a real worker pool of one
worker from a memfd (fill included), wall time, median of ``--repeats`` after a first call; and
the whole job of a 64x64 PNG, which is the hand-off alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.thumb_inputs import FILES, IMAGES
from bench.thumbs import _make_inputs


async def _measure(directory: Path, formats: list[str], repeats: int) -> list[str]:
    import pyvips

    from filesvc.setting_defaults import DEFAULT_THUMB_WORKERS
    from filesvc.thumbnails.limits import RenderLimits
    from filesvc.thumbnails.memfile import MemFile, _pwrite_all
    from filesvc.thumbnails.pool import ProcessRenderer
    from filesvc.thumbnails.render import render_thumbnails

    limits = RenderLimits()
    # In-process renders with the workers' libvips threads; the pool sets its workers' own.
    pyvips.concurrency_set(max(1, (os.cpu_count() or 1) // DEFAULT_THUMB_WORKERS))
    renderer = ProcessRenderer(limits, workers=1, job_timeout=120, pixel_budget=1 << 40)
    tiny = directory / "tiny.png"
    tiny.write_bytes(pyvips.Image.black(64, 64, bands=3).pngsave_buffer())

    async def through_pool(data: bytes) -> float:
        started = time.perf_counter()
        memfile = MemFile()
        try:
            os.ftruncate(memfile.fd, len(data))
            _pwrite_all(memfile.fd, data, 0)
            if (await renderer(memfile.path)).status != "done":
                raise RuntimeError("the worker did not render")
        finally:
            memfile.close()
        return (time.perf_counter() - started) * 1000

    def in_process(path: Path) -> float:
        started = time.perf_counter()
        render_thumbnails(path, limits)
        return (time.perf_counter() - started) * 1000

    rows = [f"{'format':<7} {'in-process ms':>13} {'via worker ms':>13} {'64x64 PNG job ms':>16}"]
    print(rows[0], flush=True)
    try:
        await through_pool(tiny.read_bytes())  # the worker starts
        for name in formats:
            path = directory / FILES[name]
            data = path.read_bytes()
            mine, pooled, small = [], [], []
            for _ in range(1 + repeats):
                mine.append(await asyncio.to_thread(in_process, path))
                pooled.append(await through_pool(data))
                small.append(await through_pool(tiny.read_bytes()))
            rows.append(
                f"{name:<7} {statistics.median(mine[1:]):>13.1f} "
                f"{statistics.median(pooled[1:]):>13.1f} {statistics.median(small[1:]):>16.1f}"
            )
            print(rows[-1], flush=True)
    finally:
        await renderer.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbs_handoff", description=__doc__)
    parser.add_argument("--formats", default=",".join(IMAGES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    unknown = sorted(set(formats) - set(IMAGES))
    if unknown:
        parser.error(f"not an image format: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="thumbs-handoff-") as tmp:
        _make_inputs(Path(tmp), formats)
        asyncio.run(_measure(Path(tmp), formats, max(1, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
