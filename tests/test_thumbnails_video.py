"""Videos through PyAV: the first decodable frame, shown as a player shows it, and nothing that
could make FFmpeg open another file or a network resource.

Every video is encoded here by the FFmpeg in PyAV's wheel, and saved under a name that lies: the
container is decided by the content alone.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
import pyvips

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails
from tests.thumbnail_media import (
    LIMITS,
    RED,
    failed,
    halves,
    make_audio,
    make_video,
    mean_rgb,
    one,
    skipped,
    write,
)

# (FFmpeg muxer, encoder) for each container the issue names; the m4v and 3gp muxers write the
# same ISO-BMFF as mp4, so "ipod" stands for .m4v.
CONTAINERS = {
    "mp4": ("mp4", "libx264"),
    "mov": ("mov", "libx264"),
    "m4v": ("ipod", "libx264"),
    "mkv": ("matroska", "libx264"),
    "webm": ("webm", "libvpx-vp9"),
    "avi": ("avi", "mpeg4"),
    "mpeg": ("mpeg", "mpeg2video"),
    "flv": ("flv", "flv"),
    "wmv": ("asf", "wmv2"),
    "mp4-hevc": ("mp4", "libx265"),
}


def assert_colour(image: pyvips.Image, rgb: tuple[int, int, int]) -> None:
    got = mean_rgb(image)
    assert all(abs(g - w) < 25 for g, w in zip(got, rgb, strict=True)), (got, rgb)


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_every_container_gives_its_first_frame_as_a_jpeg(tmp_path: Path, kind: str) -> None:
    container, codec = CONTAINERS[kind]
    path = write(tmp_path, "clip.txt", make_video(container, codec, 320, 240))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.mime, thumb.width, thumb.height) == ("image/jpeg", 320, 240)
    assert_colour(pyvips.Image.new_from_buffer(thumb.data, ""), RED)
    assert probe_pixels(path, LIMITS) == 320 * 240


def test_large_frames_fit_the_box(tmp_path: Path) -> None:
    path = write(tmp_path, "v", make_video("mp4", "libx264", 1920, 1080, frames=2))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (600, 338)


@pytest.mark.parametrize(
    ("rotation", "size", "white_at"),
    [
        # PyAV's rotation is the display matrix's, counter-clockwise. A phone held upright
        # records a landscape frame with a quarter turn clockwise (-90).
        (-90, (120, 160), "top"),
        (90, (120, 160), "bottom"),
        (180, (160, 120), "right"),
    ],
)
def test_display_rotation_is_honoured(
    tmp_path: Path, rotation: int, size: tuple[int, int], white_at: str
) -> None:
    data = make_video(
        "mp4", "libx264", 160, 120, rotation=rotation, picture=lambda i: halves(160, 120)
    )
    image = pyvips.Image.new_from_buffer(
        one(render_thumbnails(write(tmp_path, "v", data), LIMITS)).data, ""
    )
    assert (image.width, image.height) == size
    w, h = image.width, image.height
    halves_of = {
        "top": (image.crop(0, 0, w, h // 2), image.crop(0, h // 2, w, h - h // 2)),
        "bottom": (image.crop(0, h // 2, w, h - h // 2), image.crop(0, 0, w, h // 2)),
        "right": (image.crop(w // 2, 0, w - w // 2, h), image.crop(0, 0, w // 2, h)),
    }
    white, black = halves_of[white_at]
    assert white.avg() > 200 and black.avg() < 55


def test_sample_aspect_ratio_is_applied(tmp_path: Path) -> None:
    # Anamorphic: 200x200 stored pixels, each twice as wide as tall, shown 400x200.
    data = make_video("matroska", "libx264", 200, 200, sar=Fraction(2, 1))
    thumb = one(render_thumbnails(write(tmp_path, "v", data), LIMITS))
    assert (thumb.width, thumb.height) == (400, 200)


def test_frame_size_over_the_pixel_limit_is_refused_undecoded(tmp_path: Path) -> None:
    path = write(tmp_path, "v", make_video("mp4", "libx264", 640, 480, frames=2))
    assert "640x480" in skipped(render_thumbnails(path, RenderLimits(max_pixels=640 * 480 - 1)))
    assert probe_pixels(path, RenderLimits(max_pixels=640 * 480 - 1)) == 0
    one(render_thumbnails(path, RenderLimits(max_pixels=640 * 480)))


def test_duration_over_the_limit_is_refused_undecoded(tmp_path: Path) -> None:
    path = write(tmp_path, "v", make_video("mp4", "libx264", 64, 64, frames=30, rate=10))
    reason = skipped(render_thumbnails(path, RenderLimits(max_video_seconds=2)))
    assert "over the limit of 2 s" in reason
    one(render_thumbnails(path, RenderLimits(max_video_seconds=3)))


def test_codec_outside_the_whitelist_is_not_decoded(tmp_path: Path) -> None:
    data = make_video("matroska", "ffv1", 64, 64, frames=2, pix_fmt="yuv420p")
    reason = skipped(render_thumbnails(write(tmp_path, "v", data), LIMITS))
    assert reason == "video codec ffv1 is not decoded"


def test_audio_only_file_has_no_thumbnail(tmp_path: Path) -> None:
    assert skipped(render_thumbnails(write(tmp_path, "a.m4a", make_audio()), LIMITS)) == (
        "no video stream"
    )


def test_truncated_video_is_an_error(tmp_path: Path) -> None:
    # mp4 writes its index (moov) last: without it the header cannot be read.
    data = make_video("mp4", "libx264", 320, 240, frames=20)
    failed(render_thumbnails(write(tmp_path, "v", data[: len(data) // 2]), LIMITS))


def test_video_whose_packets_do_not_decode_is_an_error(tmp_path: Path) -> None:
    data = bytearray(make_video("matroska", "libx264", 320, 240, frames=3))
    # Keep the header (about the first 1 KiB), scramble every frame's bytes.
    for i in range(1200, len(data)):
        data[i] ^= 0x5A
    outcome = render_thumbnails(
        write(tmp_path, "v", bytes(data)), RenderLimits(max_video_packets=50)
    )
    assert outcome.thumbnails == () and outcome.reason


# --- nothing outside the file ------------------------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with a valid video segment and records it: a test that sees one
    request has caught a fetch."""

    seen: list[str] = []
    body = b""

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (Recorder,), {"seen": seen, "body": make_video("mpegts", "libx264")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def hostile_inputs(url: str, local: Path) -> dict[str, bytes]:
    return {
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{url}/seg.ts\n"
        f"#EXTINF:1,\nfile:{local}\n#EXT-X-ENDLIST\n".encode(),
        "dash": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
            f"<BaseURL>{url}/</BaseURL><Period><AdaptationSet><Representation id='1'"
            " bandwidth='1'><SegmentList><SegmentURL media='seg.ts'/></SegmentList>"
            "</Representation></AdaptationSet></Period></MPD>"
        ).encode(),
        "concat": f"ffconcat version 1.0\nfile '{url}/seg.ts'\nfile '{local}'\n".encode(),
        "concat-file-url": f"ffconcat version 1.0\nfile 'file:{local}'\n".encode(),
        "sdp": f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nm=video 9 RTP/AVP 96\n"
        f"a=rtpmap:96 H264/90000\na=control:{url}/x\n".encode(),
    }


