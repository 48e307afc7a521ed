"""Query parameters of the upload routes, in the three spellings docs/api.md accepts.

When several spellings are given, the first in each tuple wins: resumable.js, snake_case, camel.
A malformed value is a 400 naming the parameter; never a 500, never a silent default.
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from filesvc.errors import BadRequest
from filesvc.setting_defaults import MAX_TOTAL_CHUNKS

FILENAME = ("resumableFilename", "filename")
MIME = ("resumableType", "type")
TOTAL_CHUNKS = ("resumableTotalChunks", "total_chunks", "totalChunks")
TOTAL_SIZE = ("resumableTotalSize", "total_size", "totalSize", "total_Size")
CHUNK_NUMBER = ("resumableChunkNumber", "chunk_number", "chunkNumber")
THUMBNAIL_SYNC = ("thumbnail_sync",)

# File names longer than this are refused: no file system stores more, no person types more.
MAX_NAME_LENGTH = 1024
_MIME_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_INT_RE = re.compile(r"^[0-9]{1,19}$")
# SQLite's INTEGER is a signed 64-bit number: a larger value cannot be stored or compared there.
MAX_INTEGER = 2**63 - 1
_TRUE = {"1", "true"}
_FALSE = {"", "0", "false"}
DEFAULT_MIME = "application/octet-stream"


class _Sources:
    """The query string, then (resumable.js' default multipart mode) the form fields sent before
    the file part.  A meaning given in the query wins over any form field."""

    def __init__(self, query: Mapping[str, str], fields: Mapping[str, str]) -> None:
        self.query = query
        self.fields = fields

    def first(self, names: tuple[str, ...]) -> tuple[str, str] | None:
        """(label naming where the value came from, value) of the first spelling given."""
        for kind, source in (("query parameter", self.query), ("form field", self.fields)):
            for name in names:
                value = source.get(name)
                if value is not None:
                    return f"{kind} '{name}'", value
        return None

    def integer(self, names: tuple[str, ...], minimum: int) -> int | None:
        found = self.first(names)
        if found is None:
            return None
        label, raw = found
        if not _INT_RE.match(raw.strip()):
            raise BadRequest(f"{label} must be a whole number, got {raw[:40]!r}")
        value = int(raw)
        if value < minimum:
            raise BadRequest(f"{label} must be at least {minimum}, got {value}")
        if value > MAX_INTEGER:
            raise BadRequest(f"{label} must be at most {MAX_INTEGER}, got {value}")
        return value


def clean_name(raw: str | None, source: str) -> str | None:
    """A file name as metadata (never a path): no control characters, bounded length."""
    if raw is None:
        return None
    if not is_utf8_text(raw):
        raise BadRequest(f"{source} is not valid UTF-8")
    if _CONTROL_RE.search(raw):
        raise BadRequest(f"{source} must not contain control characters")
    if len(raw) > MAX_NAME_LENGTH:
        raise BadRequest(f"{source} is longer than {MAX_NAME_LENGTH} characters")
    return raw


def is_utf8_text(text: str) -> bool:
    """False when ``text`` holds a lone surrogate: what invalid UTF-8 bytes of a header become
    (surrogateescape), or an encoded surrogate in JSON.  Such text cannot be stored or shown."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_query_utf8(raw_query: str) -> None:
    """400 when a percent-decoded query parameter is not UTF-8 (``?filename=%ff%fe.txt``):
    the parsed query would silently hold U+FFFD instead, and store a name nobody sent."""
    if "%" not in raw_query:
        return
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        try:
            name = unquote_to_bytes(key.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("a query parameter name is not valid UTF-8") from None
        try:
            unquote_to_bytes(value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            shown = name[:40] if name.isprintable() else "?"
            raise BadRequest(f"query parameter '{shown}' is not valid UTF-8") from None


def clean_mime(raw: str | None, source: str) -> str | None:
    """A media type ``type/subtype``; parameters such as ``; charset=`` are dropped."""
    if raw is None:
        return None
    bare = raw.split(";", 1)[0].strip()
    if bare == "":
        return None
    if not _MIME_RE.match(bare):
        raise BadRequest(f"{source} must be a media type such as image/png, got {raw[:60]!r}")
    return bare.lower()


def guess_mime(name: str | None) -> str:
    """The media type a file name suggests, or application/octet-stream."""
    if name:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        if guessed:
            return guessed
    return DEFAULT_MIME


@dataclass(frozen=True)
class UploadParams:
    """What the query string of an upload route says."""

    filename: str | None
    mime: str | None
    total_chunks: int | None
    total_size: int | None
    chunk_number: int | None
    thumbnail_sync: bool

    @classmethod
    def parse(
        cls, query: Mapping[str, str], fields: Mapping[str, str] | None = None
    ) -> UploadParams:
        """Validate every parameter; raise BadRequest on the first malformed one.  ``fields``
        are multipart form fields, consulted for what the query does not say."""
        src = _Sources(query, fields or {})
        name = src.first(FILENAME)
        mime = src.first(MIME)
        total_chunks = src.integer(TOTAL_CHUNKS, 1)
        if total_chunks is not None and total_chunks > MAX_TOTAL_CHUNKS:
            raise BadRequest(f"total chunks must be at most {MAX_TOTAL_CHUNKS}")
        chunk_number = src.integer(CHUNK_NUMBER, 1)
        if chunk_number is not None and total_chunks is not None and chunk_number > total_chunks:
            raise BadRequest(
                f"chunk number {chunk_number} is out of range: the file has {total_chunks} chunks"
            )
        sync = src.first(THUMBNAIL_SYNC)
        sync_value = False
        if sync is not None:
            flag = sync[1].strip().lower()
            if flag not in _TRUE | _FALSE:
                raise BadRequest(f"{sync[0]} must be 1, 0, true or false")
            sync_value = flag in _TRUE
        return cls(
            filename=clean_name(name[1], name[0]) if name else None,
            mime=clean_mime(mime[1], mime[0]) if mime else None,
            total_chunks=total_chunks,
            total_size=src.integer(TOTAL_SIZE, 0),
            chunk_number=chunk_number,
            thumbnail_sync=sync_value,
        )

    @staticmethod
    def names() -> frozenset[str]:
        """Every parameter name, in every spelling."""
        return frozenset(
            FILENAME + MIME + TOTAL_CHUNKS + TOTAL_SIZE + CHUNK_NUMBER + THUMBNAIL_SYNC
        )


# The form every id this service hands out has: str(uuid.UUID(raw)) == raw, without the UUID.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_file_id(raw: str) -> str:
    """A file id from the path: a UUID in canonical form, else 400.  (Checked twice per request,
    by the route and the access log: the UUID object showed as 3 % of a 1 MiB range in py-spy.)"""
    if _CANONICAL_UUID.fullmatch(raw):
        return raw
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest("file id must be a UUID") from None


# Company ids are opaque to us (never paths), but bounded and printable so they log safely.
_COMPANY_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def parse_company_id(raw: str) -> str:
    """A company id from the path."""
    if not _COMPANY_RE.match(raw):
        raise BadRequest("company id must be 1-128 letters, digits or _.:@-")
    return raw
