"""Cheap, conservative looks at a file's first bytes, with no decoding library imported: the
server uses them to settle most uploads without a job, and the renderer to pick a demuxer."""

from __future__ import annotations

# Bytes read to decide whether a file can be something we preview at all, so that ordinary
# uploads never cost a trip to a worker process.  PDF readers accept "%PDF-" within the first KiB.
SNIFF_BYTES = 1024

_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF, little-endian
    b"MM\x00+",  # BigTIFF, big-endian
)
_OFFICE_MAGIC = (
    b"PK\x03\x04",  # OOXML and ODF are ZIP archives
    bytes.fromhex("d0cf11e0a1b11ae1"),  # OLE2: doc, xls, ppt
    b"{\\rtf",
)
# ISO-BMFF brands of still images (HEIF, AVIF): those files are pictures, not movies.
_IMAGE_BRANDS = frozenset(
    {b"mif1", b"msf1", b"miaf", b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm"}
    | {b"hevs", b"avif", b"avis", b"avci", b"jpeg", b"vvic"}
)
_EBML = b"\x1a\x45\xdf\xa3"
_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_TS_PACKET = 188
# Control characters that never appear in text a person wrote (tab, LF, FF, CR do).
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13}


def may_have_thumbnails(head: bytes, *, office: bool) -> bool:
    """Cheap and conservative: False only when the bytes cannot be a format we preview.
    ``office``: office documents and plain text are previewed (a converter is installed)."""
    if head.startswith(_IMAGE_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp":  # ISO-BMFF: AVIF/HEIF images, MP4/MOV videos
        return True
    if b"%PDF-" in head or video_container(head) is not None:
        return True
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return True  # SVG (or other XML/HTML, which the renderer turns down)
    return office and may_be_office(head)


def may_be_office(head: bytes) -> bool:
    """An office document (ZIP: OOXML/ODF; OLE2: doc/xls/ppt; RTF) or plain text/CSV."""
    return head.startswith(_OFFICE_MAGIC) or is_text(head)


def video_container(head: bytes) -> str | None:
    """The FFmpeg demuxer for a file starting with ``head``, if it is a video container we read:
    mov (MP4, MOV, M4V, 3GP), matroska (MKV, WebM), avi, mpeg (program stream), mpegts, flv or
    asf (WMV)."""
    if head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[0:4], "big")
        end = min(max(box_size, 16), len(head))
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
        return None if brands & _IMAGE_BRANDS else "mov"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mov"  # QuickTime movies written without an ftyp box
    if head.startswith(_EBML):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"
    if len(head) > 2 * _TS_PACKET and all(head[i] == 0x47 for i in range(0, 3 * _TS_PACKET, 188)):
        return "mpegts"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(_ASF):
        return "asf"
    return None


def is_text(head: bytes) -> bool:
    """UTF-8 (or ASCII) text a person wrote: no NUL or other control bytes, and not markup (HTML
    and XML can refer to outside content and are not converted)."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    if not text.strip() or text.lstrip().startswith(b"<"):
        return False
    if any(byte in _CONTROL for byte in text):
        return False
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The sniffed head may end inside a character.
        return exc.start >= len(text) - 3 and exc.reason == "unexpected end of data"
    return True
