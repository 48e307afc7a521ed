"""JPEG, PNG, GIF, WebP, TIFF, AVIF: libvips, which shrinks while it decodes (GIF and AVIF are
decoded by Pillow, see ``gif`` and ``avif``).

``thumbnail_source`` decodes at a reduced size where the format allows (a 24 MP JPEG is decoded
at 1/8 scale by libjpeg: about 20 MB above the process's baseline, where a full decode would hold
72 MB of pixels). Animated GIF/WebP and multi-page TIFF: first frame/page only.

Only the loaders named here are ever used: a file that libvips would open with another loader
(its matrix or CSV text formats, its native format) is not an image. A truncated image is an
error, not a half-grey thumbnail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyvips

from filesvc.thumbnails import avif, gif, heic
from filesvc.thumbnails.imaging import VipsImage, encode, fit_scale, over_limits
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.plan import Plan, Settled
from filesvc.thumbnails.result import Rendered, RenderFailed, done

# libvips loaders we accept, by the nickname libvips reports for a source.
RASTER_LOADERS = frozenset(
    {
        "jpegload_source",
        "pngload_source",
        "gifload_source",
        "webpload_source",
        "tiffload_source",
        "heifload_source",
    }
)


def vips_loader(path: Path) -> str | None:
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


def _n_pages(image: VipsImage) -> int:
    if image.get_typeof("n-pages") == 0:
        return 1
    pages = image.get("n-pages")
    return pages if isinstance(pages, int) else 1


@dataclass(frozen=True)
class RasterPlan:
    path: Path
    limits: RenderLimits
    pixels: int
    # The file embeds an ICC profile: convert to sRGB with it. Without one, colour management
    # would only convert sRGB to sRGB, for about a quarter of the render's CPU time.
    has_profile: bool
    # For a JPEG: the libjpeg DCT scale (1, 2, 4 or 8) to decode at; None for other formats.
    jpeg_shrink: int | None = None

    def _jpeg(self) -> VipsImage:
        """A JPEG decoded at the smallest DCT scale that still covers the thumbnail, then
        reduced. ``thumbnail_source`` keeps twice the thumbnail's size for its final reduction
        and so decodes a 24 MP photo at 1/4 scale (1500x1000) where 1/8 (750x500) still covers
        600x400: that doubled the decode time and made us slower than Pillow, which decodes at
        the scale that covers the box (``Image.draft``). At 1/8 libjpeg needs only each block's
        DC coefficient, so the inverse DCT all but disappears; the reduction from 750 to 600
        pixels is still done by lanczos3, as before."""
        source = pyvips.Source.new_from_file(str(self.path))
        image: VipsImage = pyvips.Image.jpegload_source(
            source, shrink=self.jpeg_shrink, fail_on="truncated"
        )
        # thumbnail_image applies the EXIF orientation, converts CMYK and tagged images to sRGB
        # (output_profile), and never enlarges, exactly as thumbnail_source does after loading.
        profile = {"output_profile": "srgb"} if self.has_profile else {}
        box = self.limits
        return image.thumbnail_image(box.box_width, height=box.box_height, size="down", **profile)

    def render(self) -> Rendered:
        if self.jpeg_shrink is not None:
            return done(encode(self._jpeg()))
        source = pyvips.Source.new_from_file(str(self.path))
        # thumbnail_source picks the loader by content (the same sniff as vips_loader), loads
        # only the first page/frame, shrinks on load, applies EXIF orientation and turns CMYK
        # into sRGB; with output_profile it also converts a tagged (wide-gamut, grey, CMYK) image
        # to sRGB with its profile, which matters since encode() strips metadata. fail_on goes
        # through option_string: libvips 8.18 ignores thumbnail_source's own fail_on argument.
        profile = {"output_profile": "srgb"} if self.has_profile else {}
        image: VipsImage = pyvips.Image.thumbnail_source(
            source,
            self.limits.box_width,
            height=self.limits.box_height,
            size="down",
            option_string="fail_on=truncated",
            **profile,
        )
        return done(encode(image))


def plan(path: Path, loader: str, head: bytes, limits: RenderLimits) -> Plan:
    """The plan for a file one of RASTER_LOADERS claims; headers only."""
    if loader == "heifload_source" and heic.is_hevc_heif(head):
        return heic.plan(path, limits)
    try:
        source = pyvips.Source.new_from_file(str(path))
        # Sequential access decodes nothing yet: this reads the header.
        header: VipsImage = pyvips.Image.new_from_source(source, "", access="sequential")
    except pyvips.Error:
        raise RenderFailed("image header could not be read") from None
    width, height, pages = header.width, header.height, _n_pages(header)
    over = over_limits(width, height, pages, limits)
    if over is not None:
        return Settled(over)
    if loader == "heifload_source" and heic.is_avif(head):
        return avif.AvifPlan(path, limits, width * height)
    if loader == "gifload_source":
        return gif.GifPlan(path, limits, width * height)
    has_profile = header.get_typeof("icc-profile-data") != 0
    shrink = _jpeg_shrink(header, limits) if loader == "jpegload_source" else None
    return RasterPlan(path, limits, width * height, has_profile, shrink)


def _jpeg_shrink(header: VipsImage, limits: RenderLimits) -> int:
    """The largest libjpeg scale (8, 4, 2 or 1) whose image still covers the thumbnail."""
    width, height = header.width, header.height
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):  # shown a quarter turn round: the box applies swapped
        width, height = height, width
    scale = fit_scale(width, height, limits)
    shrink = 8
    while shrink > 1 and shrink * scale > 1:
        shrink //= 2
    return shrink
