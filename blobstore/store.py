"""The verifying choke point: every blob enters here, is hashed once and capped in size.

Dedup never trusts the fast hash alone: on a hit the staged bytes are compared with the stored
blob, and different contents with one hash go to distinct collision variants of the ref.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import cast

from blobstore.errors import CollisionLimit, TooLarge
from blobstore.keyring import UNSCOPED
from blobstore.port import BlobBackend, SealingWriter, Staging, WriteMany, supports
from blobstore.refs import (
    MAX_COLLISION_VARIANTS,
    BlobRef,
    HasherFactory,
    check_scope,
    default_hasher,
    ref_candidates,
)

# Bytes handed to the backend per write.  Larger batches amortise the thread hand-off that a
# per-64KiB write costs (docs/measured.md: it halved throughput); 1 MiB keeps two buffers cheap.
WRITE_BATCH = 1 << 20
# Pieces a batch may gather before they are joined: a stream of tiny pieces (a client sending a
# few bytes per packet) costs an object each, and joining small pieces is cheap.
MAX_PIECES = 64


@dataclass(frozen=True)
class PutResult:
    """What a put stored: the ref, the byte count, and whether a new blob was created."""

    ref: BlobRef
    size: int
    created: bool


class ContentStore:
    """Hashing, size-capping front of a :class:`BlobBackend`."""

    def __init__(self, backend: BlobBackend, hasher: HasherFactory = default_hasher) -> None:
        self.backend = backend
        self._hasher = hasher

    async def put(
        self,
        stream: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        scope: str | None = None,
    ) -> PutResult:
        """Store the stream's bytes and return their ref.  Content is deduplicated only against
        blobs of the same ``scope`` (None: the unscoped refs); a put into another scope writes
        the bytes anew, exactly as for content never seen.  When the backend seals
        (:class:`~blobstore.port.SealingWriter`), the blob is sealed under the scope's key and
        named by a sealed ref (an unscoped put goes to the store-wide scope ``UNSCOPED``).

        Raises TooLarge (nothing stored) when the stream passes ``max_size`` bytes.  If the
        stream raises, the staged bytes are dropped and the error propagates unchanged."""
        if scope is not None:
            check_scope(scope)
        backend = self.backend
        sealed = supports(backend, SealingWriter) and cast(SealingWriter, backend).sealing
        if sealed:
            scope = UNSCOPED if scope is None else scope
            staging = await cast(SealingWriter, backend).stage_sealed(scope)
        else:
            staging = await backend.stage()
        # A batch's pieces go to the backend as they are where it can take them so (no copy of
        # every byte on the event loop), else joined.
        many = cast(WriteMany, staging) if supports(staging, WriteMany) else None
        try:
            hasher = self._hasher()
            size = 0
            pending: list[bytes] = []
            pending_len = 0
            async for piece in stream:
                if not piece:
                    continue
                size += len(piece)
                if max_size is not None and size > max_size:
                    raise TooLarge(max_size)
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
                if many is not None:
                    await many.write_many(pending)
                else:
                    await staging.write(b"".join(pending))
            ref, created = await self._publish(staging, hasher.hexdigest(), scope, sealed)
            return PutResult(ref, size, created)
        finally:
            await asyncio.shield(staging.discard())

    async def put_bytes(self, data: bytes, *, scope: str | None = None) -> PutResult:
        """Store a small in-memory value (a thumbnail, a test fixture)."""

        async def one() -> AsyncIterable[bytes]:
            yield data

        return await self.put(one(), scope=scope)

    async def _publish(
        self, staging: Staging, digest: str, scope: str | None, sealed: bool
    ) -> tuple[BlobRef, bool]:
        for ref in ref_candidates(digest, scope, sealed=sealed):
            if await staging.publish(ref):
                return ref, True
            # A blob already has this name: trust it only if its bytes are ours.
            if await staging.same_as(ref):
                return ref, False
            # Gone meanwhile (gc) — publish takes the name on the next round; else a collision.
            if await staging.publish(ref):
                return ref, True
        raise CollisionLimit(f"more than {MAX_COLLISION_VARIANTS} contents share {digest}")
