"""The thumbnail renderer: formats, sizing, orientation, output honesty, hardening, SVG policy.

Every input is generated here (pyvips for rasters, pillow-heif's HEVC encoder for HEIC,
hand-written bytes for PDFs and SVGs), under names that lie about the content, since the renderer
must decide from the content alone.
"""

from __future__ import annotations

import base64
import gzip
import io
import multiprocessing
import os
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pillow_heif
import pytest
import pyvips
from PIL import Image

from filesvc.thumbnails.render import (
    RenderedThumbnail,
    RenderLimits,
    RenderOutcome,
    probe_pixels,
    render_thumbnails,
)

LIMITS = RenderLimits()
MIME_OF_LOADER = {"jpegload_buffer": "image/jpeg", "pngload_buffer": "image/png"}


# --- input makers ------------------------------------------------------------------------------


def solid(width: int, height: int, rgb: tuple[int, int, int] = (200, 120, 40)) -> pyvips.Image:
    """A uchar sRGB image of one colour (pyvips images are lazy: this costs nothing yet)."""
    image = (pyvips.Image.black(width, height, bands=3) + list(rgb)).cast("uchar")
    return image.copy(interpretation="srgb")


def halves(width: int, height: int) -> pyvips.Image:
    """Left half white, right half black: shows where a rotation moved things."""
    left = solid(width // 2, height, (255, 255, 255))
    right = solid(width - width // 2, height, (0, 0, 0))
    return left.join(right, "horizontal")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit greyscale PNG of width x height zeros: tiny on disk, huge decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_piece = 1000
    piece = row * rows_per_piece
    idat = b"".join(compressor.compress(piece) for _ in range(height // rows_per_piece))
    idat += compressor.compress(row * (height % rows_per_piece)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_pdf(
    pages: list[tuple[float, float]], *, rotate: int = 0, encrypted: bool = False
) -> bytes:
    """A minimal valid PDF, one object per line and a correct xref; each page gets a blue square.

    ``encrypted`` adds a standard security handler whose /O and /U match no password, so a
    reader cannot open it without one.
    """
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    content_ref = 3 + len(pages)
    for width, height in pages:
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] /Rotate {rotate} "
            f"/Contents {content_ref} 0 R >>".encode()
        )
    stream = b"0 0 1 rg 10 10 50 50 re f"
    objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    trailer_extra = b""
    if encrypted:
        o_entry, u_entry = os.urandom(32).hex().encode(), os.urandom(32).hex().encode()
        objects.append(
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (o_entry, u_entry)
        )
        file_id = os.urandom(16).hex().encode()
        trailer_extra = b" /Encrypt %d 0 R /ID [<%s> <%s>]" % (len(objects), file_id, file_id)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer_extra,
        xref_at,
    )
    return bytes(out)


A4 = (595.0, 842.0)
LETTER_LANDSCAPE = (792.0, 612.0)


# --- checks ------------------------------------------------------------------------------------


def decode(thumb: RenderedThumbnail) -> pyvips.Image:
    """Re-decode a thumbnail and check that its fields describe its bytes."""
    image = pyvips.Image.new_from_buffer(thumb.data, "")
    assert MIME_OF_LOADER[image.get("vips-loader")] == thumb.mime
    assert (image.width, image.height) == (thumb.width, thumb.height)
    assert image.format == "uchar"
    assert 0 < thumb.width <= LIMITS.box_width
    assert 0 < thumb.height <= LIMITS.box_height
    return image


def one(outcome: RenderOutcome) -> RenderedThumbnail:
    assert outcome.status == "done", outcome.reason
    assert outcome.reason is None
    assert len(outcome.thumbnails) == 1
    decode(outcome.thumbnails[0])
    return outcome.thumbnails[0]


def skipped(outcome: RenderOutcome) -> str:
    """The outcome is `done` without thumbnails; returns its reason."""
    assert outcome.status == "done"
    assert outcome.thumbnails == ()
    assert outcome.reason
    return outcome.reason


def failed(outcome: RenderOutcome) -> str:
    assert outcome.status == "error"
    assert outcome.thumbnails == ()
    assert outcome.reason
    return outcome.reason


def mean_rgb(image: pyvips.Image) -> tuple[float, ...]:
    return tuple(float(image.extract_band(band).avg()) for band in range(3))


# --- rasters -----------------------------------------------------------------------------------

SAVERS: dict[str, Callable[[pyvips.Image], bytes]] = {
    "jpeg": lambda image: image.jpegsave_buffer(),
    "png": lambda image: image.pngsave_buffer(compression=1),
    "gif": lambda image: image.gifsave_buffer(),
    "webp": lambda image: image.webpsave_buffer(),
    "tiff": lambda image: image.tiffsave_buffer(),
    "avif": lambda image: image.heifsave_buffer(compression="av1", effort=0),
}


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


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp", "avif"])
def test_truncated_images_are_errors(tmp_path: Path, kind: str) -> None:
    # Noise, so that the encoded data is big enough to cut in half.
    noisy = pyvips.Image.gaussnoise(600, 400).cast("uchar").bandjoin([128, 128])
    data = SAVERS[kind](noisy.copy(interpretation="srgb"))
    path = write(tmp_path, "cut.bin", data[: len(data) // 2])
    failed(render_thumbnails(path, LIMITS))


def test_missing_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    assert failed(render_thumbnails(tmp_path / "gone", LIMITS)) == "file could not be read"
    assert probe_pixels(tmp_path / "gone", LIMITS) == 0


def test_special_files_are_errors_not_hangs(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert failed(render_thumbnails(fifo, LIMITS)) == "not a regular file"
    assert failed(render_thumbnails(tmp_path, LIMITS)) == "not a regular file"


def test_av1_data_labelled_as_heic_is_an_error(tmp_path: Path) -> None:
    # A real AVIF whose brands, item type and codec box are relabelled as HEVC: the container
    # says HEIC, so it goes to the HEVC decoder, which cannot decode AV1 data.
    avif = SAVERS["avif"](solid(64, 64))
    heic = avif.replace(b"avif", b"heic").replace(b"av01", b"hvc1").replace(b"av1C", b"hvcC")
    path = write(tmp_path, "IMG_0001.jpg", heic)
    failed(render_thumbnails(path, LIMITS))


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


# --- PDF ---------------------------------------------------------------------------------------


def test_pdf_gives_one_thumbnail_per_page_scaled_from_the_page_size(tmp_path: Path) -> None:
    path = write(tmp_path, "report.jpg", make_pdf([A4, LETTER_LANDSCAPE]))
    outcome = render_thumbnails(path, LIMITS)
    assert outcome.status == "done" and outcome.reason is None
    sizes = [(t.width, t.height, t.mime) for t in outcome.thumbnails]
    # A4 595x842 pt at 400/842 px per pt; Letter landscape 792x612 at 400/612.
    assert sizes == [(283, 400, "image/jpeg"), (518, 400, "image/jpeg")]
    page = decode(outcome.thumbnails[0])
    # White paper with a blue square in the bottom-left corner.
    assert page.crop(200, 10, 50, 50).min() > 240
    red, green, blue = mean_rgb(page.crop(8, 375, 15, 15))
    assert blue > 200 and red < 60 and green < 60
    # probe: the largest rendered page, not the page's size at any resolution.
    assert probe_pixels(path, LIMITS) == 518 * 400


def test_pdf_page_rotation_is_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, "scan.pdf", make_pdf([A4], rotate=90))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (567, 400)


def test_small_pdf_pages_are_not_enlarged(tmp_path: Path) -> None:
    path = write(tmp_path, "card.pdf", make_pdf([(252.0, 144.0)]))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (252, 144)


def test_huge_pdf_page_is_rendered_at_thumbnail_size(tmp_path: Path) -> None:
    # 200 x 200 inches, the largest page the PDF spec allows without UserUnit.
    path = write(tmp_path, "poster.pdf", make_pdf([(14400.0, 14400.0)]))
    assert probe_pixels(path, LIMITS) == 400 * 400
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (400, 400)


def test_pdf_stops_at_ten_pages(tmp_path: Path) -> None:
    path = write(tmp_path, "book.pdf", make_pdf([A4] * 12))
    outcome = render_thumbnails(path, LIMITS)
    assert outcome.status == "done"
    assert len(outcome.thumbnails) == 10
    for thumb in outcome.thumbnails:
        decode(thumb)


def test_pdf_with_more_pages_than_the_frame_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "many.pdf", make_pdf([A4] * 6))
    assert "6 pages" in skipped(render_thumbnails(path, RenderLimits(max_frames=5)))
    assert probe_pixels(path, RenderLimits(max_frames=5)) == 0


def test_encrypted_pdf_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pdf", make_pdf([A4], encrypted=True))
    assert failed(render_thumbnails(path, LIMITS)) == "PDF is encrypted"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"%PDF-1.7\nthis is not a pdf body\n", id="garbage"),
        pytest.param(make_pdf([A4])[:150], id="truncated"),
    ],
)
def test_broken_pdf_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, "broken.pdf", content)
    failed(render_thumbnails(path, LIMITS))


