"""HEIC through pillow-heif: decoded, oriented, limited like any raster."""

from __future__ import annotations

import io
import multiprocessing
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pillow_heif
import pytest
import pyvips
from PIL import Image

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails
from tests.thumbnail_media import (
    LIMITS,
    SAVERS,
    decode,
    failed,
    halves,
    heic,
    mean_rgb,
    one,
    skipped,
    solid,
    write,
)


def test_the_heic_samples_are_hevc_which_the_libvips_wheel_cannot_decode() -> None:
    # Why HEIC has its own decoder: if this starts to fail, libvips decodes HEVC and the
    # pillow-heif path may be reconsidered.
    assert "x265" in pillow_heif.libheif_info()["encoders"]
    data = heic(solid(64, 64))
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_buffer(data, "").avg()


def test_heic_gives_a_jpeg_fitting_the_box(tmp_path: Path) -> None:
    path = write(tmp_path, "IMG_0001.txt", heic(solid(1200, 800)))
    assert probe_pixels(path, LIMITS) == 1200 * 800
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (600, 400, "image/jpeg")
    red, green, blue = mean_rgb(decode(thumb))
    assert abs(red - 200) < 12 and abs(green - 120) < 12 and abs(blue - 40) < 12


def test_small_heic_is_not_enlarged(tmp_path: Path) -> None:
    thumb = one(render_thumbnails(write(tmp_path, "s.heic", heic(solid(120, 80))), LIMITS))
    assert (thumb.width, thumb.height) == (120, 80)


def test_rotated_heic_gives_an_upright_portrait(tmp_path: Path) -> None:
    # pillow-heif turns EXIF orientation 6 into an irot box (and keeps the EXIF tag, as phones
    # do): the stored pixels stay landscape.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = heic(halves(1200, 800), exif=exif.tobytes())
    assert b"irot" in data
    path = write(tmp_path, "IMG_0002.HEIC", data)
    assert probe_pixels(path, LIMITS) == 1200 * 800
    thumb = one(render_thumbnails(path, LIMITS))
    # Rotated once, not twice: the stored left (white) half becomes the top half.
    assert (thumb.width, thumb.height) == (267, 400)
    image = decode(thumb)
    assert image.crop(0, 0, 267, 150).avg() > 240
    assert image.crop(0, 250, 267, 150).avg() < 15


def test_heic_with_transparency_gives_png(tmp_path: Path) -> None:
    alpha = pyvips.Image.black(400, 300).draw_rect(255, 0, 0, 200, 300, fill=True).cast("uchar")
    path = write(tmp_path, "sticker.heic", heic(solid(400, 300).bandjoin(alpha)))
    thumb = one(render_thumbnails(path, LIMITS))
    assert thumb.mime == "image/png"
    image = decode(thumb)
    assert image.bands == 4
    assert image.extract_band(3).crop(0, 0, 190, 300).min() > 245
    assert image.extract_band(3).crop(210, 0, 190, 300).max() < 10


def test_heic_icc_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    tagged = solid(300, 200).icc_transform("p3", input_profile="srgb")
    assert mean_rgb(tagged)[2] > 50  # P3 values differ from the sRGB ones
    data = heic(tagged, icc_profile=tagged.get("icc-profile-data"))
    thumb = one(render_thumbnails(write(tmp_path, "p3.heic", data), LIMITS))
    red, green, blue = mean_rgb(decode(thumb))
    assert abs(red - 200) < 10 and abs(green - 120) < 10 and abs(blue - 40) < 10


def test_10_bit_grey_heic_becomes_8_bit_jpeg(tmp_path: Path) -> None:
    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.new("I;16", (300, 200), 0x8000).save(out, format="HEIF", bit_depth=10)
    thumb = one(render_thumbnails(write(tmp_path, "grey.heic", out.getvalue()), LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (300, 200, "image/jpeg")
    assert abs(decode(thumb).avg() - 128) < 4


def test_heic_gives_its_primary_image_and_counts_its_images(tmp_path: Path) -> None:
    data = heic(solid(200, 100, (255, 0, 0)), solid(200, 100, (0, 0, 255)), solid(50, 50))
    path = write(tmp_path, "burst.heic", data)
    thumb = one(render_thumbnails(path, RenderLimits(max_frames=3)))
    red, green, blue = mean_rgb(decode(thumb))
    assert red > 200 and green < 50 and blue < 50
    reason = skipped(render_thumbnails(path, RenderLimits(max_frames=2)))
    assert "3 pages or frames" in reason
    assert probe_pixels(path, RenderLimits(max_frames=2)) == 0


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_heic_is_an_error(tmp_path: Path, keep: float) -> None:
    noisy = pyvips.Image.gaussnoise(600, 400).cast("uchar").bandjoin([128, 128])
    data = heic(noisy.copy(interpretation="srgb"))
    path = write(tmp_path, "cut.heic", data[: int(len(data) * keep)])
    failed(render_thumbnails(path, LIMITS))


def test_heic_declaring_too_many_pixels_is_refused_undecoded(tmp_path: Path) -> None:
    # Rewrite the ispe box of a real 64x64 HEIC to declare 20000x20000 (400 MP): refused from
    # the header. Had it been decoded, the size mismatch would have made it an error instead.
    data = heic(solid(64, 64))
    at = data.index(b"ispe") + 8
    assert struct.unpack(">II", data[at : at + 8]) == (64, 64)
    path = write(
        tmp_path, "huge.heic", data[:at] + struct.pack(">II", 20_000, 20_000) + data[at + 8 :]
    )
    started = time.perf_counter()
    reason = skipped(render_thumbnails(path, LIMITS))
    assert time.perf_counter() - started < 0.5
    assert "20000x20000" in reason
    assert probe_pixels(path, LIMITS) == 0
    # The boundary, on a genuine file.
    real = write(tmp_path, "real.heic", data)
    one(render_thumbnails(real, RenderLimits(max_pixels=64 * 64)))
    skipped(render_thumbnails(real, RenderLimits(max_pixels=64 * 64 - 1)))
    assert probe_pixels(real, RenderLimits(max_pixels=64 * 64 - 1)) == 0


def test_heic_runs_in_a_spawned_process_pool(tmp_path: Path) -> None:
    path = write(tmp_path, "a.heic", heic(solid(1200, 800)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        outcome = pool.submit(render_thumbnails, path, LIMITS).result()
    assert outcome == render_thumbnails(path, LIMITS)
    one(outcome)


def test_av1_data_labelled_as_heic_is_an_error(tmp_path: Path) -> None:
    # A real AVIF whose brands, item type and codec box are relabelled as HEVC: the container
    # says HEIC, so it goes to the HEVC decoder, which cannot decode AV1 data.
    avif = SAVERS["avif"](solid(64, 64))
    heic = avif.replace(b"avif", b"heic").replace(b"av01", b"hvc1").replace(b"av1C", b"hvcC")
    path = write(tmp_path, "IMG_0001.jpg", heic)
    failed(render_thumbnails(path, LIMITS))
