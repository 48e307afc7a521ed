"""AVIF, decoded by Pillow's AVIF plugin (libavif with dav1d, both in Pillow's wheel).

libvips reads AVIF through libheif, whose colour conversion made its decode cost twice the CPU of
libavif's (247 ms against 115 ms for a 3 MP photo, MEASURED in ``bench``), so the decode comes here
and libvips shrinks, converts colour and encodes as for every other raster. AV1 has no
shrink-on-load: the primary image is decoded at full size (a 3 MP photo is 9 MB of RGB), after
libvips has read the header and the limits have been checked, as for every raster.

Orientation: Pillow reports the container's rotation and mirroring (``irot``/``imir``) as an EXIF
orientation and leaves the pixels as stored; it is applied here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyvips
from PIL import Image

from filesvc.thumbnails.imaging import VipsImage, encode
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.result import Rendered, RenderFailed, done

# The pixel limit was checked from the header before this decoder runs; Pillow's own bomb guard
# (a warning past 89 MP, an error past twice that) would only disagree with it.
Image.MAX_IMAGE_PIXELS = None
_ORIENTATION = 0x0112
_BANDS = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}
# Quarter turns clockwise and a left-right mirror (applied first) for EXIF orientations 2-8.
_ORIENT = {2: (0, True), 3: (2, False), 4: (2, True), 5: (1, True), 6: (1, False), 7: (3, True)}
_ORIENT[8] = (3, False)


def _decoded(opened: Image.Image) -> tuple[str, bytes]:
    """The primary image's mode (one of ``_BANDS``) and packed 8-bit pixels.

    Straight from the plugin's decoder when it has the one Pillow 11.3-13 have (libavif's RGB
    buffer, as bytes): ``load()`` then ``tobytes()`` would copy it twice more (two 9 MB buffers
    for a 3 MP photo, about a quarter of the render's CPU, bench/README). Otherwise through
    Pillow's public interface."""
    decoder = getattr(opened, "_decoder", None)
    get_frame = getattr(decoder, "get_frame", None)
    if callable(get_frame) and opened.mode in _BANDS:
        frame = get_frame(0)
        if isinstance(frame, tuple) and frame and isinstance(frame[0], bytes):
            return opened.mode, frame[0]
    opened.load()
    picture = opened
    if opened.mode not in _BANDS:
        picture = opened.convert("RGBA" if "A" in opened.mode else "RGB")
    return picture.mode, picture.tobytes()


@dataclass(frozen=True)
class AvifPlan:
    path: Path
    limits: RenderLimits
    pixels: int

    def render(self) -> Rendered:
        try:
            with Image.open(self.path, formats=["AVIF"]) as opened:
                orientation = opened.getexif().get(_ORIENTATION, 1)
                profile = opened.info.get("icc_profile")
                width, height = opened.size
                mode, pixels = _decoded(opened)
        except (OSError, ValueError, SyntaxError, EOFError):
            raise RenderFailed("image could not be decoded") from None
        if len(pixels) != width * height * _BANDS.get(mode, 0):
            raise RenderFailed("image decoded to an unexpected pixel format")
        image: VipsImage = pyvips.Image.new_from_memory(
            pixels, width, height, _BANDS[mode], "uchar"
        )
        image = image.copy(interpretation="srgb" if _BANDS[mode] >= 3 else "b-w")
        turns, mirror = _ORIENT.get(orientation if isinstance(orientation, int) else 1, (0, False))
        if mirror:
            image = image.fliphor()
        if turns:
            image = image.rot(("d0", "d90", "d180", "d270")[turns])
        box = self.limits
        if isinstance(profile, bytes) and profile:
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
            image = image.thumbnail_image(
                box.box_width, height=box.box_height, size="down", output_profile="srgb"
            )
        else:
            image = image.thumbnail_image(box.box_width, height=box.box_height, size="down")
        return done(encode(image))
