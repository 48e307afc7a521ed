"""Rasters through libvips: every format, sizing, orientation, transparency, colour, truncation.

Inputs are saved under names that lie about the content: the renderer decides from the content
alone."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips
from PIL import AvifImagePlugin, Image

from filesvc.thumbnails import avif
from filesvc.thumbnails.render import render_thumbnails
from tests.thumbnail_media import (
    LIMITS,
    SAVERS,
    decode,
    failed,
    halves,
    mean_rgb,
    one,
    solid,
    write,
)


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_every_raster_format_gives_one_jpeg_fitting_the_box(tmp_path: Path, kind: str) -> None:
    # Named .txt: the name must not matter.
    path = write(tmp_path, "upload.txt", SAVERS[kind](solid(1200, 800)))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (600, 400, "image/jpeg")
    red, green, blue = mean_rgb(decode(thumb))
    assert abs(red - 200) < 12 and abs(green - 120) < 12 and abs(blue - 40) < 12


@pytest.mark.parametrize(
    ("size", "expected"),
    [((6000, 4000), (600, 400)), ((4000, 6000), (267, 400)), ((3000, 500), (600, 100))],
)
def test_aspect_ratio_is_kept(
    tmp_path: Path, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    path = write(tmp_path, "photo.jpg", solid(*size).jpegsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == expected


def test_small_images_are_not_enlarged(tmp_path: Path) -> None:
    path = write(tmp_path, "small.png", solid(100, 50).pngsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (100, 50)


def test_exif_orientation_6_gives_an_upright_portrait(tmp_path: Path) -> None:
    stored = halves(1200, 800).copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", 6)
    path = write(tmp_path, "phone.jpg", stored.jpegsave_buffer())
    assert pyvips.Image.new_from_file(str(path)).get("orientation") == 6
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (267, 400)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored left (white) half
    # becomes the top half.
    image = decode(thumb)
    assert image.crop(0, 0, 267, 150).avg() > 240
    assert image.crop(0, 250, 267, 150).avg() < 15


def test_transparency_gives_png_with_alpha(tmp_path: Path) -> None:
    alpha = pyvips.Image.black(400, 300).draw_rect(255, 0, 0, 200, 300, fill=True).cast("uchar")
    path = write(tmp_path, "logo.jpg", solid(400, 300).bandjoin(alpha).pngsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert thumb.mime == "image/png"
    image = decode(thumb)
    assert image.bands == 4
    assert image.extract_band(3).crop(0, 0, 200, 300).min() == 255
    assert image.extract_band(3).crop(200, 0, 200, 300).max() == 0


def test_an_alpha_band_that_is_fully_opaque_gives_jpeg(tmp_path: Path) -> None:
    opaque = solid(400, 300).bandjoin(255)
    path = write(tmp_path, "screenshot.png", opaque.pngsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert thumb.mime == "image/jpeg"


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [solid(200, 100, rgb) for rgb in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 100)
    path = write(tmp_path, "anim.gif", strip.gifsave_buffer())
    assert pyvips.Image.new_from_file(str(path)).get("n-pages") == 3
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (200, 100)
    red, green, blue = mean_rgb(decode(thumb))
    assert red > 200 and green < 50 and blue < 50


def test_a_large_gif_is_reduced_strip_by_strip_into_the_box(tmp_path: Path) -> None:
    path = write(tmp_path, "banner.gif", halves(1700, 1010).gifsave_buffer())
    image = decode(one(render_thumbnails(path, LIMITS)))
    assert (image.width, image.height) == (600, 356)
    assert image.crop(0, 0, 280, 356).min() > 235  # white on the left, to the last row
    assert image.crop(320, 0, 280, 356).max() < 20  # black on the right


def test_gif_transparency_gives_png_with_alpha(tmp_path: Path) -> None:
    alpha = pyvips.Image.black(1200, 800).draw_rect(255, 600, 0, 600, 800, fill=True)
    image = solid(1200, 800).bandjoin(alpha.cast("uchar"))
    path = write(tmp_path, "sticker.gif", image.gifsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.mime, thumb.width, thumb.height) == ("image/png", 600, 400)
    shown = decode(thumb)
    assert shown.extract_band(3).crop(0, 0, 290, 400).max() == 0
    assert shown.extract_band(3).crop(310, 0, 290, 400).min() == 255


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(
            lambda: solid(300, 200).cast("ushort").copy(interpretation="rgb16"), id="16bit"
        ),
        pytest.param(lambda: solid(300, 200).colourspace("cmyk"), id="cmyk"),
        pytest.param(lambda: solid(300, 200).colourspace("b-w"), id="grey"),
    ],
)
def test_unusual_pixel_formats_become_8_bit_jpeg(
    tmp_path: Path, image: Callable[[], pyvips.Image]
) -> None:
    path = write(tmp_path, "odd.tif", image().tiffsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (300, 200, "image/jpeg")


@pytest.mark.parametrize("profile", ["p3", "cmyk"])
def test_embedded_icc_profile_is_converted_to_srgb(tmp_path: Path, profile: str) -> None:
    # The thumbnail carries no metadata, so its pixels must already be sRGB.
    tagged = solid(300, 200).icc_transform(profile, input_profile="srgb")
    assert mean_rgb(tagged)[2] > 50  # P3 values differ from the sRGB ones; CMYK is 4 bands
    path = write(tmp_path, "wide-gamut.jpg", tagged.jpegsave_buffer())
    thumb = one(render_thumbnails(path, LIMITS))
    assert thumb.mime == "image/jpeg"
    red, green, blue = mean_rgb(decode(thumb))
    assert abs(red - 200) < 8 and abs(green - 120) < 8 and abs(blue - 40) < 8


@pytest.mark.parametrize("kind", ["jpeg", "png", "gif", "webp", "avif"])
def test_truncated_images_are_errors(tmp_path: Path, kind: str) -> None:
    # Noise, so that the encoded data is big enough to cut in half.
    noisy = pyvips.Image.gaussnoise(600, 400).cast("uchar").bandjoin([128, 128])
    data = SAVERS[kind](noisy.copy(interpretation="srgb"))
    path = write(tmp_path, "cut.bin", data[: len(data) // 2])
    failed(render_thumbnails(path, LIMITS))


@pytest.mark.parametrize("kind", ["jpeg", "avif"])
def test_exif_orientation_6_is_honoured_in_every_decoder(tmp_path: Path, kind: str) -> None:
    # Left half white: turned a quarter clockwise, the top half is white.
    image = halves(400, 200).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    data = SAVERS[kind](image)
    thumb = one(render_thumbnails(write(tmp_path, "o", data), LIMITS))
    upright = decode(thumb)
    assert (upright.width, upright.height) == (200, 400)
    assert upright.crop(0, 0, 200, 200).avg() > 200 and upright.crop(0, 200, 200, 200).avg() < 55


def test_avif_transparency_gives_png_with_alpha(tmp_path: Path) -> None:
    alpha = pyvips.Image.black(1200, 800).draw_rect(255, 600, 0, 600, 800, fill=True)
    image = solid(1200, 800).bandjoin(alpha.cast("uchar"))
    path = write(tmp_path, "sticker.avif", SAVERS["avif"](image))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.mime, thumb.width, thumb.height) == ("image/png", 600, 400)
    shown = decode(thumb)
    assert shown.extract_band(3).crop(0, 0, 290, 400).max() == 0
    assert shown.extract_band(3).crop(310, 0, 290, 400).min() == 255


@pytest.mark.parametrize("bands", [3, 4])
def test_avif_pixels_come_from_the_decoder_without_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bands: int
) -> None:
    # The renderer takes libavif's buffer from Pillow's plugin instead of load() + tobytes():
    # the same pixels, and load() is never called. Fails when a Pillow upgrade removes that
    # decoder (then the renderer still works, through load(), but a quarter slower).
    image = halves(300, 200).bandjoin([255] * (bands - 2)) if bands == 4 else halves(300, 200)
    path = write(tmp_path, "a.avif", SAVERS["avif"](image.copy(interpretation="srgb")))
    with Image.open(path) as opened:
        opened.load()
        expected = (opened.mode, opened.tobytes())
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "load", _no_load)
    with Image.open(path) as opened:
        assert avif._decoded(opened) == expected


def test_avif_decoding_falls_back_to_pillows_public_interface() -> None:
    # An image without the plugin's decoder (what a Pillow without it gives): load + tobytes,
    # converted to a mode libvips takes.
    palette = Image.new("P", (4, 2), 1)
    palette.putpalette([0, 0, 0, 200, 120, 40])
    assert avif._decoded(palette) == ("RGB", bytes([200, 120, 40]) * 8)


def _no_load(self: object) -> None:
    raise AssertionError("load() called")


@pytest.mark.parametrize(("bands", "mode"), [(1, "L"), (3, "RGB")])
def test_jpeg_thumbnails_carry_no_metadata(tmp_path: Path, bands: int, mode: str) -> None:
    # A phone photo's EXIF (location, camera serial) and ICC profile never reach a thumbnail.
    stored = solid(1200, 800)
    if bands == 3:
        stored = stored.icc_transform("srgb", input_profile="srgb")  # tagged with a profile
    else:
        stored = stored.colourspace("b-w")
    stored = stored.copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", 1)
    path = write(tmp_path, "photo.jpg", stored.jpegsave_buffer(keep="all"))
    source = pyvips.Image.new_from_file(str(path))
    assert source.get_typeof("exif-data") != 0
    assert (source.get_typeof("icc-profile-data") != 0) == (bands == 3)
    thumb = one(render_thumbnails(path, LIMITS))
    with Image.open(io.BytesIO(thumb.data)) as shown:
        assert (shown.format, shown.mode, shown.size) == ("JPEG", mode, (600, 400))
        assert "exif" not in shown.info and "icc_profile" not in shown.info
        assert not shown.info.get("progressive")
