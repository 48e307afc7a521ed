"""What fsck reports: the kinds of finding and their severity, a finding, the re-hash selectors,
and the run's counts.  The command and the repairer read these; the checker makes them."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import xxhash

from blobstore.manifests import Holder
from blobstore.refs import BlobRef


class Kind(enum.StrEnum):
    """What a finding is about."""

    MISSING_BLOB = "missing_blob"
    WRONG_SIZE = "wrong_size"
    CORRUPT_BLOB = "corrupt_blob"
    MANIFEST_INCONSISTENT = "manifest_inconsistent"
    ORPHAN_BLOB = "orphan_blob"
    TEMP_LEFTOVER = "temp_leftover"


class Severity(enum.StrEnum):
    """Damage breaks a file; a hint is something a crash or work in progress legitimately leaves."""

    DAMAGE = "damage"
    HINT = "hint"


SEVERITY: dict[Kind, Severity] = {
    Kind.MISSING_BLOB: Severity.DAMAGE,
    Kind.WRONG_SIZE: Severity.DAMAGE,
    Kind.CORRUPT_BLOB: Severity.DAMAGE,
    Kind.MANIFEST_INCONSISTENT: Severity.DAMAGE,
    Kind.ORPHAN_BLOB: Severity.HINT,
    Kind.TEMP_LEFTOVER: Severity.HINT,
}


@dataclass(frozen=True)
class Finding:
    """One thing fsck found.  ``holders`` are the files it breaks (with their companies)."""

    kind: Kind
    message: str
    ref: str | None = None
    file_id: str | None = None
    path: str | None = None
    size: int | None = None
    expected_size: int | None = None
    age: float | None = None
    holders: tuple[Holder, ...] = ()

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.kind]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind.value, "severity": self.severity.value}
        for key in ("ref", "file_id", "path", "size", "expected_size"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.age is not None:
            out["age_seconds"] = round(self.age, 3)
        out["message"] = self.message
        if self.holders or self.severity is Severity.DAMAGE:
            out["files"] = [
                {
                    "file_id": h.file_id,
                    "company_id": h.owner,
                    "slot": h.slot,
                    "marked_damaged": h.marked_damaged,
                }
                for h in self.holders
            ]
        return out


class Progress(Protocol):
    """Where the checker reports how far it got (the CLI draws a bar; tests pass nothing)."""

    def begin(self, phase: str, total: int | None) -> None:
        """A new phase starts; ``total`` items are expected (None: unknown)."""

    def advance(self, items: int, hashed_bytes: int = 0) -> None:
        """``items`` more done, ``hashed_bytes`` more re-hashed."""


Selector = Callable[[BlobRef], bool]


def rehash_none(ref: BlobRef) -> bool:
    """Cheap mode: presence and sizes only."""
    return False


def rehash_all(ref: BlobRef) -> bool:
    """``--full``: re-hash every blob."""
    return True


def rehash_sample(percent: float, seed: int) -> Selector:
    """``--sample``: re-hash about ``percent`` % of blobs, chosen by ``seed`` and the ref alone,
    so the same seed picks the same blobs again (the printed repair command relies on it)."""
    if not 0 < percent <= 100:
        raise ValueError("sample percent must be in (0, 100]")
    threshold = percent / 100 * 2**64

    def pick(ref: BlobRef) -> bool:
        return xxhash.xxh3_64_intdigest(ref.encode(), seed=seed) < threshold

    return pick


@dataclass
class Counts:
    """How much the run looked at (filled in while it runs)."""

    files: int = 0
    referenced: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    by_kind: dict[Kind, int] = field(default_factory=dict)
