"""Videos: one thumbnail of the first decodable frame, through PyAV (its wheel bundles FFmpeg).

Hardening, since FFmpeg is a large attack surface and can open other files by itself:

* The container format is decided by our own look at the magic bytes
  (``sniff.video_container``), and FFmpeg is told to use exactly that demuxer: it never probes,
  so the demuxers that open other files or URLs (HLS and DASH playlists, concat scripts, image
  sequences, ``tee``...) can never be chosen, whatever the bytes say. The accepted demuxers open
  nothing but their input: mov/mp4 with its data references switched off (``enable_drefs=0``, the
  default made explicit), and a movie whose data references point outside the file is refused before
  FFmpeg sees it; Matroska/WebM, AVI, MPEG-PS, MPEG-TS, FLV and ASF/WMV.
* The input is handed over as an open file object, not a name, and ``protocol_whitelist`` names
  no protocol, so a nested open inside the demuxer could not reach the file system or network.
* Only the decoders in ``_DECODERS`` run, also while FFmpeg probes stream parameters
  (``codec_whitelist``).
* Frame size and duration come from the header and are checked against the limits before any
  frame is decoded; at most ``max_video_packets`` packets are read looking for a decodable frame.
  The job's time limit (the pool kills the worker) covers everything else.

The frame is shown as a player would: the stream's sample aspect ratio is applied and its display
matrix's rotation honoured; it is scaled by FFmpeg straight to thumbnail size and encoded as JPEG.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.container
import av.video

from filesvc.thumbnails.imaging import encode, fit_scale, from_rgb, over_limits
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.plan import Plan, Settled
from filesvc.thumbnails.result import Rendered, RenderFailed, done, skipped

# Decoders for the video codecs these containers carry in practice. Anything else (a rare codec,
# an image codec inside a container, subtitles) is not decoded.
_DECODERS = frozenset(
    {
        "h264",
        "hevc",
        "vp8",
        "vp9",
        "libvpx-vp9",
        "av1",
        "libdav1d",
        "mpeg1video",
        "mpeg2video",
        "mpeg4",
        "msmpeg4",
        "msmpeg4v2",
        "msmpeg4v1",
        "h263",
        "flv",
        "wmv1",
        "wmv2",
        "wmv3",
        "vc1",
        "theora",
        "mjpeg",
    }
)
# Demuxer options: nothing outside the input may be opened, and probing stays bounded.
_NO_PROTOCOL = "none"
_PROBE_BYTES = 8 << 20
_PROBE_MICROSECONDS = 5_000_000


class VideoPlan:
    """A movie opened and checked by ``plan``; ``render`` decodes from the same demuxer (opening
    it again would run FFmpeg's stream probing, which decodes frames, twice)."""

    def __init__(
        self, file: BinaryIO, movie: av.container.InputContainer, limits: RenderLimits
    ) -> None:
        self._file, self._movie, self.limits = file, movie, limits
        context = movie.streams.video[0].codec_context
        self.pixels = context.width * context.height

    def close(self) -> None:
        self._movie.close()
        self._file.close()

    def __del__(self) -> None:
        # A plan made only for its pixel count (probe_pixels) is dropped without a render.
        self.close()

    def render(self) -> Rendered:
        try:
            stream = self._movie.streams.video[0]
            frame = _first_frame(self._movie, stream, self.limits)
            width, height = _display_size(frame.width, frame.height, stream.sample_aspect_ratio)
            turns = _clockwise_turns(frame.rotation)
            box_w, box_h = (width, height) if turns % 2 == 0 else (height, width)
            scale = fit_scale(box_w, box_h, self.limits)
            out_w = max(1, round(width * scale))
            out_h = max(1, round(height * scale))
            # FFmpeg's scaler does the colour conversion, the aspect correction and the shrink
            # in one pass; the frame is never held as full-size RGB.
            rgb = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation="AREA")
            plane = rgb.planes[0]
            row = out_w * 3
            data = bytes(plane)
            packed = b"".join(
                data[y * plane.line_size : y * plane.line_size + row] for y in range(out_h)
            )
        finally:
            self.close()
        image = from_rgb(packed, out_w, out_h)
        if turns:
            image = image.rot(("d0", "d90", "d180", "d270")[turns])
        return done(encode(image))


def plan(path: Path, container: str, limits: RenderLimits) -> Plan:
    """Open the container for its header: refuse what the limits forbid before decoding."""
    if container == "mov":
        outside = _mov_outside_reference(path)
        if outside:
            return Settled(skipped("video refers to data outside the file; not decoded"))
    f = path.open("rb")
    try:
        movie = _open(f, container)
    except BaseException:
        f.close()
        raise
    keep = False
    try:
        refusal = _refusal(movie, limits)
        if refusal is not None:
            return Settled(refusal)
        keep = True
        return VideoPlan(f, movie, limits)
    finally:
        if not keep:
            movie.close()
            f.close()


