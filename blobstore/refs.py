"""Blob references: the algorithm travels in the name, so another can come without a rewrite.

A ref is ``xxh3_128-<32 hex>``.  xxh3 is not collision-resistant, so when two *different* contents
hash alike the second is stored under ``xxh3_128-<32 hex>-<n>`` (n = 1, 2, ...): the base hash still
names the content's hash, and the suffix keeps different contents apart (DESIGN invariant 4).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NewType, Protocol

import xxhash

ALGORITHM = "xxh3_128"

BlobRef = NewType("BlobRef", str)

_REF_RE = re.compile(r"^xxh3_128-([0-9a-f]{32})(?:-([1-9][0-9]{0,5}))?$")

# How many different contents may share one fast hash before we give up; reaching even 2 by
# accident needs a 2^64 birthday event, so anything above a handful means a planted collision.
MAX_COLLISION_VARIANTS = 64


class Hasher(Protocol):
    """An incremental hash: feed bytes with ``update``, read the final digest as hex."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


HasherFactory = Callable[[], Hasher]


def default_hasher() -> Hasher:
    """The production hasher, xxh3_128 (tens of GB/s here, never the bottleneck)."""
    return xxhash.xxh3_128()


class InvalidRef(ValueError):
    """The string is not a blob ref of a known algorithm."""


def parse_ref(text: str) -> BlobRef:
    """Validate ``text`` as a ref and return it typed; raise :class:`InvalidRef` otherwise."""
    if not _REF_RE.match(text):
        raise InvalidRef(f"not a blob ref: {text[:80]!r}")
    return BlobRef(text)


def is_ref(text: str) -> bool:
    """True when ``text`` is a well-formed ref."""
    return _REF_RE.match(text) is not None


def make_ref(hexdigest: str, variant: int = 0) -> BlobRef:
    """The ref of content whose hash is ``hexdigest``; ``variant`` > 0 only after a collision."""
    return BlobRef(f"{ALGORITHM}-{hexdigest}" + (f"-{variant}" if variant else ""))


def ref_digest(ref: BlobRef) -> str:
    """The hex digest the ref names (without any collision suffix)."""
    m = _REF_RE.match(ref)
    if m is None:
        raise InvalidRef(f"not a blob ref: {ref[:80]!r}")
    return m.group(1)


def ref_candidates(hexdigest: str) -> list[BlobRef]:
    """Every ref that content with this digest may live under, in the order put tries them."""
    return [make_ref(hexdigest, n) for n in range(MAX_COLLISION_VARIANTS)]
