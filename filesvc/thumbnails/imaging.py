"""What every renderer shares: libvips set up safely, the box fit, and the one encoder.

Thumbnails fit inside the box (600x400 by default), keep the aspect ratio, are never enlarged,
and are JPEG when opaque, PNG when they have real transparency.
"""

from __future__ import annotations

import functools
import io
from typing import Protocol

import pyvips
from PIL import Image

from filesvc.thumbnails import allocator
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.result import Rendered, Thumbnail, skipped

JPEG_QUALITY = 80
PNG_COMPRESSION = 6


class VipsImage(Protocol):
    """The part of ``pyvips.Image`` the renderers use (pyvips ships no type information)."""

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
    def unpremultiply(self, *, max_alpha: float) -> VipsImage: ...
    def get_typeof(self, name: str) -> int: ...
    def get(self, name: str) -> object: ...
    def extract_band(self, band: int, *, n: int = 1) -> VipsImage: ...
    def cast(self, format: str) -> VipsImage: ...
    def crop(self, left: int, top: int, width: int, height: int) -> VipsImage: ...
    def copy(self, *, interpretation: str) -> VipsImage: ...
    def colourspace(self, space: str) -> VipsImage: ...
    def copy_memory(self) -> VipsImage: ...
    def min(self) -> float: ...
    def rot(self, angle: str) -> VipsImage: ...
    def fliphor(self) -> VipsImage: ...
    def resize(self, scale: float, *, vscale: float) -> VipsImage: ...
    def thumbnail_image(
        self, width: int, *, height: int, size: str, output_profile: str = ...
    ) -> VipsImage: ...
    def write_to_memory(self) -> bytes: ...
    def pngsave_buffer(self, *, compression: int, keep: str) -> bytes: ...


@functools.cache
def configure_vips() -> None:
    """Once per process, before the first libvips call (idempotent, so a race is harmless)."""
    allocator.tune()
    pyvips.block_untrusted_set(True)
    # libvips 8.18 flags its SVG loader untrusted. Re-enable only the in-memory variant: the SVG
    # renderer hands it nothing but bytes its scan accepted, and a file or source can still never
    # be opened as SVG behind our back.
    pyvips.operation_block_set("VipsForeignLoadSvgBuffer", False)
    # No operation cache: a worker must not keep decoded pixels alive between jobs.
    pyvips.cache_set_max(0)


def fit_scale(width: float, height: float, limits: RenderLimits) -> float:
    """Scale that fits ``width`` x ``height`` inside the box, never above 1 (no enlarging)."""
    return min(limits.box_width / width, limits.box_height / height, 1.0)


def over_limits(width: int, height: int, frames: int, limits: RenderLimits) -> Rendered | None:
    """The refusal of a picture whose header declares more than the limits allow, or None."""
    if width * height > limits.max_pixels:
        return skipped(
            f"image declares {width}x{height} pixels, over the limit of {limits.max_pixels}; "
            "not decoded"
        )
    if frames > limits.max_frames:
        return skipped(
            f"image declares {frames} pages or frames, over the limit of {limits.max_frames}; "
            "not decoded"
        )
    return None


# Interpretations libvips can convert to sRGB; any other (multiband, matrix, fourier, histogram)
# has no colour meaning, and its values are shown as they are.
_COLOUR_SPACES = frozenset(
    {"srgb", "rgb16", "scrgb", "cmyk", "lab", "labq", "labs", "lch", "cmc", "xyz", "yxy", "hsv"}
)


def encode(image: VipsImage) -> Thumbnail:
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
        return Thumbnail(bytes(data), "image/png", image.width, image.height)
    return Thumbnail(_jpeg(image), "image/jpeg", image.width, image.height)


_JPEG_MODES = {1: "L", 3: "RGB"}


def _jpeg(image: VipsImage) -> bytes:
    """Baseline JPEG, 4:2:0, optimised Huffman tables, no metadata, of an 8-bit grey or sRGB
    image. Encoded by Pillow's libjpeg-turbo: libvips' wheel encodes with mozjpeg, which made the
    same bytes (within 0.1 %) in twice the time (5.4 against 2.6 ms for 600x400, bench/README)."""
    mode = _JPEG_MODES[image.bands]
    picture = Image.frombytes(mode, (image.width, image.height), image.write_to_memory())
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def from_rgb(pixels: bytes, width: int, height: int) -> VipsImage:
    """A libvips image over packed 8-bit RGB rows (the bytes are kept alive by the image)."""
    image: VipsImage = pyvips.Image.new_from_memory(pixels, width, height, 3, "uchar")
    return image.copy(interpretation="srgb")
