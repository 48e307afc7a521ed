"""HEIC (HEVC-coded HEIF, what phones produce), through pillow-heif.

The pyvips-binary wheel's libheif has an AV1 decoder but no HEVC decoder (docs/measured.md), so
libvips reads an HEIC's header but cannot decode its pixels. When the ``ftyp`` brands say HEVC
the file comes here instead: pillow-heif's wheel bundles its own libheif with libde265 (pip
alone, no system package). Same header checks first; then the primary image only is decoded at
full size (HEVC has no shrink-on-load: a 12 MP photo is 36 MB of RGB), with the container's
irot/imir orientation applied, and shrunk and encoded by libvips like any other raster. Any
other HEIF (AVIF) stays with libvips. libheif decodes with up to
``pillow_heif.options.DECODE_THREADS`` threads (4 by default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pillow_heif
import pyvips

from filesvc.thumbnails.imaging import VipsImage, encode, over_limits
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.plan import Plan, Settled
from filesvc.thumbnails.result import Rendered, RenderFailed, done

# ISO-BMFF brands of HEVC-coded HEIF (HEIC), which the wheel's libheif cannot decode.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_AV1_BRANDS = frozenset({b"avif", b"avis"})


def _brands(head: bytes) -> set[bytes]:
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    box_size = int.from_bytes(head[0:4], "big")
    end = min(max(box_size, 16), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}


def is_hevc_heif(head: bytes) -> bool:
    """True when the ISO-BMFF ``ftyp`` box names HEVC brands and no AV1 one."""
    brands = _brands(head)
    return bool(brands & _HEVC_BRANDS) and not brands & _AV1_BRANDS


def is_avif(head: bytes) -> bool:
    """True when the ``ftyp`` box names an AV1 brand (AVIF)."""
    return bool(_brands(head) & _AV1_BRANDS)


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


def plan(path: Path, limits: RenderLimits) -> Plan:
    """The plan for an HEVC-coded HEIF; parses the boxes only."""
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
        raise RenderFailed("image header could not be read") from None
    over = over_limits(width, height, images, limits)
    if over is not None:
        return Settled(over)
    return HeicPlan(heif, limits, width * height)


@dataclass(frozen=True, eq=False)
class HeicPlan:
    # Opened with its headers parsed; nothing is decoded yet.
    heif: _HeifFile
    limits: RenderLimits
    pixels: int

    def render(self) -> Rendered:
        heif = self.heif
        try:
            # Decodes the primary image only (not the other images, thumbnails, depth or auxiliary
            # images). libheif applies the irot/imir transformations while decoding: in HEIF they
            # carry the orientation. The EXIF Orientation that phones also write describes the same
            # rotation, so applying it as well would rotate twice; it is ignored.
            pixels = heif.data
            width, height = heif.size
            mode = heif.mode
        except _HEIF_ERRORS:
            raise RenderFailed("image could not be decoded") from None
        layout = _HEIF_LAYOUTS.get(mode)
        if layout is None:
            raise RenderFailed("image decoded to an unexpected pixel format")
        bands, band_format = layout
        sample_bytes = 2 if band_format == "ushort" else 1
        if len(pixels) != width * height * bands * sample_bytes:
            raise RenderFailed("image decoded to an unexpected pixel format")
        image: VipsImage = pyvips.Image.new_from_memory(pixels, width, height, bands, band_format)
        if bands >= 3:
            image = image.copy(interpretation="srgb")
        else:
            image = image.copy(interpretation="grey16" if sample_bytes == 2 else "b-w")
        if mode.split(";")[0].endswith("a"):
            image = image.unpremultiply(max_alpha=(1 << 8 * sample_bytes) - 1).cast(band_format)
        profile = heif.info.get("icc_profile")
        if isinstance(profile, bytes) and profile:
            # As in the raster renderer: convert to sRGB with the embedded profile (iPhones tag
            # Display P3) after the shrink, since encode() strips metadata. ``image`` was made
            # above and is not shared, so setting metadata on it in place is safe.
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
            image = image.thumbnail_image(
                self.limits.box_width,
                height=self.limits.box_height,
                size="down",
                output_profile="srgb",
            )
        else:
            image = image.thumbnail_image(
                self.limits.box_width, height=self.limits.box_height, size="down"
            )
        return done(encode(image))
