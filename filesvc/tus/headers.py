"""Parsing and validating tus request headers.  Pure: no I/O, every fault a typed ApiError with
the exact message a client sees (tests/test_tus_hostile.py holds the table)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from filesvc.errors import ApiError, BadRequest, UnsupportedMediaType
from filesvc.params import clean_mime, clean_name, parse_file_id

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "concatenation",
    "checksum",
)
# hashlib names clients send (tus-js-client and tuspy send none by default; Uppy may send sha1).
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "sha512", "md5")
PATCH_TYPE = "application/offset+octet-stream"
# Longest header values read: a 64-digit offset is already absurd, and Upload-Metadata only
# carries a name and a type that matter.
MAX_NUMBER_CHARS = 19
MAX_METADATA_CHARS = 8192
MAX_CONCAT_PARTS = 256
_DIGITS = re.compile(r"[0-9]{1,19}")
_KEY = re.compile(r"[!-+\--~]{1,64}")  # visible ASCII but the comma, as the protocol says


class PreconditionFailed(ApiError):
    """The client speaks a tus version this server does not."""

    status = 412


class ChecksumMismatch(ApiError):
    """The bytes of a PATCH do not have the checksum the client sent (tus status 460)."""

    status = 460


class Gone(ApiError):
    status = 410


def check_resumable(headers: Mapping[str, str]) -> None:
    """Every tus request but OPTIONS names the protocol version it speaks."""
    version = headers.get("Tus-Resumable")
    if version is None:
        raise PreconditionFailed(
            "Tus-Resumable header missing: this endpoint speaks tus 1.0.0",
            headers={"Tus-Version": TUS_VERSION},
        )
    if version.strip() != TUS_VERSION:
        raise PreconditionFailed(
            f"tus version {version.strip()[:20]!r} is not supported: send Tus-Resumable: 1.0.0",
            headers={"Tus-Version": TUS_VERSION},
        )


def number(headers: Mapping[str, str], name: str) -> int | None:
    """A non-negative decimal header, or None when absent; anything else is 400."""
    raw = headers.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        raise BadRequest(f"{name} must be a non-negative integer of at most 19 digits")
    return int(text)


def upload_offset(headers: Mapping[str, str]) -> int:
    """The PATCH's ``Upload-Offset``, required."""
    offset = number(headers, "Upload-Offset")
    if offset is None:
        raise BadRequest("Upload-Offset header missing: send the offset the bytes start at")
    return offset


def check_patch_type(headers: Mapping[str, str]) -> None:
    """PATCH bodies (and a creation's body) are ``application/offset+octet-stream``."""
    ctype = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if ctype != PATCH_TYPE:
        raise UnsupportedMediaType(f"send the upload's bytes as Content-Type: {PATCH_TYPE}")


@dataclass(frozen=True)
class Length:
    """What a creation says of the upload's size: known, or deferred (``size`` None)."""

    size: int | None


def creation_length(headers: Mapping[str, str], *, final: bool) -> Length:
    """``Upload-Length`` or ``Upload-Defer-Length: 1``, exactly one (none for a final upload)."""
    size = number(headers, "Upload-Length")
    defer = headers.get("Upload-Defer-Length")
    if defer is not None and defer.strip() != "1":
        raise BadRequest("Upload-Defer-Length must be 1")
    if final:
        if size is not None or defer is not None:
            raise BadRequest("a final upload takes its length from its partial uploads")
        return Length(None)
    if size is not None and defer is not None:
        raise BadRequest("send Upload-Length or Upload-Defer-Length, not both")
    if size is None and defer is None:
        raise BadRequest("Upload-Length header missing (or send Upload-Defer-Length: 1)")
    return Length(size)


@dataclass(frozen=True)
class Metadata:
    """What the service keeps of ``Upload-Metadata``: the file's name and media type."""

    name: str | None = None
    mime: str | None = None


