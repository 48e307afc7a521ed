"""Blob references: the algorithm travels in the name, so another can come without a rewrite.

A ref is ``xxh3_128-<32 hex>``.  xxh3 is not collision-resistant, so when two *different* contents
hash alike the second is stored under ``xxh3_128-<32 hex>-<n>`` (n = 1, 2, ...): the base hash still
names the content's hash, and the suffix keeps different contents apart (DESIGN invariant 4).

A ref may also carry a dedup scope, ``xxh3_128-<32 hex>-s<32 hex>[-<n>]``: content is shared only
between puts of one scope.  The scope is opaque here (the service derives it from a tenant with a
keyed hash, so no name on disk is built from client input); the digest is still the content's
own hash, so fsck re-hashes scoped blobs exactly like unscoped ones.  Refs without a scope (made
before scopes existed) stay valid.

A sealed (encrypted at rest) blob is named ``xxh3_128-<32 hex>-e<32 hex>[-<n>]``: the same digest
of the *plaintext*, the scope whose key seals it after ``e`` instead of ``s``.  Plain and sealed
blobs of one content are different blobs, so both kinds live in one store and the ref alone says
how to read a blob (:mod:`blobstore.sealing`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NewType, Protocol

import xxhash

ALGORITHM = "xxh3_128"

BlobRef = NewType("BlobRef", str)

_REF_RE = re.compile(r"^xxh3_128-([0-9a-f]{32})(?:-([se])([0-9a-f]{32}))?(?:-([1-9][0-9]{0,5}))?$")
_SCOPE_RE = re.compile(r"^[0-9a-f]{32}$")

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


def check_scope(scope: str) -> str:
    """Validate a dedup scope (32 lowercase hex digits); raise :class:`InvalidRef` otherwise."""
    if not _SCOPE_RE.match(scope):
        raise InvalidRef(f"not a dedup scope: {scope[:80]!r}")
    return scope


def make_ref(
    hexdigest: str, variant: int = 0, scope: str | None = None, *, sealed: bool = False
) -> BlobRef:
    """The ref of content whose hash is ``hexdigest`` in dedup ``scope`` (None: unscoped);
    ``variant`` > 0 only after a collision.  ``sealed``: the blob is encrypted under the scope's
    key (a sealed blob always has a scope)."""
    if sealed and scope is None:
        raise InvalidRef("a sealed blob needs a scope")
    kind = "e" if sealed else "s"
    scoped = "" if scope is None else f"-{kind}{check_scope(scope)}"
    return BlobRef(f"{ALGORITHM}-{hexdigest}{scoped}" + (f"-{variant}" if variant else ""))


def ref_scope(ref: BlobRef) -> str | None:
    """The dedup scope the ref belongs to, or None for an unscoped ref."""
    m = _REF_RE.match(ref)
    if m is None:
        raise InvalidRef(f"not a blob ref: {ref[:80]!r}")
    return m.group(3)


def is_sealed(ref: BlobRef) -> bool:
    """True when the blob is encrypted at rest (its ref says ``-e<scope>``)."""
    m = _REF_RE.match(ref)
    if m is None:
        raise InvalidRef(f"not a blob ref: {ref[:80]!r}")
    return m.group(2) == "e"


def ref_variant(ref: BlobRef) -> int:
    """The collision variant (0 for the first content with its digest)."""
    m = _REF_RE.match(ref)
    if m is None:
        raise InvalidRef(f"not a blob ref: {ref[:80]!r}")
    return int(m.group(4) or 0)


def ref_digest(ref: BlobRef) -> str:
    """The hex digest the ref names (without any collision suffix)."""
    m = _REF_RE.match(ref)
    if m is None:
        raise InvalidRef(f"not a blob ref: {ref[:80]!r}")
    return m.group(1)


def ref_candidates(
    hexdigest: str, scope: str | None = None, *, sealed: bool = False
) -> Iterator[BlobRef]:
    """Every ref that content with this digest may live under in ``scope``, in the order put
    tries them; made one at a time (almost every put takes the first)."""
    return (make_ref(hexdigest, n, scope, sealed=sealed) for n in range(MAX_COLLISION_VARIANTS))
