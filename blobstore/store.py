"""The verifying choke point: every blob enters here, is hashed once and capped in size.

Dedup never trusts the fast hash alone: on a hit the staged bytes are compared with the stored
blob, and different contents with one hash go to distinct collision variants of the ref.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import cast

from blobstore.blobcache import BlobCache
from blobstore.engine.base import Engine
from blobstore.errors import BlobCorrupt, CollisionLimit, TooLarge
from blobstore.inline import CEILING, InlineRow, fingerprint, lookup, open_range, plain
from blobstore.keyring import UNSCOPED, KeyRing
from blobstore.port import (
    BlobBackend,
    SealingWriter,
    Staging,
    WriteMany,
    supports,
)
from blobstore.refs import (
    MAX_COLLISION_VARIANTS,
    BlobRef,
    Hasher,
    HasherFactory,
    check_scope,
    default_hasher,
    is_sealed,
    ref_candidates,
    ref_scope,
)
from blobstore.sealed_trailers import VerifiedTrailers
from blobstore.sealing import TAG, TRAILER, Sealer

# Bytes handed to the backend per write.  Larger batches amortise the thread hand-off that a
# per-64KiB write costs (docs/measured.md: it halved throughput); 1 MiB keeps two buffers cheap.
WRITE_BATCH = 1 << 20
# Pieces a batch may gather before they are joined: a stream of tiny pieces (a client sending a
# few bytes per packet) costs an object each, and joining small pieces is cheap.
MAX_PIECES = 64


@dataclass(frozen=True)
class PutResult:
    """What a put stored: the ref, the byte count, and whether a new blob was created.
    ``inline``: the blob's row when it is kept in the database rather than the backend
    (:mod:`blobstore.inline`); the caller inserts it with the manifest rows that use it."""

    ref: BlobRef
    size: int
    created: bool
    inline: InlineRow | None = None
    # The row took a free name without asking the backend (``defer_name_check``): its commit
    # must check (``confirmations.confirm(unchecked=...)``).
    unchecked: bool = False


def unchecked_refs(*puts: PutResult) -> set[BlobRef]:
    """The refs of the puts whose rows' names the commit must check in the backend."""
    return {p.ref for p in puts if p.inline is not None and p.unchecked}


def inline_refs(*puts: PutResult) -> set[BlobRef]:
    """The refs of the puts kept inline (for :func:`blobstore.confirmations.confirm`)."""
    return {p.ref for p in puts if p.inline is not None}


@dataclass(frozen=True)
class InlineStore:
    """Where small blobs go instead of the backend: the metadata database, rows up to
    ``max_bytes`` stored bytes (0: none; existing rows are still read and deduplicated
    against), and the key ring that seals them."""

    db: Engine
    max_bytes: int
    keys: KeyRing | None