def metadata(headers: Mapping[str, str]) -> Metadata:
    """Decode ``Upload-Metadata`` (``key base64,key base64,key``).  Every value must be valid
    base64; only ``filename``/``name`` and ``filetype``/``type`` are read, and must be UTF-8."""
    raw = headers.get("Upload-Metadata")
    if raw is None or not raw.strip():
        return Metadata()
    if len(raw) > MAX_METADATA_CHARS:
        raise BadRequest(f"Upload-Metadata is longer than {MAX_METADATA_CHARS} characters")
    values: dict[str, bytes] = {}
    for pair in raw.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY.fullmatch(parts[0]):
            raise BadRequest("Upload-Metadata must be comma-separated 'key base64value' pairs")
        key = parts[0]
        if key in values:
            raise BadRequest(f"Upload-Metadata names key {key!r} twice")
        values[key] = _b64(parts[1], key) if len(parts) == 2 else b""
    name_raw = _text(values, "filename") or _text(values, "name")
    mime_raw = _text(values, "filetype") or _text(values, "type")
    name = clean_name(name_raw, "the Upload-Metadata filename")
    mime = clean_mime(mime_raw, "the Upload-Metadata filetype") if mime_raw else None
    return Metadata(name or None, mime)


def _b64(value: str, key: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"Upload-Metadata value of {key!r} is not valid base64") from None


def _text(values: Mapping[str, bytes], key: str) -> str | None:
    value = values.get(key)
    if value is None or value == b"":
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"Upload-Metadata value of {key!r} is not UTF-8 text") from None


@dataclass(frozen=True)
class Checksum:
    """``Upload-Checksum``: the algorithm and the digest the PATCH's bytes must have."""

    algorithm: str
    digest: bytes

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm, usedforsecurity=False)


def checksum(headers: Mapping[str, str]) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``, or None when absent."""
    raw = headers.get("Upload-Checksum")
    if raw is None:
        return None
    parts = raw.strip().split(" ")
    if len(parts) != 2:
        raise BadRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm = parts[0].lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"checksum algorithm {parts[0][:20]!r} is not supported:"
            f" use one of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Upload-Checksum digest is not valid base64") from None
    if len(digest) != hashlib.new(algorithm, usedforsecurity=False).digest_size:
        raise BadRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    """``Upload-Concat``: a partial upload, or a final one made of partial uploads' ids."""

    partial: bool
    parts: tuple[str, ...] = ()


def concat(headers: Mapping[str, str], company_id: str, prefix: str) -> Concat | None:
    """Parse ``Upload-Concat``.  A final upload's parts are upload URLs (absolute, or paths) of
    this company's uploads endpoint; anything else is 400."""
    raw = headers.get("Upload-Concat")
    if raw is None:
        return None
    text = raw.strip()
    if text == "partial":
        return Concat(partial=True)
    if not text.startswith("final;"):
        raise BadRequest("Upload-Concat must be 'partial' or 'final;<upload URLs>'")
    urls = text[len("final;") :].split()
    if not urls:
        raise BadRequest("a final upload names at least one partial upload")
    if len(urls) > MAX_CONCAT_PARTS:
        raise BadRequest(f"a final upload joins at most {MAX_CONCAT_PARTS} partial uploads")
    base = f"{prefix}/companies/{company_id}/uploads/"
    parts: list[str] = []
    for url in urls:
        path = urlsplit(url).path.rstrip("/")
        if not path.startswith(base) or "/" in path[len(base) :]:
            raise BadRequest("Upload-Concat names an upload that is not of this company")
        file_id = parse_file_id(path[len(base) :])
        if file_id in parts:
            raise BadRequest("Upload-Concat names one partial upload twice")
        parts.append(file_id)
    return Concat(partial=False, parts=tuple(parts))


def encode_metadata(name: str | None, mime: str | None) -> str:
    """``Upload-Metadata`` as HEAD answers it: the name and type the file has."""
    pairs = []
    if name:
        pairs.append("filename " + base64.b64encode(name.encode()).decode())
    if mime:
        pairs.append("filetype " + base64.b64encode(mime.encode()).decode())
    return ",".join(pairs)
