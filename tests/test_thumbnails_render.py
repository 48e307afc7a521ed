"""The renderer as a whole: what is not previewable, what cannot be read, the limits, processes."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
import pyvips

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails
from tests.thumbnail_media import (
    A4,
    LIMITS,
    failed,
    make_pdf,
    one,
    png_bomb,
    skipped,
    solid,
    write,
)

# --- not images, broken images -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"This is a text file, not a photo.\n" * 20, id="text"),
        pytest.param(bytes(range(256)) * 40, id="binary"),
        # libvips would load this as its "matrix" text format: still not an image for us.
        pytest.param(b"2 2\n1 2\n3 4\n", id="vips-matrix"),
        pytest.param(gzip.compress(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), id="svgz"),
    ],
)
def test_files_that_are_not_images_are_done_without_thumbnails(
    tmp_path: Path, content: bytes
) -> None:
    path = write(tmp_path, "holiday.jpg", content)
    skipped(render_thumbnails(path, LIMITS))
    assert probe_pixels(path, LIMITS) == 0


def test_random_bytes_never_raise(tmp_path: Path) -> None:
    for seed in range(20):
        path = write(tmp_path, f"random{seed}.png", os.urandom(64 + seed * 97))
        assert render_thumbnails(path, LIMITS).thumbnails == ()


def test_missing_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    assert failed(render_thumbnails(tmp_path / "gone", LIMITS)) == "file could not be read"
    assert probe_pixels(tmp_path / "gone", LIMITS) == 0


def test_special_files_are_errors_not_hangs(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert failed(render_thumbnails(fifo, LIMITS)) == "not a regular file"
    assert failed(render_thumbnails(tmp_path, LIMITS)) == "not a regular file"


# --- limits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png_bomb(50_000, 50_000))
    return path


def test_png_bomb_is_refused_from_its_header(bomb: Path) -> None:
    assert bomb.stat().st_size < 1 << 20  # 2.5 gigapixels in well under a megabyte
    started = time.perf_counter()
    reason = skipped(render_thumbnails(bomb, LIMITS))
    elapsed = time.perf_counter() - started
    assert "50000x50000" in reason
    # A decode costs 0.8-2.9 s of CPU (docs/measured.md); reading the header costs milliseconds.
    assert elapsed < 0.5
    assert probe_pixels(bomb, LIMITS) == 0


def test_pixel_limit_boundary(tmp_path: Path) -> None:
    path = write(tmp_path, "img", solid(2000, 1000).pngsave_buffer(compression=1))
    assert probe_pixels(path, RenderLimits(max_pixels=2_000_000)) == 2_000_000
    one(render_thumbnails(path, RenderLimits(max_pixels=2_000_000)))
    skipped(render_thumbnails(path, RenderLimits(max_pixels=1_999_999)))
    assert probe_pixels(path, RenderLimits(max_pixels=1_999_999)) == 0


def test_frame_limit(tmp_path: Path) -> None:
    # Distinct frames: the GIF encoder merges identical ones.
    frames = [solid(20, 10, (level, level, level)) for level in (0, 100, 200)]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 10)
    path = write(tmp_path, "anim", strip.gifsave_buffer())
    one(render_thumbnails(path, RenderLimits(max_frames=3)))
    assert "3 pages or frames" in skipped(render_thumbnails(path, RenderLimits(max_frames=2)))


def test_input_size_limit(tmp_path: Path) -> None:
    data = solid(100, 100).jpegsave_buffer()
    path = write(tmp_path, "img", data)
    one(render_thumbnails(path, RenderLimits(max_input_bytes=len(data))))
    skipped(render_thumbnails(path, RenderLimits(max_input_bytes=len(data) - 1)))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="box_width"):
        RenderLimits(box_width=0)


def test_probe_pixels_reads_the_declared_size(tmp_path: Path) -> None:
    path = write(tmp_path, "img", solid(6000, 4000).jpegsave_buffer())
    assert probe_pixels(path, LIMITS) == 24_000_000


# --- workers -----------------------------------------------------------------------------------


def test_runs_in_a_spawned_process_pool(tmp_path: Path) -> None:
    jpeg = write(tmp_path, "a", solid(1200, 800).jpegsave_buffer())
    pdf = write(tmp_path, "b", make_pdf([A4, A4]))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        outcomes = list(pool.map(render_thumbnails, [jpeg, pdf], [LIMITS, LIMITS]))
        pixels = pool.submit(probe_pixels, jpeg, LIMITS).result()
    assert [len(o.thumbnails) for o in outcomes] == [1, 2]
    assert outcomes == [render_thumbnails(jpeg, LIMITS), render_thumbnails(pdf, LIMITS)]
    assert pixels == 1200 * 800


def test_threads_give_the_same_results(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"p{i}", make_pdf([A4] * 3)) for i in range(4)]
    paths += [write(tmp_path, f"j{i}", solid(900, 900).jpegsave_buffer()) for i in range(4)]
    expected = [render_thumbnails(path, LIMITS) for path in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda p: render_thumbnails(p, LIMITS), paths)) == expected