def _refusal(movie: av.container.InputContainer, limits: RenderLimits) -> Rendered | None:
    """Why the header forbids decoding, or None."""
    if not movie.streams.video:
        return skipped("no video stream")
    stream = movie.streams.video[0]
    decoder = stream.codec_context.name
    if decoder not in _DECODERS:
        return skipped(f"video codec {decoder} is not decoded")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1:
        raise RenderFailed("video header has no frame size")
    over = over_limits(width, height, 1, limits)
    if over is not None:
        return over
    seconds = _duration_seconds(movie, stream)
    if seconds is not None and seconds > limits.max_video_seconds:
        return skipped(
            f"video declares {seconds:.0f} s, over the limit of "
            f"{limits.max_video_seconds} s; not decoded"
        )
    return None


def _open(f: BinaryIO, container: str) -> av.container.InputContainer:
    try:
        return av.open(
            f,
            mode="r",
            format=container,
            options={
                "protocol_whitelist": _NO_PROTOCOL,
                "codec_whitelist": ",".join(sorted(_DECODERS)),
                "enable_drefs": "0",
                "probesize": str(_PROBE_BYTES),
                "analyzeduration": str(_PROBE_MICROSECONDS),
            },
            metadata_errors="ignore",
        )
    except av.FFmpegError:
        raise RenderFailed("video header could not be read") from None


def _duration_seconds(
    movie: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if movie.duration is not None and movie.duration > 0:
        return movie.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _first_frame(
    movie: av.container.InputContainer, stream: av.video.stream.VideoStream, limits: RenderLimits
) -> av.VideoFrame:
    """The first frame the decoder gives, skipping packets it cannot decode."""
    stream.thread_type = "SLICE"  # one frame wanted: frame threads would only add latency
    packets = 0
    for packet in movie.demux(stream):
        packets += 1
        if packets > limits.max_video_packets:
            break
        try:
            for frame in stream.codec_context.decode(packet):
                return frame
        except av.InvalidDataError:
            continue
    try:
        for frame in stream.codec_context.decode(None):
            return frame
    except av.FFmpegError:
        pass
    raise RenderFailed("no decodable video frame")


def _display_size(width: int, height: int, sar: Fraction | None) -> tuple[int, int]:
    """The frame's size on screen: non-square pixels are stretched horizontally, as players do."""
    if sar is None or sar <= 0 or sar == 1:
        return width, height
    # A sample aspect ratio is at most a few to one; a forged extreme one must not make a huge
    # or empty picture.
    ratio = min(max(float(sar), 1 / 16), 16.0)
    return max(1, math.floor(width * ratio + 0.5)), height


def _clockwise_turns(rotation: float | int | None) -> int:
    """Quarter turns clockwise that show the frame upright. PyAV reports the display matrix's
    rotation counter-clockwise; angles that are not a multiple of 90 are rounded to one."""
    if not rotation:
        return 0
    return round(-float(rotation) / 90) % 4


# --- QuickTime data references -------------------------------------------------------------------
# A movie's sample data may live in other files, named by data reference entries ("url ", "alis",
# "rsrc", "urn ") without the self-contained flag. FFmpeg follows them only with enable_drefs,
# which stays off; such a movie is refused before FFmpeg opens it at all.

_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"dinf"})
_MAX_BOXES = 10_000


def _mov_outside_reference(path: Path) -> bool:
    """True when the movie's header names data outside the file. Reads the ``moov`` box only."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        moov = _find_box(f, 0, size, b"moov")
        if moov is None:
            return False
        start, end = moov
        if end - start > 64 << 20:
            return True  # a header this large is not a movie we read
        f.seek(start)
        return _drefs_outside(f.read(end - start), 0)


def _find_box(f: BinaryIO, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload start, end) of the first top-level box ``kind`` between start and end."""
    offset, seen = start, 0
    while offset + 8 <= end and seen < _MAX_BOXES:
        seen += 1
        f.seek(offset)
        header = f.read(16)
        size, name = int.from_bytes(header[0:4], "big"), header[4:8]
        body = offset + 8
        if size == 1 and len(header) >= 16:
            size, body = int.from_bytes(header[8:16], "big"), offset + 16
        elif size == 0:
            size = end - offset
        if size < body - offset:
            return None
        if name == kind:
            return body, min(offset + size, end)
        offset += size
    return None


def _drefs_outside(data: bytes, depth: int) -> bool:
    offset = 0
    while offset + 8 <= len(data):
        size, name = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        if size < 8:
            return False
        body = data[offset + 8 : offset + size]
        if name in _CONTAINERS and depth < 8 and _drefs_outside(body, depth + 1):
            return True
        if name == b"dref" and _dref_outside(body):
            return True
        offset += size
    return False


def _dref_outside(body: bytes) -> bool:
    """A ``dref`` box's payload: version/flags, entry count, entries (each a box)."""
    count = int.from_bytes(body[4:8], "big")
    offset = 8
    for _ in range(min(count, 1000)):
        if offset + 12 > len(body):
            return True  # a truncated entry list is not trusted
        size = int.from_bytes(body[offset : offset + 4], "big")
        flags = int.from_bytes(body[offset + 9 : offset + 12], "big")
        if flags & 1 == 0:
            return True  # not self-contained: the data is elsewhere
        if size < 12:
            return True
        offset += size
    return False