@pytest.mark.parametrize("kind", ["hls", "dash", "concat", "concat-file-url", "sdp"])
def test_playlists_and_scripts_that_name_other_files_are_never_followed(
    tmp_path: Path, web: tuple[str, list[str]], kind: str
) -> None:
    url, seen = web
    local = write(tmp_path, "local.mp4", make_video("mp4", "libx264", 64, 64))
    path = write(tmp_path, f"list.{kind}", hostile_inputs(url, local)[kind])
    outcome = render_thumbnails(path, LIMITS)
    # Not a video to us (with no converter installed, text is not previewed either): no demuxer
    # that could follow a reference is ever chosen, so nothing was fetched or opened.
    assert outcome.thumbnails == () and outcome.status == "done"
    assert seen == []


def test_movie_with_data_outside_the_file_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_video("mp4", "libx264", 64, 64))
    # The data reference box's one entry ("url ", flags 1 = "in this file"): clear the flag, so
    # that the movie says its samples are elsewhere.
    entry = data.index(b"dref") + 12
    assert data[entry + 4 : entry + 8] == b"url " and data[entry + 11] == 1
    data[entry + 11] = 0
    path = write(tmp_path, "v.mov", bytes(data))
    assert skipped(render_thumbnails(path, LIMITS)) == (
        "video refers to data outside the file; not decoded"
    )
    assert probe_pixels(path, LIMITS) == 0