# --- SVG ---------------------------------------------------------------------------------------

SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
TINY_PNG_URI = "data:image/png;base64," + base64.b64encode(solid(4, 4).pngsave_buffer()).decode()

CLEAN_SVG = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"
  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
{SVG_OPEN} width="1200" height="800" viewBox="0 0 120 80"
     xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
     inkscape:export-filename="C:\\Users\\me\\drawing.png">
  <defs>
    <linearGradient id="g">
      <stop offset="0" stop-color="#f00"/><stop offset="1" stop-color="#00f"/>
    </linearGradient>
    <rect id="r" width="10" height="10"/>
  </defs>
  <style>.bg {{ fill: url(#g); }}</style>
  <rect class="bg" width="120" height="80"/>
  <use href="#r" x="5" y="5"/>
  <use xlink:href="#r" x="20" y="5" style="fill: url( '#g' )"/>
  <image href="{TINY_PNG_URI}" x="40" y="5" width="4" height="4"/>
  <text x="5" y="70">caf&#233; &amp; co</text>
</svg>
"""


def test_clean_svg_is_rendered_to_fit_the_box(tmp_path: Path) -> None:
    path = write(tmp_path, "drawing.png", CLEAN_SVG.encode())
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (600, 400, "image/jpeg")
    # Rendered at the final size, so the probe reports the box, not the declared 1200x800.
    assert probe_pixels(path, LIMITS) == 600 * 400


def test_transparent_svg_gives_png_and_is_not_enlarged(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN} width="60" height="30"><circle cx="15" cy="15" r="10"/></svg>'
    thumb = one(render_thumbnails(write(tmp_path, "icon.svg", svg.encode()), LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (60, 30, "image/png")


SIZE = 'width="9" height="9"'
OUTSIDE = "reference outside the document"
ENTITIES = "DOCTYPE with an internal subset (entities)"
# name: (document, the rule that must refuse it)
HOSTILE_SVGS: dict[str, tuple[str, str]] = {
    "external-href": (f'{SVG_OPEN}><image href="http://evil.test/x.png" {SIZE}/></svg>', OUTSIDE),
    "file-xlink-href": (
        f'{SVG_OPEN}><image xlink:href="file:///etc/passwd" {SIZE}/></svg>',
        OUTSIDE,
    ),
    "relative-href": (f'{SVG_OPEN}><use href="other.svg#icon"/></svg>', OUTSIDE),
    "href-via-char-refs": (
        f'{SVG_OPEN}><image href="&#x66;ile:///etc/passwd" {SIZE}/></svg>',
        OUTSIDE,
    ),
    "href-padded": (f'{SVG_OPEN}><use href="  //evil.test/a.svg#x"/></svg>', OUTSIDE),
    "xxe-entity": (
        '<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f"{SVG_OPEN}><text>&xxe;</text></svg>",
        ENTITIES,
    ),
    "billion-laughs": (
        '<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">]>\n'
        f"{SVG_OPEN}><text>&b;</text></svg>",
        ENTITIES,
    ),
    "external-dtd": (
        f'<!DOCTYPE svg SYSTEM "file:///etc/passwd">\n{SVG_OPEN}><rect {SIZE}/></svg>',
        "DOCTYPE naming a non-SVG DTD",
    ),
    "xml-stylesheet": (
        '<?xml-stylesheet type="text/css" href="http://evil.test/x.css"?>\n'
        f"{SVG_OPEN}><rect {SIZE}/></svg>",
        "processing instruction",
    ),
    "css-import": (
        f"{SVG_OPEN}><style>@import url(http://evil.test/x.css);</style></svg>",
        "CSS @import",
    ),
    "css-url": (
        f"{SVG_OPEN}><style><![CDATA[rect {{ fill: url(http://evil.test/p#p) }}]]></style></svg>",
        "url() outside the document",
    ),
    "css-escape": (f'{SVG_OPEN}><style>@\\69mport "x.css";</style></svg>', "CSS escape"),
    "style-attribute-url": (
        f"{SVG_OPEN}><rect style=\"fill:url('file:///x.svg#p')\"/></svg>",
        "url() outside the document",
    ),
    "presentation-attribute-url": (
        f'{SVG_OPEN}><rect fill="URL(//evil.test/p#p)"/></svg>',
        "url() outside the document",
    ),
    "script": (f"{SVG_OPEN}><script>alert(1)</script></svg>", "<script> element"),
    "event-attribute": (f'{SVG_OPEN} onload="alert(1)"/>', "onload event attribute"),
    "foreign-object": (
        f'{SVG_OPEN}><foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" '
        'src="http://evil.test/"/></foreignObject></svg>',
        "<foreignObject> element",
    ),
    "xinclude": (
        f'{SVG_OPEN} xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="/etc/passwd" parse="text"/></svg>',
        "<include> element",
    ),
    "nested-svg-data-uri": (
        f'{SVG_OPEN}><image href="data:image/svg+xml;base64,'
        + base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"/>').decode()
        + '"/></svg>',
        OUTSIDE,
    ),
    "svg-disguised-as-png-data-uri": (
        f'{SVG_OPEN}><image href="data:image/png;base64,'
        + base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"/>').decode()
        + '"/></svg>',
        "embedded image is not a PNG, JPEG, GIF or WebP",
    ),
    "xml-base": (f'{SVG_OPEN} xml:base="http://evil.test/"><use href="#a"/></svg>', "xml:base"),
    "latin1-encoding": (
        f'<?xml version="1.0" encoding="ISO-8859-1"?>\n{SVG_OPEN}><rect {SIZE}/></svg>',
        "encoding other than UTF-8",
    ),
}


@pytest.mark.parametrize(("svg", "rule"), HOSTILE_SVGS.values(), ids=HOSTILE_SVGS.keys())
def test_svg_that_refers_outside_itself_is_not_rendered(
    tmp_path: Path, svg: str, rule: str
) -> None:
    path = write(tmp_path, "innocent.svg", svg.encode("latin-1" if "8859" in svg else "utf-8"))
    assert skipped(render_thumbnails(path, LIMITS)) == f"SVG not rendered: {rule}"
    assert probe_pixels(path, LIMITS) == 0


def test_utf16_svg_is_not_rendered(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN} width="10" height="10"><rect {SIZE}/></svg>'
    path = write(tmp_path, "wide.svg", svg.encode("utf-16"))
    skipped(render_thumbnails(path, LIMITS))


def test_svg_embedding_a_bomb_is_not_rendered(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN} width="10" height="10"><image href="{TINY_PNG_URI}"/></svg>'
    path = write(tmp_path, "a.svg", svg.encode())
    one(render_thumbnails(path, RenderLimits(max_pixels=16)))
    reason = skipped(render_thumbnails(path, RenderLimits(max_pixels=15)))
    assert "too many pixels" in reason


def test_malformed_svg_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.svg", f'{SVG_OPEN} width="10" height="10"><rect'.encode())
    assert failed(render_thumbnails(path, LIMITS)) == "SVG is not well-formed XML"


def test_xml_that_is_not_svg_is_not_an_image(tmp_path: Path) -> None:
    html = b"<html><body><p>an inline <svg></svg> in a page</p></body></html>"
    skipped(render_thumbnails(write(tmp_path, "page.svg", html), LIMITS))


def test_svg_size_limit(tmp_path: Path) -> None:
    data = CLEAN_SVG.encode()
    path = write(tmp_path, "big.svg", data)
    assert "SVG larger" in skipped(
        render_thumbnails(path, RenderLimits(max_svg_bytes=len(data) - 1))
    )


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


# --- HEIC --------------------------------------------------------------------------------------


def to_pillow(image: pyvips.Image) -> Image.Image:
    mode = {3: "RGB", 4: "RGBA"}[image.bands]
    return Image.frombytes(mode, (image.width, image.height), image.write_to_memory())


def heic(image: pyvips.Image, *more: pyvips.Image, **options: object) -> bytes:
    """A genuine HEIC (HEVC in HEIF), written by the x265 encoder that pillow-heif's wheel ships."""
    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    first = to_pillow(image)
    first.save(
        out,
        format="HEIF",
        quality=90,
        save_all=bool(more),
        append_images=[to_pillow(m) for m in more],
        **options,
    )
    data = out.getvalue()
    assert data[4:12] == b"ftypheic" and b"hvcC" in data, "not an HEVC-coded HEIF"
    return data


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
