"""Inputs for the renderer tests, all generated here (pyvips for rasters, pillow-heif's HEVC encoder
for HEIC, hand-written bytes for PDFs), and the checks every renderer test uses."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pillow_heif
import pyvips
from PIL import Image

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.result import Rendered, Thumbnail

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


def decode(thumb: Thumbnail) -> pyvips.Image:
    """Re-decode a thumbnail and check that its fields describe its bytes."""
    image = pyvips.Image.new_from_buffer(thumb.data, "")
    assert MIME_OF_LOADER[image.get("vips-loader")] == thumb.mime
    assert (image.width, image.height) == (thumb.width, thumb.height)
    assert image.format == "uchar"
    assert 0 < thumb.width <= LIMITS.box_width
    assert 0 < thumb.height <= LIMITS.box_height
    return image


def one(outcome: Rendered) -> Thumbnail:
    assert outcome.status == "done", outcome.reason
    assert outcome.reason is None
    assert len(outcome.thumbnails) == 1
    decode(outcome.thumbnails[0])
    return outcome.thumbnails[0]


def skipped(outcome: Rendered) -> str:
    """The outcome is `done` without thumbnails; returns its reason."""
    assert outcome.status == "done"
    assert outcome.thumbnails == ()
    assert outcome.reason
    return outcome.reason


def failed(outcome: Rendered) -> str:
    assert outcome.status == "error"
    assert outcome.thumbnails == ()
    assert outcome.reason
    return outcome.reason


def mean_rgb(image: pyvips.Image) -> tuple[float, ...]:
    return tuple(float(image.extract_band(band).avg()) for band in range(3))


SAVERS: dict[str, Callable[[pyvips.Image], bytes]] = {
    "jpeg": lambda image: image.jpegsave_buffer(),
    "png": lambda image: image.pngsave_buffer(compression=1),
    "gif": lambda image: image.gifsave_buffer(),
    "webp": lambda image: image.webpsave_buffer(),
    "tiff": lambda image: image.tiffsave_buffer(),
    "avif": lambda image: image.heifsave_buffer(compression="av1", effort=0),
}


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


# --- videos ------------------------------------------------------------------------------------

RED, BLUE = (220, 30, 30), (30, 30, 220)


def make_video(
    container: str,
    codec: str,
    width: int = 320,
    height: int = 240,
    *,
    frames: int = 5,
    rate: int = 10,
    rotation: int | None = None,
    sar: Fraction | None = None,
    pix_fmt: str = "yuv420p",
    picture: Callable[[int], pyvips.Image] | None = None,
) -> bytes:
    """A real video encoded by the FFmpeg in PyAV's wheel. By default the first frame is red and
    every later one blue, so a thumbnail shows which frame it came from."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as movie:
        stream = movie.add_stream(codec, rate=rate)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            image = picture(index) if picture else solid(width, height, RED if index == 0 else BLUE)
            frame = av.VideoFrame(width, height, "rgb24")
            rows, stride = image.write_to_memory(), frame.planes[0].line_size
            pad = bytes(stride - width * 3)
            frame.planes[0].update(
                b"".join(rows[y * width * 3 : (y + 1) * width * 3] + pad for y in range(height))
            )
            for packet in stream.encode(frame):
                movie.mux(packet)
        for packet in stream.encode():
            movie.mux(packet)
    return out.getvalue()


def make_audio(container: str = "mp4", codec: str = "aac") -> bytes:
    """A second of silence with no video stream."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as movie:
        stream = movie.add_stream(codec, rate=44100)
        assert isinstance(stream, av.audio.stream.AudioStream)
        for index in range(44):
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = 44100, index * 1024
            for packet in stream.encode(frame):
                movie.mux(packet)
        for packet in stream.encode():
            movie.mux(packet)
    return out.getvalue()
