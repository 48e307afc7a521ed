"""How the S3 backend names a large blob without copying it: a pointer object.

A large blob streams to ``data/<name>`` (one PUT or a multipart upload), because its ref is
known only once the last byte has passed.  Publishing it then writes, with the same conditional
create as a small blob (``If-None-Match: *``), a pointer object at ``blobs/<ref>``: a fixed-size
body naming the data object and its size, with its own Content-Type.  A ref therefore names one
object either way, and "exists" still decides dedup races, without a server-side copy of the
bytes (SeaweedFS copies them: as long as half the upload itself, docs/storage-s3.md).

No upload can pose as a pointer: the service never sets that Content-Type on content, and a
pointer is recognised by its Content-Type and its exact size and form together.
"""

from __future__ import annotations

import re

# The Content-Type of a pointer object; uploaded content is stored without one.
POINTER_TYPE = "application/vnd.filesvc.blob-pointer"
_HEAD = "filesvc-blob-pointer/1"
_BODY_RE = re.compile(rf"^{re.escape(_HEAD)} ([0-9a-f]{{32}}) ([0-9]{{20}})\n$")


def encode(name: str, size: int) -> bytes:
    """The pointer to data object ``name`` holding ``size`` bytes."""
    return f"{_HEAD} {name} {size:020d}\n".encode()


# Every pointer has this size, so a scan needs to read only the objects of exactly this size.
POINTER_SIZE = len(encode("0" * 32, 0))


def decode(body: bytes, content_type: str | None) -> tuple[str, int] | None:
    """(data object name, size) if ``body`` with ``content_type`` is a pointer, else None."""
    if content_type != POINTER_TYPE or len(body) != POINTER_SIZE:
        return None
    m = _BODY_RE.match(body.decode("ascii", "replace"))
    if m is None:
        return None
    return m.group(1), int(m.group(2))
