"""Every limit of the thumbnail feature, defined once: the renderers, the pool, the job runner and
the settings' defaults all read them from here."""

from __future__ import annotations

from dataclasses import dataclass, fields

# docs/api.md: every thumbnail fits inside 600x400.
DEFAULT_BOX_WIDTH = 600
DEFAULT_BOX_HEIGHT = 400
# About 100 MP: a 24 MP phone photo or a 50 MP camera raw export passes with room to spare; a
# 50000x50000 PNG bomb (2.5 GP, 0.3 MB on disk) does not. A video frame is held to it too (an
# 8K frame is 33 MP).
DEFAULT_MAX_PIXELS = 100_000_000
# Pages or frames a header may declare. Only the first is decoded, but some loaders (GIF) walk
# every frame to count them, and a 100k-frame GIF is a denial of service, not a picture.
DEFAULT_MAX_FRAMES = 1000
# docs/api.md: one thumbnail per PDF page, up to 10 pages (office documents go through the same
# path).
DEFAULT_MAX_PDF_PAGES = 10
# Bytes a file may have for us to look at it. The pixel limit bounds memory, not reading time:
# decoders are linear in their input, and input that carries no pixels (PNG ancillary chunks,
# unused TIFF pages, a PDF whose broken xref PDFium repairs by scanning everything) is not bounded
# by it. 512 MiB still admits an uncompressed 8-bit RGBA image at max_pixels (400 MB); reading it
# costs about half a second. Videos are larger: only their header and first frame are read, so
# they are not held to it (see DEFAULT_MAX_VIDEO_SECONDS).
DEFAULT_MAX_INPUT_BYTES = 512 << 20
# Bytes an SVG may have. It is read into memory, checked by an XML parser in Python and parsed
# again by librsvg, whose own parser stops at 10 MB text nodes; real icons and diagrams are far
# smaller.
DEFAULT_MAX_SVG_BYTES = 10 << 20
# A video whose header declares a longer duration is not decoded: a day of footage is not a clip
# anyone previews, and a forged duration is how a demuxer is led to build a huge index.
DEFAULT_MAX_VIDEO_SECONDS = 24 * 3600
# Packets read before the first frame must have been decoded: a stream of undecodable packets
# (or of another stream's) must not keep a worker busy until the job's time limit.
DEFAULT_MAX_VIDEO_PACKETS = 2000
# Office documents larger than this are not converted: LibreOffice's time and memory grow with
# the document, and a 64 MiB .docx is already mostly embedded media.
DEFAULT_MAX_OFFICE_BYTES = 64 << 20
# Seconds one LibreOffice conversion may run before its process is killed. A 3-page document
# converts in about a second here (docs/measured.md); 30 s leaves room for a long spreadsheet and
# stays below the job's own limit (FILESVC_THUMB_JOB_TIMEOUT, 60 s), so the converter is killed
# by the worker, which then reports why, rather than with it.
DEFAULT_OFFICE_SECONDS = 30
# Address space one LibreOffice process may map. soffice.bin maps about 600 MiB to convert a
# small document; 2 GiB lets a large one through and stops one that explodes.
DEFAULT_OFFICE_MEMORY_BYTES = 2 << 30


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
    max_video_seconds: int = DEFAULT_MAX_VIDEO_SECONDS
    max_video_packets: int = DEFAULT_MAX_VIDEO_PACKETS
    max_office_bytes: int = DEFAULT_MAX_OFFICE_BYTES
    office_seconds: int = DEFAULT_OFFICE_SECONDS
    office_memory_bytes: int = DEFAULT_OFFICE_MEMORY_BYTES

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"RenderLimits.{field.name} must be at least 1")

    def to_json(self) -> dict[str, int]:
        """The limits as a JSON object (the worker protocol carries them with each request)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_json(cls, raw: object) -> RenderLimits:
        """Limits from ``to_json``'s output; unknown keys are ignored, missing ones default."""
        known = {field.name for field in fields(cls)}
        values = raw if isinstance(raw, dict) else {}
        return cls(**{k: int(v) for k, v in values.items() if k in known})
