"""A long-lived worker gives each job's pixels back: its memory does not grow render after render.

Run in a fresh interpreter (as a worker is), so that what this test process already holds does not
hide or add to the figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyvips

from tests.thumbnail_media import solid, write

_CHILD = """
import json, sys
from pathlib import Path
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import render_thumbnails

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

limits, path = RenderLimits(), Path(sys.argv[1])
render_thumbnails(path, limits)  # libraries' one-time set-up
before = rss_mib()
outcomes = [render_thumbnails(path, limits).status for _ in range(4)]
print(json.dumps({"grown_mib": rss_mib() - before, "outcomes": outcomes}))
"""


def test_rendering_the_same_image_again_and_again_does_not_grow_the_worker(
    tmp_path: Path,
) -> None:
    # A 3000x2000 PNG: 18 MB of RGB rows pass through libvips' threads per render.  Before the
    # allocator was set up for it, the process kept about 40 MiB more after four renders.
    grain = pyvips.Image.gaussnoise(3000, 2000, sigma=30)
    image = (solid(3000, 2000) + grain).cast("uchar")
    path = write(tmp_path, "big.png", image.copy(interpretation="srgb").pngsave_buffer())
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"VIPS_CONCURRENCY": "2", "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[1],
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outcomes"] == ["done"] * 4
    assert report["grown_mib"] < 8, report