class ContentStore:
    """Hashing, size-capping front of a :class:`BlobBackend` (and of the inline rows)."""

    def __init__(
        self,
        backend: BlobBackend,
        hasher: HasherFactory = default_hasher,
        *,
        inline: InlineStore | None = None,
        cache: BlobCache | None = None,
    ) -> None:
        self.backend = backend
        self._hasher = hasher
        self.inline = inline
        # The backend's blob cache, if it keeps one: downloads read inline rows through it too
        # (blobstore.inline_cached).
        self.cache = cache if cache is not None and cache.enabled else None
        self._trailers = VerifiedTrailers()  # the inline rows' (downloads read them often)

    def _inline_limit(self, sealed: bool) -> int:
        """The largest plaintext a put may keep inline (0: none)."""
        if self.inline is None or self.inline.max_bytes <= 0:
            return 0
        overhead = (TAG + TRAILER) if sealed else 0
        return max(0, min(self.inline.max_bytes, CEILING) - overhead)

    async def put(
        self,
        stream: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        scope: str | None = None,
        inline: bool = False,
        defer_name_check: bool = False,
        size: int | None = None,
    ) -> PutResult:
        """Store the stream's bytes and return their ref.  Content is deduplicated only against
        blobs of the same ``scope`` (None: the unscoped refs); a put into another scope writes
        the bytes anew, exactly as for content never seen.  When the backend seals
        (:class:`~blobstore.port.SealingWriter`), the blob is sealed under the scope's key and
        named by a sealed ref (an unscoped put goes to the store-wide scope ``UNSCOPED``).

        ``inline``: the caller commits ``PutResult.inline`` with its manifest rows, so a small
        blob may be kept in the database (nothing is written to the backend then).
        ``defer_name_check``: a row may take a name no row has without asking the backend
        whether a blob has it (a stat, a HEAD on S3); the result says so (``unchecked``), and
        the caller's commit checks instead (:func:`blobstore.confirmations.confirm`), puts
        again with :meth:`recheck` when it raises NameInBackend.

        ``size``: the stream's exact length, when it is known before its first byte (a raw
        body's Content-Length), so a backend may send a large blob as one request (S3); a
        stream that yields another length raises ValueError, and nothing is stored.

        Raises TooLarge (nothing stored) when the stream passes ``max_size`` bytes.  If the
        stream raises, the staged bytes are dropped and the error propagates unchanged."""
        if scope is not None:
            check_scope(scope)
        if size is not None and max_size is not None and size > max_size:
            raise TooLarge(max_size)
        sealed = supports(self.backend, SealingWriter) and cast(SealingWriter, self.backend).sealing
        if sealed:
            scope = UNSCOPED if scope is None else scope
        hasher = self._hasher()
        pieces = aiter(stream)
        gathered: list[bytes] = []
        taken = 0
        limit = self._inline_limit(sealed) if inline else 0
        if limit:
            # Gather what fits inline; past it, the bytes go on to the backend as usual.
            async for piece in pieces:
                if not piece:
                    continue
                taken += len(piece)
                if max_size is not None and taken > max_size:
                    raise TooLarge(max_size)
                hasher.update(piece)
                gathered.append(piece)
                if taken > limit:
                    break
            else:
                _check_length(size, taken)
                data = b"".join(gathered)
                digest = hasher.hexdigest()
                done = await self._put_inline(data, digest, scope, sealed, defer_name_check)
                if done is not None:
                    return done
                gathered = [data]  # a backend blob has the name: dedup against it there
        return await self._put_staged(
            pieces, gathered, taken, hasher, max_size, scope, sealed, size
        )

    async def _put_staged(
        self,
        stream: AsyncIterator[bytes],
        gathered: list[bytes],
        size: int,
        hasher: Hasher,
        max_size: int | None,
        scope: str | None,
        sealed: bool,
        announced: int | None,
    ) -> PutResult:
        backend = self.backend
        _check_not_past(announced, size)
        if sealed:
            assert scope is not None
            staging = await cast(SealingWriter, backend).stage_sealed(scope, announced)
        else:
            staging = await backend.stage(announced)
        # A batch's pieces go to the backend as they are where it can take them so (no copy of
        # every byte on the event loop), else joined.
        many = cast(WriteMany, staging) if supports(staging, WriteMany) else None
        try:
            pending: list[bytes] = list(gathered)
            pending_len = size
            small: bytes | None = None
            async for piece in stream:
                if not piece:
                    continue
                size += len(piece)
                if max_size is not None and size > max_size:
                    raise TooLarge(max_size)
                _check_not_past(announced, size)
                hasher.update(piece)
                pending.append(piece)
                pending_len += len(piece)
                if pending_len >= WRITE_BATCH:
                    if many is not None:
                        await many.write_many(pending)
                    else:
                        await staging.write(b"".join(pending))
                    pending = []  # handed over: the staging may keep the list until written
                    pending_len = 0
                elif len(pending) >= MAX_PIECES:
                    pending = [b"".join(pending)]
            if pending:
                if size == pending_len and size <= CEILING and self.inline is not None:
                    # Whole and small: kept to compare with an inline row of the same name.
                    small = b"".join(pending)
                    pending = [small]
                if many is not None:
                    await many.write_many(pending)
                else:
                    await staging.write(b"".join(pending))
            _check_length(announced, size)
            ref, created = await self._publish(staging, hasher.hexdigest(), scope, sealed, small)
            return PutResult(ref, size, created)
        finally:
            await asyncio.shield(staging.discard())

    async def put_bytes(
        self, data: bytes, *, scope: str | None = None, inline: bool = False
    ) -> PutResult:
        """Store a small in-memory value (a thumbnail, a test fixture)."""

        async def one() -> AsyncIterable[bytes]:
            yield data

        return await self.put(one(), scope=scope, inline=inline)

    async def recheck(self, put: PutResult, *, scope: str | None) -> PutResult:
        """``put`` (an unchecked inline put, of ``scope``) made again with the backend asked:
        a dedup hit on its blob there, or the next free name."""
        assert put.inline is not None and self.inline is not None
        data = await plain(self.inline.keys, put.ref, put.inline.data)
        return await self.put_bytes(data, scope=scope, inline=True)

    async def _put_inline(
        self, data: bytes, digest: str, scope: str | None, sealed: bool, defer: bool = False
    ) -> PutResult | None:
        """Name ``data`` for an inline row: a row of the same content is a dedup hit (its bytes
        compared, never its hash trusted), a row of another content passes to the next collision
        variant.  None when a backend blob already has the free name (then the backend path
        deduplicates against it)."""
        inline = self.inline
        assert inline is not None
        key = None
        if sealed:
            assert scope is not None and inline.keys is not None
            key = await inline.keys.key(scope, create=True)
        for ref in ref_candidates(digest, scope, sealed=sealed):
            row = await lookup(inline.db, ref)
            if row is not None:
                if await plain(inline.keys, ref, row.data) == data:
                    return PutResult(ref, len(data), False, row)
                continue
            if not defer and await self.backend.stat(ref) is not None:
                return None
            stored = data
            if key is not None:
                assert scope is not None
                sealer = Sealer(key)
                stored = sealer.feed(data) + sealer.finish(digest, scope)
            fp = fingerprint(key, data)
            return PutResult(ref, len(data), True, InlineRow(ref, len(data), fp, stored), defer)
        raise CollisionLimit(f"more than {MAX_COLLISION_VARIANTS} contents share {digest}")

    async def _inline_differs(self, ref: BlobRef, small: bytes | None) -> bool:
        """True when an inline row holds another content under ``ref`` (the backend must not
        take that name).  Only small contents can have a row."""
        if small is None or self.inline is None:
            return False
        row = await lookup(self.inline.db, ref)
        return row is not None and await plain(self.inline.keys, ref, row.data) != small

    async def inline_range(
        self, ref: BlobRef, stored: bytes, start: int, end: int
    ) -> bytes | bytearray:
        """Bytes ``[start, end)`` of an inline blob whose stored bytes are at hand (a download's
        view query brought them): opened and checked when sealed."""
        if not is_sealed(ref):
            return stored[start:end] if start or end < len(stored) else stored
        keys = None if self.inline is None else self.inline.keys
        if keys is None:
            raise BlobCorrupt(f"{ref} is sealed and no key ring is at hand")
        scope = ref_scope(ref)
        assert scope is not None
        key = await keys.key(scope, create=False)
        return open_range(self._trailers, key, ref, stored, start, end)

    async def is_inline(self, ref: BlobRef) -> bool:
        """True when the blob is an inline row."""
        return self.inline is not None and await lookup(self.inline.db, ref) is not None

    async def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> bytes | None:
        """A small blob's bytes ``[start, end)`` from its inline row, or None when it has none
        (then the backend holds it)."""
        if self.inline is None:
            return None
        row = await lookup(self.inline.db, ref)
        if row is None:
            return None
        return (await plain(self.inline.keys, ref, row.data))[start:end]

    async def read_any(
        self, ref: BlobRef, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The blob's bytes ``[start, end)`` wherever it lives (inline row, else the backend)."""
        small = await self.read(ref, start, end)
        if small is not None:
            if small:
                yield small
            return
        async for piece in self.backend.read(ref, start, end):
            yield piece

    async def _publish(
        self, staging: Staging, digest: str, scope: str | None, sealed: bool, small: bytes | None
    ) -> tuple[BlobRef, bool]:
        for ref in ref_candidates(digest, scope, sealed=sealed):
            if await self._inline_differs(ref, small):
                continue
            if await staging.publish(ref):
                return ref, True
            # A blob already has this name: trust it only if its bytes are ours.
            if await staging.same_as(ref):
                return ref, False
            # Gone meanwhile (gc) — publish takes the name on the next round; else a collision.
            if await staging.publish(ref):
                return ref, True
        raise CollisionLimit(f"more than {MAX_COLLISION_VARIANTS} contents share {digest}")


def _check_not_past(announced: int | None, taken: int) -> None:
    """ValueError when a stream announced as ``announced`` bytes has yielded more already."""
    if announced is not None and taken > announced:
        _check_length(announced, taken)


def _check_length(announced: int | None, taken: int) -> None:
    """ValueError when a stream announced as ``announced`` bytes yielded ``taken``."""
    if announced is not None and taken != announced:
        raise ValueError(f"the stream yielded {taken} bytes, not the {announced} announced")
