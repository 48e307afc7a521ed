"""Turn one stored file into thumbnails: a pure, blocking module for a worker thread or process.

Contract
--------
``render_thumbnails(path, limits)`` reads the bytes at ``path`` and answers a ``RenderOutcome``:

* ``done`` with one thumbnail per image (or per PDF page, up to ``limits.max_pdf_pages``);
* ``done`` with **no** thumbnails and a ``reason`` when the file is not something we make
  thumbnails of (not an image or PDF, empty, an SVG that refers outside itself) or when its
  header declares more than the limits allow (it is then never decoded);
* ``error`` with a ``reason`` when the file looks like an image or PDF but cannot be decoded
  (truncated, corrupt, encrypted PDF).

It never raises. Reasons are short phrases of our own (with at most a size or a count in them),
never paths or library messages, so a caller may log or store them as they are.

The format is decided by the content alone. The declared mime type and file name are deliberately
not parameters: a text file named ``.jpg`` is "not an image", an SVG named ``.png`` is an SVG.

Thumbnails fit inside ``box_width`` x ``box_height`` (600x400 by default), keep the aspect ratio,
are never enlarged, honour EXIF orientation, and are JPEG when opaque, PNG when they have real
transparency. ``mime``, ``width`` and ``height`` describe the returned bytes.

Formats and decisions
---------------------
* JPEG, PNG, GIF, WebP, TIFF, AVIF: libvips, through ``thumbnail_source`` so that the loader
  shrinks while it decodes (a 24 MP JPEG is decoded at 1/8 scale by libjpeg: about 20 MB above
  the process's baseline, where a full decode would hold 72 MB of pixels). Animated GIF/WebP and
  multi-page TIFF: first frame/page only.
* HEIC (HEVC-coded HEIF, what phones produce): the ``pyvips-binary`` wheel's libheif has an AV1
  decoder but no HEVC decoder, so libvips cannot decode it. When the ``ftyp`` brands say HEVC the
  file goes to pillow-heif instead, whose wheel bundles its own libheif with libde265 (pip alone,
  no system package). Same header checks first; then the primary image only is decoded at full
  size (HEVC has no shrink-on-load: a 12 MP photo is 36 MB of RGB), with the container's
  irot/imir orientation applied, and shrunk and encoded by libvips like any other raster. Any
  other HEIF (AVIF) stays with libvips. libheif decodes with up to
  ``pillow_heif.options.DECODE_THREADS`` threads (4 by default).
* PDF: the wheel's libvips has no PDF loader; pypdfium2 (PDFium, the Chrome PDF engine, shipped in
  the wheel, so it installs with pip alone) renders one page at a chosen scale, so each page is
  rasterised directly at thumbnail size, never at full size. PDFium is not thread-safe, so all
  PDFium calls in a process are serialised by one lock.
* SVG: rendered only if the document cannot reach anything outside itself (the policy is spelled
  out above ``_SvgScan``); otherwise ``done`` without thumbnails. It is then rendered from the bytes
  that were checked (no second read of the file) at the scale that fits the box.

Hardening
---------
Every raster's header is read first and the file is refused, undecoded, when width x height exceeds
``max_pixels`` or the page/frame count exceeds ``max_frames``; libvips itself does not bound the
cost of a decompression bomb (docs/measured.md). Only the loaders above are ever used: a file that
libvips would open with another loader (its matrix or CSV text formats, its native format) is "not
an image". libvips' untrusted loaders are blocked, its operation cache is off (a worker must not
keep decoded images alive between jobs). A truncated image is an error, not a half-grey thumbnail.

Time limits and memory admission belong to the caller: ``probe_pixels`` reads headers only and
says how many pixels a render will decode, for a semaphore counted in pixels.

Processes and threads: both public functions are top-level and take and return plain frozen
dataclasses, so they work with a ``spawn`` ``ProcessPoolExecutor`` (the method docs/measured.md
requires once libvips has run) or a thread pool. The only module state is a lock and a one-time
libvips configuration that each process performs on first use. Each libvips call also runs its
own thread pool (``VIPS_CONCURRENCY``, default one thread per core); size worker pools with that
in mind. ``path`` must not change while a
call runs (stored blobs are immutable).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import functools
import math
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from xml.parsers import expat

import pillow_heif
import pypdfium2 as pdfium
import pyvips

__all__ = [
    "RenderLimits",
    "RenderOutcome",
    "RenderedThumbnail",
    "probe_pixels",
    "render_thumbnails",
]

# --- limits ------------------------------------------------------------------------------------

# docs/api.md: every thumbnail fits inside 600x400.
DEFAULT_BOX_WIDTH = 600
DEFAULT_BOX_HEIGHT = 400
# About 100 MP: a 24 MP phone photo or a 50 MP camera raw export passes with room to spare; a
# 50000x50000 PNG bomb (2.5 GP, 0.3 MB on disk) does not. Matches the service's setting default.
DEFAULT_MAX_PIXELS = 100_000_000
# Pages or frames a header may declare. Only the first is decoded, but some loaders (GIF) walk
# every frame to count them, and a 100k-frame GIF is a denial of service, not a picture.
DEFAULT_MAX_FRAMES = 1000
# docs/api.md: one thumbnail per PDF page, up to 10 pages.
DEFAULT_MAX_PDF_PAGES = 10
# Bytes a file may have for us to look at it. The pixel limit bounds memory, not reading time:
# decoders are linear in their input, and input that carries no pixels (PNG ancillary chunks,
# unused TIFF pages, a PDF whose broken xref PDFium repairs by scanning everything) is not bounded
# by it. 512 MiB still admits an uncompressed 8-bit RGBA image at max_pixels (400 MB); reading it
# costs about half a second.
DEFAULT_MAX_INPUT_BYTES = 512 << 20
# Bytes an SVG may have. It is read into memory, checked by an XML parser in Python and parsed
# again by librsvg, whose own parser stops at 10 MB text nodes; real icons and diagrams are far
# smaller.
DEFAULT_MAX_SVG_BYTES = 10 << 20

JPEG_QUALITY = 80
PNG_COMPRESSION = 6
# How much of the file is read to recognise a PDF (PDF readers accept "%PDF-" within the first
# KiB) or an SVG (XML declaration, comments and a DOCTYPE may precede the root element).
_SNIFF_BYTES = 64 << 10
_PDF_MAGIC_WINDOW = 1024

# libvips loaders we accept, by the nickname libvips reports for a source. Anything else libvips
# can open (matrixload, csvload, vipsload, ...) is not an image for this service.
_RASTER_LOADERS = frozenset(
    {
        "jpegload_source",
        "pngload_source",
        "gifload_source",
        "webpload_source",
        "tiffload_source",
        "heifload_source",
    }
)
# ISO-BMFF brands of HEVC-coded HEIF (HEIC), which the wheel's libheif cannot decode: such files go
# to pillow-heif.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_AV1_BRANDS = frozenset({b"avif", b"avis"})


@dataclass(frozen=True)
class RenderLimits:
    """What one render may cost. Defaults follow docs/api.md; each is explained at its constant."""

    box_width: int = DEFAULT_BOX_WIDTH
    box_height: int = DEFAULT_BOX_HEIGHT
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_pdf_pages: int = DEFAULT_MAX_PDF_PAGES
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    max_svg_bytes: int = DEFAULT_MAX_SVG_BYTES

    def __post_init__(self) -> None:
        for name in (
            "box_width",
            "box_height",
            "max_pixels",
            "max_frames",
            "max_pdf_pages",
            "max_input_bytes",
            "max_svg_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"RenderLimits.{name} must be at least 1")


@dataclass(frozen=True)
class RenderedThumbnail:
    """One encoded thumbnail; ``mime``, ``width`` and ``height`` describe ``data`` exactly."""

    data: bytes
    mime: Literal["image/jpeg", "image/png"]
    width: int
    height: int


@dataclass(frozen=True)
class RenderOutcome:
    """The result of one render: the job status to record and the thumbnails to store.

    ``reason`` is None only for ``done`` with thumbnails; otherwise a short phrase for logs and
    metadata, with no path or library message in it.
    """

    status: Literal["done", "error"]
    thumbnails: tuple[RenderedThumbnail, ...]
    reason: str | None


def probe_pixels(path: Path, limits: RenderLimits) -> int:
    """Pixels that ``render_thumbnails(path, limits)`` will decode, from headers only.

    Meant for admission by a semaphore counted in pixels. A raster costs its declared width x
    height (the loader's shrink-on-load usually makes it far less: this is an upper bound); an SVG
    or a PDF page is rendered at thumbnail size, so it costs that size (for a PDF, the largest of
    the pages rendered one after the other; PDFium's own decoding of embedded images is not
    counted). A file that will not be decoded (not an image, refused by a limit, unreadable)
    costs 0. The answer never exceeds ``limits.max_pixels`` for rasters nor the box for the
    others, so a semaphore of ``max(max_pixels, box area)`` can never wait forever. Never raises.
    """
    try:
        plan = _plan(path, limits)
        if isinstance(plan, _PdfPlan):
            return _pdf_pixels(path, limits)
        if isinstance(plan, _RasterPlan | _HeicPlan | _SvgPlan):
            return plan.pixels
        return 0
    except Exception:
        return 0


def render_thumbnails(path: Path, limits: RenderLimits) -> RenderOutcome:
    """Make the thumbnails of the file at ``path``; see the module docstring. Never raises."""
    try:
        plan = _plan(path, limits)
        if isinstance(plan, _Skip):
            return RenderOutcome("done", (), plan.reason)
        if isinstance(plan, _RasterPlan):
            return _done((_render_raster(path, plan, limits),))
        if isinstance(plan, _HeicPlan):
            return _done((_render_heic(plan, limits),))
        if isinstance(plan, _SvgPlan):
            return _done((_render_svg(plan, limits),))
        return _render_pdf(path, limits)
    except _Failed as exc:
        return RenderOutcome("error", (), exc.reason)
    except pyvips.Error:
        return RenderOutcome("error", (), "image could not be decoded")
    except OSError:
        return RenderOutcome("error", (), "file could not be read")
    except Exception as exc:
        # A defect in this module or a library; the caller records it as a failed job.
        return RenderOutcome("error", (), f"unexpected {type(exc).__name__} while rendering")


def _done(thumbnails: tuple[RenderedThumbnail, ...]) -> RenderOutcome:
    return RenderOutcome("done", thumbnails, None)


class _Failed(Exception):
    """The file looks like something we render but cannot be decoded: status ``error``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- libvips -----------------------------------------------------------------------------------


class _VipsImage(Protocol):
    """The part of ``pyvips.Image`` this module uses (pyvips ships no type information)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def bands(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def interpretation(self) -> str: ...
    def hasalpha(self) -> bool: ...
    def set_type(self, gtype: int, name: str, value: object) -> None: ...
    def unpremultiply(self, *, max_alpha: float) -> _VipsImage: ...
    def get_typeof(self, name: str) -> int: ...
    def get(self, name: str) -> object: ...
    def extract_band(self, band: int, *, n: int = 1) -> _VipsImage: ...
    def cast(self, format: str) -> _VipsImage: ...
    def crop(self, left: int, top: int, width: int, height: int) -> _VipsImage: ...
    def copy(self, *, interpretation: str) -> _VipsImage: ...
    def colourspace(self, space: str) -> _VipsImage: ...
    def copy_memory(self) -> _VipsImage: ...
    def min(self) -> float: ...
    def thumbnail_image(
        self, width: int, *, height: int, size: str, output_profile: str | None = None
    ) -> _VipsImage: ...
    def jpegsave_buffer(self, *, Q: int, optimize_coding: bool, keep: str) -> bytes: ...
    def pngsave_buffer(self, *, compression: int, keep: str) -> bytes: ...


@functools.cache
def _configure_vips() -> None:
    """Once per process, before the first libvips call (idempotent, so a race is harmless)."""
    pyvips.block_untrusted_set(True)
    # libvips 8.18 flags its SVG loader untrusted. Re-enable only the in-memory variant: this
    # module hands it nothing but bytes that _SvgScan accepted, and a file or source can still
    # never be opened as SVG behind our back.
    pyvips.operation_block_set("VipsForeignLoadSvgBuffer", False)
    # No operation cache: a worker must not keep decoded pixels alive between jobs.
    pyvips.cache_set_max(0)


def _vips_loader(path: Path) -> str | None:
    """The libvips loader that content sniffing picks for ``path``, or None. Reads a few bytes."""
    source = pyvips.Source.new_from_file(str(path))
    # pyvips has no public wrapper for the sniff alone; new_from_source() would also read the
    # header and mix "unknown format" with "known format, broken header", which we must tell
    # apart (the first is "not an image", the second an error).
    found = pyvips.vips_lib.vips_foreign_find_load_source(source.pointer)
    if found == pyvips.ffi.NULL:
        pyvips.vips_lib.vips_error_clear()
        return None
    class_name = pyvips.ffi.string(found).decode("ascii", "replace")
    return str(pyvips.nickname_find(pyvips.type_find("VipsOperation", class_name)))


def _vips_header(path: Path) -> _VipsImage:
    """Open ``path`` for its header only (sequential access decodes nothing yet)."""
    source = pyvips.Source.new_from_file(str(path))
    header: _VipsImage = pyvips.Image.new_from_source(source, "", access="sequential")
    return header


def _n_pages(image: _VipsImage) -> int:
    if image.get_typeof("n-pages") == 0:
        return 1
    pages = image.get("n-pages")
    return pages if isinstance(pages, int) else 1


# --- classification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Skip:
    reason: str


@dataclass(frozen=True)
class _RasterPlan:
    pixels: int
    # The file embeds an ICC profile: convert to sRGB with it. Without one, colour management
    # would only convert sRGB to sRGB, for about a quarter of the render's CPU time.
    has_profile: bool


@dataclass(frozen=True, eq=False)
class _HeicPlan:
    pixels: int
    # Opened with its headers parsed; nothing is decoded yet.
    heif: _HeifFile


@dataclass(frozen=True)
class _SvgPlan:
    data: bytes
    scale: float
    pixels: int


@dataclass(frozen=True)
class _PdfPlan:
    pass


_Plan = _Skip | _RasterPlan | _HeicPlan | _SvgPlan | _PdfPlan


def _plan(path: Path, limits: RenderLimits) -> _Plan:
    """Decide from the content what the file is and whether it may be decoded. Headers only."""
    _configure_vips()
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        # A FIFO or device would block or never end; stored blobs are regular files.
        raise _Failed("not a regular file")
    size = status.st_size
    if size == 0:
        return _Skip("empty file")
    if size > limits.max_input_bytes:
        return _Skip(f"file larger than {limits.max_input_bytes} bytes; not decoded")
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)

    loader = _vips_loader(path)
    if loader in _RASTER_LOADERS:
        return _raster_plan(path, loader, head, limits)
    if b"%PDF-" in head[:_PDF_MAGIC_WINDOW]:
        return _PdfPlan()
    if _looks_like_svg(head):
        if size > limits.max_svg_bytes:
            return _Skip(f"SVG larger than {limits.max_svg_bytes} bytes; not rendered")
        with path.open("rb") as f:
            data = f.read(limits.max_svg_bytes + 1)
        if len(data) > limits.max_svg_bytes:
            return _Skip(f"SVG larger than {limits.max_svg_bytes} bytes; not rendered")
        return _svg_plan(data, limits)
    return _Skip("not an image or PDF")


def _raster_plan(path: Path, loader: str, head: bytes, limits: RenderLimits) -> _Plan:
    if loader == "heifload_source" and _is_hevc_heif(head):
        return _heic_plan(path, limits)
    try:
        header = _vips_header(path)
    except pyvips.Error:
        raise _Failed("image header could not be read") from None
    width, height, pages = header.width, header.height, _n_pages(header)
    over = _over_limits(width, height, pages, limits)
    if over is not None:
        return over
    return _RasterPlan(
        pixels=width * height, has_profile=header.get_typeof("icc-profile-data") != 0
    )


def _over_limits(width: int, height: int, pages: int, limits: RenderLimits) -> _Skip | None:
    """The refusal of a raster whose header declares more than the limits allow, or None."""
    if width * height > limits.max_pixels:
        return _Skip(
            f"image declares {width}x{height} pixels, over the limit of {limits.max_pixels}; "
            "not decoded"
        )
    if pages > limits.max_frames:
        return _Skip(
            f"image declares {pages} pages or frames, over the limit of {limits.max_frames}; "
            "not decoded"
        )
    return None


def _is_hevc_heif(head: bytes) -> bool:
    """True when the ISO-BMFF ``ftyp`` box names HEVC brands and no AV1 one."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return False
    box_size = int.from_bytes(head[0:4], "big")
    end = min(max(box_size, 16), len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    return bool(brands & _HEVC_BRANDS) and not brands & _AV1_BRANDS


# --- rasters -----------------------------------------------------------------------------------


def _render_raster(path: Path, plan: _RasterPlan, limits: RenderLimits) -> RenderedThumbnail:
    source = pyvips.Source.new_from_file(str(path))
    # thumbnail_source picks the loader by content (the same sniff as _vips_loader), loads only
    # the first page/frame, shrinks on load, applies EXIF orientation and turns CMYK into sRGB;
    # with output_profile it also converts a tagged (wide-gamut, grey, CMYK) image to sRGB with
    # its profile, which matters since _encode strips metadata. fail_on goes through
    # option_string: libvips 8.18 ignores thumbnail_source's own fail_on argument.
    profile = {"output_profile": "srgb"} if plan.has_profile else {}
    image: _VipsImage = pyvips.Image.thumbnail_source(
        source,
        limits.box_width,
        height=limits.box_height,
        size="down",
        option_string="fail_on=truncated",
        **profile,
    )
    return _encode(image)


# --- HEIC --------------------------------------------------------------------------------------
#
# The pyvips-binary wheel's libvips links a libheif without an HEVC decoder (docs/measured.md), so
# it reads an HEIC's header but cannot decode its pixels. pillow-heif's wheel bundles libheif with
# libde265, an HEVC decoder, and installs with pip alone. It decodes; libvips still shrinks,
# converts colour and encodes, so the output is made exactly as for every other raster.


class _HeifFile(Protocol):
    """The part of ``pillow_heif.HeifFile`` this module uses: its primary image, lazily decoded."""

    @property
    def size(self) -> tuple[int, int]: ...
    @property
    def mode(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def info(self) -> dict[str, object]: ...
    def __len__(self) -> int: ...


# What pillow-heif raises for a file it cannot parse or decode (its documented exceptions, and
# IndexError for a container without images).
_HEIF_ERRORS = (ValueError, EOFError, SyntaxError, RuntimeError, OSError, IndexError)
# pillow-heif modes -> (bands, libvips format). Colour is asked for at 8 bits per sample;
# pillow-heif still gives 10- and 12-bit monochrome as 16-bit little-endian. A lower-case "a" is
# premultiplied alpha.
_HEIF_LAYOUTS = {
    "L": (1, "uchar"),
    "LA": (2, "uchar"),
    "La": (2, "uchar"),
    "RGB": (3, "uchar"),
    "RGBA": (4, "uchar"),
    "RGBa": (4, "uchar"),
    "L;16": (1, "ushort"),
    "I;16": (1, "ushort"),
    "I;16L": (1, "ushort"),
    "LA;16": (2, "ushort"),
    "La;16": (2, "ushort"),
}


def _heic_plan(path: Path, limits: RenderLimits) -> _Plan:
    # libheif parses from memory; the file is at most max_input_bytes, and a HEIC is a few MB.
    # Read here, so that an OSError below can only come from pillow-heif.
    data = path.read_bytes()
    try:
        # Parses the boxes only: the size is the primary image's after irot (a portrait photo
        # stored landscape says portrait), the length counts the top-level images.
        heif: _HeifFile = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
        width, height = heif.size
        images = len(heif)
    except _HEIF_ERRORS:
        raise _Failed("image header could not be read") from None
    over = _over_limits(width, height, images, limits)
    if over is not None:
        return over
    return _HeicPlan(pixels=width * height, heif=heif)


def _render_heic(plan: _HeicPlan, limits: RenderLimits) -> RenderedThumbnail:
    heif = plan.heif
    try:
        # Decodes the primary image only (not the other images, thumbnails, depth or auxiliary
        # images). libheif applies the irot/imir transformations while decoding: in HEIF they
        # carry the orientation. The EXIF Orientation that phones also write describes the same
        # rotation, so applying it as well would rotate twice; it is ignored.
        pixels = heif.data
        width, height = heif.size
        mode = heif.mode
    except _HEIF_ERRORS:
        raise _Failed("image could not be decoded") from None
    layout = _HEIF_LAYOUTS.get(mode)
    if layout is None:
        raise _Failed("image decoded to an unexpected pixel format")
    bands, band_format = layout
    sample_bytes = 2 if band_format == "ushort" else 1
    if len(pixels) != width * height * bands * sample_bytes:
        raise _Failed("image decoded to an unexpected pixel format")
    image: _VipsImage = pyvips.Image.new_from_memory(pixels, width, height, bands, band_format)
    if bands >= 3:
        image = image.copy(interpretation="srgb")
    else:
        image = image.copy(interpretation="grey16" if sample_bytes == 2 else "b-w")
    if mode.split(";")[0].endswith("a"):
        image = image.unpremultiply(max_alpha=(1 << 8 * sample_bytes) - 1).cast(band_format)
    profile = heif.info.get("icc_profile")
    if isinstance(profile, bytes) and profile:
        # As in _render_raster: convert to sRGB with the embedded profile (iPhones tag Display
        # P3) after the shrink, since _encode strips metadata. ``image`` was made above and is
        # not shared, so setting metadata on it in place is safe.
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
        image = image.thumbnail_image(
            limits.box_width, height=limits.box_height, size="down", output_profile="srgb"
        )
    else:
        image = image.thumbnail_image(limits.box_width, height=limits.box_height, size="down")
    return _encode(image)


# Interpretations libvips can convert to sRGB; any other (multiband, matrix, fourier, histogram)
# has no colour meaning, and its values are shown as they are.
_COLOUR_SPACES = frozenset(
    {"srgb", "rgb16", "scrgb", "cmyk", "lab", "labq", "labs", "lch", "cmc", "xyz", "yxy", "hsv"}
)


def _encode(image: _VipsImage) -> RenderedThumbnail:
    """Encode a thumbnail-sized image: JPEG when opaque, PNG when it has real transparency."""
    if image.bands > 4:
        # Extra bands (multiband TIFF) have no display meaning: keep the first three as RGB.
        image = image.extract_band(0, n=3)
    if image.interpretation in ("b-w", "grey16"):
        image = image.colourspace("b-w")
    elif image.interpretation in _COLOUR_SPACES:
        image = image.colourspace("srgb")
    else:
        image = image.copy(interpretation="b-w" if image.bands < 3 else "srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    # Compute the pixels once (a few hundred kB): the alpha test and the encoder both read them,
    # and with the operation cache off the decode would otherwise run twice.
    image = image.copy_memory()
    if image.hasalpha() and image.extract_band(image.bands - 1).min() >= 255:
        # GIF and SVG loaders always give an alpha band; drop it when nothing is transparent.
        image = image.extract_band(0, n=image.bands - 1)
    if image.hasalpha():
        data = image.pngsave_buffer(compression=PNG_COMPRESSION, keep="none")
        return RenderedThumbnail(bytes(data), "image/png", image.width, image.height)
    data = image.jpegsave_buffer(Q=JPEG_QUALITY, optimize_coding=True, keep="none")
    return RenderedThumbnail(bytes(data), "image/jpeg", image.width, image.height)


def _fit_scale(width: float, height: float, limits: RenderLimits) -> float:
    """Scale that fits ``width`` x ``height`` inside the box, never above 1 (no enlarging)."""
    return min(limits.box_width / width, limits.box_height / height, 1.0)


# --- SVG ---------------------------------------------------------------------------------------
#
# Policy: an SVG is rendered only if it is self-contained. librsvg can fetch other files (images,
# <use> targets, stylesheets, XInclude, external entities) relative to the document, so we refuse
# (done, no thumbnails) any document with:
#   - a DOCTYPE with an internal subset (entities: XXE, billion laughs), or any DOCTYPE other
#     than the W3C SVG one, or a processing instruction (<?xml-stylesheet?>);
#   - an href/src attribute in any namespace whose value is not a "#fragment" or a base64
#     data:image/{png,jpeg,gif,webp} URI (nested SVG in data: is refused too), and any embedded
#     raster whose header declares more than max_pixels (a bomb inside an SVG);
#   - CSS, in a <style> element or any SVG attribute, with @import, url() to anything but a
#     #fragment, or a backslash (CSS escapes could spell either);
#   - <script>, <foreignObject>, <iframe>, <object>, <embed>, <audio>, <video>, XInclude, an
#     on* event attribute, or xml:base;
#   - an encoding other than UTF-8/ASCII, or a NUL byte, so that this check and librsvg cannot
#     read different characters from the same bytes.
# The checked bytes are then rendered from memory: with no base file there is nothing relative
# for librsvg to resolve, a second line of defence. What stays possible is CPU cost (filters,
# deep <use> chains): the caller's time limit covers it.

_SVG_NS = "http://www.w3.org/2000/svg"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_BANNED_ELEMENTS = frozenset(
    {"script", "foreignobject", "iframe", "object", "embed", "audio", "video", "include", "handler"}
)
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|jpg|gif|webp);base64,(?P<b64>.*)", re.I | re.S)
_CSS_URL = re.compile(r"url\s*\(\s*['\"]?\s*(?P<target>[^)'\"]*)", re.I)
_EMBEDDED_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_EMBEDDED_LOADERS = frozenset(
    {"jpegload_buffer", "pngload_buffer", "gifload_buffer", "webpload_buffer"}
)


def _looks_like_svg(head: bytes) -> bool:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"<") and b"<svg" in text


def _svg_plan(data: bytes, limits: RenderLimits) -> _Plan:
    scan = _SvgScan()
    scan.run(data)
    if scan.root_local != "svg":
        # Some other XML or HTML document that happens to mention <svg>.
        return _Skip("not an image or PDF")
    if scan.problem is not None:
        return _Skip(f"SVG not rendered: {scan.problem}")
    if scan.malformed:
        raise _Failed("SVG is not well-formed XML")
    for embedded in scan.embedded_images:
        problem = _embedded_image_problem(embedded, limits)
        if problem is not None:
            return _Skip(f"SVG not rendered: {problem}")
    try:
        header: _VipsImage = pyvips.Image.svgload_buffer(data)
    except pyvips.Error:
        raise _Failed("SVG could not be parsed") from None
    if header.width < 1 or header.height < 1:
        raise _Failed("SVG has no size")
    scale = _fit_scale(header.width, header.height, limits)
    pixels = math.ceil(header.width * scale) * math.ceil(header.height * scale)
    return _SvgPlan(data=data, scale=scale, pixels=pixels)


def _render_svg(plan: _SvgPlan, limits: RenderLimits) -> RenderedThumbnail:
    image: _VipsImage = pyvips.Image.svgload_buffer(plan.data, scale=plan.scale)
    # Rounding may put a side one pixel over the box; this is a no-op otherwise.
    image = image.thumbnail_image(limits.box_width, height=limits.box_height, size="down")
    return _encode(image)


def _embedded_image_problem(data: bytes, limits: RenderLimits) -> str | None:
    """Why an image embedded in an SVG as data: may not be rendered, or None."""
    # Check the magic first, so that no other libvips loader (SVG above all) sees the bytes.
    if not data.startswith(_EMBEDDED_MAGIC) and not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "embedded image is not a PNG, JPEG, GIF or WebP"
    try:
        header: _VipsImage = pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error:
        return "embedded image is not a readable PNG, JPEG, GIF or WebP"
    loader = header.get("vips-loader")
    if loader not in _EMBEDDED_LOADERS:
        return "embedded image is not a PNG, JPEG, GIF or WebP"
    if header.width * header.height > limits.max_pixels:
        return "embedded image declares too many pixels"
    return None


def _css_problem(text: str) -> str | None:
    if "\\" in text:
        return "CSS escape"
    if "@import" in text.lower():
        return "CSS @import"
    for match in _CSS_URL.finditer(text):
        if not match.group("target").strip().startswith("#"):
            return "url() outside the document"
    return None


class _SvgScan:
    """One pass of expat over an SVG, recording the first reason not to render it."""

    def __init__(self) -> None:
        self.root_local: str | None = None
        self.problem: str | None = None
        self.malformed = False
        self.embedded_images: list[bytes] = []
        self._style_depth = 0
        self._style_text: list[str] = []

    def run(self, data: bytes) -> None:
        if b"\x00" in data:
            self._flag("NUL byte")
            return
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self._flag("not UTF-8")
            return
        # expat never fetches external entities or DTDs unless given a handler that does; the
        # handlers below only record what they see. No DOCTYPE internal subset is accepted, so
        # no entity is ever defined, let alone expanded.
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.XmlDeclHandler = self._xml_decl
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._entity
        parser.ExternalEntityRefHandler = self._external_entity
        parser.ProcessingInstructionHandler = self._processing_instruction
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        try:
            parser.Parse(data, True)
        except expat.ExpatError:
            self.malformed = True

    def _flag(self, why: str) -> None:
        if self.problem is None:
            self.problem = why

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8", "us-ascii", "ascii"):
            self._flag("encoding other than UTF-8")

    def _doctype(
        self, name: str, system_id: str | None, public_id: str | None, has_internal: int
    ) -> None:
        if has_internal:
            self._flag("DOCTYPE with an internal subset (entities)")
        elif system_id is not None and not (
            (public_id or "").startswith("-//W3C//DTD SVG")
            and system_id.startswith("http://www.w3.org/")
        ):
            self._flag("DOCTYPE naming a non-SVG DTD")

    def _entity(self, name: str, *_args: object) -> None:
        self._flag("entity declaration")

    def _external_entity(self, *_args: object) -> int:
        self._flag("external entity")
        return 0

    def _processing_instruction(self, target: str, data: str) -> None:
        self._flag("processing instruction")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rsplit(" ", 1)[-1]
        if self.root_local is None:
            self.root_local = local if name.startswith(_SVG_NS + " ") or " " not in name else ""
        if local.lower() in _BANNED_ELEMENTS:
            self._flag(f"<{local}> element")
        if local == "style":
            self._style_depth += 1
        for attr_name, value in attrs.items():
            namespace, _, attr_local = attr_name.rpartition(" ")
            self._attribute(namespace, attr_local.lower(), value)

    def _attribute(self, namespace: str, local: str, value: str) -> None:
        if namespace == _XML_NS and local == "base":
            # "#id" stays internal in librsvg whatever the base, but nothing needs one.
            self._flag("xml:base")
        if local.startswith("on"):
            self._flag(f"{local} event attribute")
        if local.endswith("href") or local == "src":
            target = value.strip()
            if target.startswith("#"):
                return
            match = _DATA_IMAGE.fullmatch(target)
            if match is None:
                self._flag("reference outside the document")
                return
            try:
                raw = "".join(match.group("b64").split())
                self.embedded_images.append(base64.b64decode(raw, validate=True))
            except (binascii.Error, ValueError):
                self._flag("malformed data: URI")
            return
        # Presentation attributes and style= are CSS. Attributes in other namespaces (Inkscape's
        # and Sodipodi's bookkeeping, which may hold Windows paths) are not read by librsvg.
        if namespace in ("", _SVG_NS):
            problem = _css_problem(value)
            if problem is not None:
                self._flag(problem)

    def _end(self, name: str) -> None:
        if name.rsplit(" ", 1)[-1] == "style" and self._style_depth > 0:
            self._style_depth -= 1
            if self._style_depth == 0:
                problem = _css_problem("".join(self._style_text))
                self._style_text.clear()
                if problem is not None:
                    self._flag(problem)

    def _text(self, text: str) -> None:
        if self._style_depth > 0:
            self._style_text.append(text)


# --- PDF ---------------------------------------------------------------------------------------


class _PdfBitmap(Protocol):
    """The part of ``pypdfium2.PdfBitmap`` this module uses."""

    @property
    def buffer(self) -> ctypes.Array[ctypes.c_ubyte]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def n_channels(self) -> int: ...
    def close(self) -> None: ...


class _PdfPage(Protocol):
    """The part of ``pypdfium2.PdfPage`` this module uses."""

    def render(self, *, scale: float, rev_byteorder: bool, prefer_bgrx: bool) -> _PdfBitmap: ...
    def close(self) -> None: ...


class _PdfDocument(Protocol):
    """The part of ``pypdfium2.PdfDocument`` this module uses."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> _PdfPage: ...
    def get_page_size(self, index: int) -> tuple[float, float]: ...
    def close(self) -> None: ...


# PDFium keeps global state and is not thread-safe; pypdfium2 does not serialise calls itself.
# One lock per process (a spawned worker gets its own) covers every PDFium call in this module.
_PDFIUM_LOCK = threading.Lock()


@contextlib.contextmanager
def _open_pdf(path: Path) -> Iterator[_PdfDocument]:
    """Open a PDF under the PDFium lock; _Failed when it is broken or needs a password."""
    with _PDFIUM_LOCK:
        try:
            pdf: _PdfDocument = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
                raise _Failed("PDF is encrypted") from None
            raise _Failed("PDF could not be opened") from None
        try:
            yield pdf
        finally:
            pdf.close()


def _page_size(pdf: _PdfDocument, index: int) -> tuple[float, float]:
    """Page ``index``'s size in points, after its /Rotate; _Failed when it is not a size."""
    try:
        width, height = (float(side) for side in pdf.get_page_size(index))
    except pdfium.PdfiumError:
        raise _Failed("PDF page could not be read") from None
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise _Failed("PDF page has no usable size")
    return width, height


def _pdf_scale(width: float, height: float, limits: RenderLimits) -> float:
    """Scale (pixels per point) at which PDFium's bitmap already fits the box.

    One point becomes at most one pixel (72 dpi), the PDF counterpart of never enlarging. PDFium's
    bitmap is ceil(size x scale) pixels, so nudge the scale down until rounding cannot overflow.
    """
    scale = _fit_scale(width, height, limits)
    while (
        math.ceil(width * scale) > limits.box_width or math.ceil(height * scale) > limits.box_height
    ):
        scale *= 1 - 1e-9
    return scale


def _pdf_pixels(path: Path, limits: RenderLimits) -> int:
    with _open_pdf(path) as pdf:
        count = len(pdf)
        if count > limits.max_frames:
            return 0
        largest = 0
        for index in range(min(count, limits.max_pdf_pages)):
            width, height = _page_size(pdf, index)
            scale = _pdf_scale(width, height, limits)
            largest = max(largest, math.ceil(width * scale) * math.ceil(height * scale))
        return largest


def _render_pdf(path: Path, limits: RenderLimits) -> RenderOutcome:
    with _open_pdf(path) as pdf:
        count = len(pdf)
        if count == 0:
            raise _Failed("PDF has no pages")
        if count > limits.max_frames:
            return RenderOutcome(
                "done",
                (),
                f"PDF declares {count} pages, over the limit of {limits.max_frames}; not rendered",
            )
        pages = tuple(
            _render_pdf_page(pdf, index, limits)
            for index in range(min(count, limits.max_pdf_pages))
        )
    return _done(pages)


def _render_pdf_page(pdf: _PdfDocument, index: int, limits: RenderLimits) -> RenderedThumbnail:
    width, height = _page_size(pdf, index)
    scale = _pdf_scale(width, height, limits)
    try:
        page = pdf[index]
        try:
            # Rasterised directly at thumbnail scale: the bitmap is at most box-sized. RGBx keeps
            # rows free of padding (4 bytes per pixel); the page is painted on opaque white.
            bitmap = page.render(scale=scale, rev_byteorder=True, prefer_bgrx=True)
            try:
                if bitmap.n_channels != 4 or bitmap.stride % 4:
                    raise _Failed("PDF page rendered in an unexpected pixel format")
                pixels = bytes(bitmap.buffer)
                stride_px, bitmap_w, bitmap_h = bitmap.stride // 4, bitmap.width, bitmap.height
            finally:
                bitmap.close()
        finally:
            page.close()
    except pdfium.PdfiumError:
        raise _Failed("PDF page could not be rendered") from None
    rgbx: _VipsImage = pyvips.Image.new_from_memory(pixels, stride_px, bitmap_h, 4, "uchar")
    image = rgbx.crop(0, 0, bitmap_w, bitmap_h).extract_band(0, n=3).copy(interpretation="srgb")
    # A no-op unless PDFium's rounding differs from ours.
    image = image.thumbnail_image(limits.box_width, height=limits.box_height, size="down")
    return _encode(image)
