"""A cheap, conservative look at a file's first bytes: can it be a format we render?"""

from __future__ import annotations

# Bytes read to decide whether a file can be an image or PDF at all, so that ordinary uploads
# never cost a trip to a worker process.  PDF readers accept "%PDF-" within the first KiB.
SNIFF_BYTES = 1024

_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF, little-endian
    b"MM\x00+",  # BigTIFF, big-endian
)


def may_have_thumbnails(head: bytes) -> bool:
    """Cheap and conservative: False only when the bytes cannot be a format we render."""
    if head.startswith(_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp":  # ISO-BMFF: AVIF/HEIF
        return True
    if b"%PDF-" in head:
        return True
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith(b"<")  # SVG (or other XML/HTML, which the renderer turns down)
