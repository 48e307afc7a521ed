"""GIF: the first frame decoded by Pillow as palette indices, expanded a strip at a time.

libvips' GIF loader expands a frame to RGBA before anything else, and its decoder keeps a frame
of its own: a 1600x1200 GIF held about 15 MiB and cost 42 ms of CPU, where Pillow decodes the
indices (1 byte a pixel) in about 16 ms (MEASURED with ``bench/thumbs.py``). So Pillow decodes,
and each strip of rows is turned into RGB and box-reduced by the whole factor the thumbnail
allows (as libvips' own shrink does) before the next: only the indices and the reduced image are
ever whole. libvips then makes the last, fractional reduction (lanczos) and encodes, as for every
raster. A GIF with transparency goes to libvips unreduced (its resize weighs colours by alpha).

libvips has read the header and checked the size and frame count before this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyvips
from PIL import Image

from filesvc.thumbnails.imaging import VipsImage, encode, fit_scale
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.result import Rendered, RenderFailed, done

# Rows expanded at once (rounded up to a multiple of the reduction factor).
_STRIP_ROWS = 64
_BANDS = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}


@dataclass(frozen=True)
class GifPlan:
    path: Path
    limits: RenderLimits
    pixels: int

    def render(self) -> Rendered:
        try:
            with Image.open(self.path, formats=["GIF"]) as opened:
                opened.load()  # the first frame only
                picture = _reduced(opened, self.limits)
                mode, (width, height) = picture.mode, picture.size
                pixels = picture.tobytes()
        except (OSError, ValueError, SyntaxError, EOFError):
            raise RenderFailed("image could not be decoded") from None
        bands = _BANDS[mode]
        image: VipsImage = pyvips.Image.new_from_memory(pixels, width, height, bands, "uchar")
        image = image.copy(interpretation="srgb" if bands >= 3 else "b-w")
        box = self.limits
        image = image.thumbnail_image(box.box_width, height=box.box_height, size="down")
        return done(encode(image))


def _reduced(frame: Image.Image, limits: RenderLimits) -> Image.Image:
    """The frame in a mode libvips takes, box-reduced by the largest whole factor that still
    covers the thumbnail (none when it has transparency)."""
    transparent = "transparency" in frame.info or frame.mode in ("RGBA", "LA", "PA")
    target = ("RGBA" if transparent else "RGB") if frame.mode not in ("L",) else "L"
    if transparent and frame.mode == "L":
        target = "LA"
    factor = int(1 / fit_scale(frame.width, frame.height, limits))
    if transparent or factor < 2:
        return frame if frame.mode == target else frame.convert(target)
    rows = -(-_STRIP_ROWS // factor) * factor
    out = Image.new(target, (-(-frame.width // factor), -(-frame.height // factor)))
    for top in range(0, frame.height, rows):
        strip = frame.crop((0, top, frame.width, min(top + rows, frame.height)))
        out.paste(strip.convert(target).reduce(factor), (0, top // factor))
    return out
