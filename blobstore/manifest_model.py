"""The values manifests are made of, and the pure rule of when a set of chunks is whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from blobstore.refs import BlobRef

Slot = Literal["chunk", "staged", "thumb"]
UploadKind = Literal["upload", "overwrite"]


@dataclass(frozen=True)
class Entry:
    """One blob of a manifest."""

    idx: int
    ref: BlobRef
    size: int
    attrs: dict[str, object] | None = None
    # The blob's stored bytes when it is an inline row (blobstore.inline) and the query that
    # read the entry fetched them with it (a download's view); None otherwise.
    inline: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Head:
    """A manifest's header: its opaque owner tag and what the content should add up to."""

    file_id: str
    owner: str
    expected_chunks: int | None
    expected_size: int | None
    complete: bool
    damaged: bool
    updated_at: int


@dataclass(frozen=True)
class NewManifest:
    """A manifest created whole in one go, with at most one live entry (group commit)."""

    file_id: str
    owner: str
    expected_chunks: int | None
    expected_size: int | None
    complete: bool
    now_ms: int
    entry: tuple[int, BlobRef, int] | None  # (index, ref, size)


@dataclass(frozen=True)
class StagedSession:
    """Who (an opaque tag) is filling the ``staged`` slot, and what it must add up to."""

    chunks: int | None
    size: int | None
    owner: str | None
    entries: int
    updated_at: int


@dataclass(frozen=True)
class Completeness:
    """Where a set of chunks stands against what they should add up to."""

    stored_chunks: int
    stored_size: int
    missing: tuple[int, ...]
    complete: bool


def completeness(
    entries: Sequence[Entry], expected_chunks: int, expected_size: int | None
) -> Completeness:
    """Pure: the chunks are complete when numbers 1..N are all present and, when a total size is
    known, their sizes add up to it exactly."""
    have = {e.idx for e in entries}
    missing = tuple(i for i in range(1, expected_chunks + 1) if i not in have)
    stored = sum(e.size for e in entries)
    extra = any(e.idx < 1 or e.idx > expected_chunks for e in entries)
    size_ok = expected_size is None or stored == expected_size
    return Completeness(len(entries), stored, missing, not missing and not extra and size_ok)


@dataclass(frozen=True)
class Holder:
    """A file that holds a ref: who a damaged blob breaks.  ``owner`` is the manifest's tag."""

    file_id: str
    owner: str
    slot: str
    marked_damaged: bool


@dataclass(frozen=True)
class PendingUpload:
    """An upload that is not whole yet: a new file (``upload``: the manifest is incomplete) or
    an overwrite of a complete file (``overwrite``: staged entries or a staged size).  ``entries``
    are the (idx, ref) pairs of the slot being filled, the upload's fingerprint."""

    file_id: str
    owner: str
    kind: UploadKind
    updated_at: int
    entries: tuple[tuple[int, BlobRef], ...]


@dataclass(frozen=True)
class Totals:
    """What the manifests add up to (stat)."""

    files: int
    complete: int
    damaged: int
    entries: int
    logical_bytes: int
    distinct_refs: int
    distinct_bytes: int
