"""``blobstore encrypt``: seal the blobs written before encryption at rest, online.

Each plain blob a manifest references is read, sealed under its scope's key (the store-wide
``UNSCOPED`` key for blobs older than dedup scopes) as a new blob, checked to hold the content its
name says, and swapped in for the plain one in every manifest that holds it, file by file under
the manifest's lock (the same lock every change to a file takes).  Then the plain blob is deleted
under gc's lock, exclusively, if nothing references it any more, exactly as gc deletes: an
upload that deduplicated against it meanwhile fails its commit with "send it again" rather than
commit a reference to nothing.

Every step is its own transaction, so the command can be stopped (or killed) at any point and
run again: it picks up the plain blobs still referenced.  A kill leaves at most one sealed blob
no manifest references yet, or one plain blob no manifest references any more: orphans, which
fsck reports as hints and gc reclaims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from blobstore import confirmations, inline, manifests
from blobstore.engine.base import Engine
from blobstore.errors import BlobCorrupt, BlobNotFound
from blobstore.keyring import UNSCOPED
from blobstore.refs import BlobRef, is_sealed, ref_digest, ref_scope
from blobstore.sealed import SealedBackend
from blobstore.store import ContentStore, InlineStore


@dataclass
class EncryptReport:
    """What a run did."""

    plain: int = 0  # plain blobs referenced when the run started
    sealed: int = 0
    sealed_bytes: int = 0
    removed: int = 0  # plain blobs deleted once no manifest held them
    missing: list[BlobRef] = field(default_factory=list)
    corrupt: list[BlobRef] = field(default_factory=list)


Progress = Callable[[int, int], None]


async def plain_refs(db: Engine) -> list[BlobRef]:
    """The plain blobs manifests reference, in a stable order."""
    async with db.read() as tx:
        found = {ref async for _, ref, _ in manifests.referenced(tx) if not is_sealed(ref)}
    return sorted(found)


async def encrypt_store(
    db: Engine, backend: SealedBackend, *, progress: Progress | None = None
) -> EncryptReport:
    """Seal every referenced plain blob (see the module's doc).  ``backend`` must be sealing."""
    if not backend.sealing:
        raise ValueError("encrypt needs a sealing backend (encryption on)")
    # Plain inline rows are read (and then deleted) like plain blob files; the sealed copies
    # go to the blob store (this command commits no rows of its own).
    store = ContentStore(backend, inline=InlineStore(db, 0, backend.keys))
    todo = await plain_refs(db)
    report = EncryptReport(plain=len(todo))
    for n, ref in enumerate(todo, 1):
        await _seal_one(db, backend, store, ref, report)
        if progress is not None:
            progress(n, len(todo))
    return report


async def _seal_one(
    db: Engine, backend: SealedBackend, store: ContentStore, ref: BlobRef, report: EncryptReport
) -> None:
    scope = ref_scope(ref) or UNSCOPED
    try:
        put = await store.put(store.read_any(ref), scope=scope)
    except BlobNotFound:
        report.missing.append(ref)
        return
    except BlobCorrupt:
        report.corrupt.append(ref)
        return
    if ref_digest(put.ref) != ref_digest(ref):
        # The stored bytes are not the content the name says: leave it to fsck --repair (the
        # sealed copy just written is an orphan for gc).
        report.corrupt.append(ref)
        return
    now = int(time.time() * 1000)
    async with db.read() as tx:
        holders = sorted({h.file_id for h in await manifests.holders(tx, ref)})
    for file_id in holders:
        async with db.write() as tx:
            await confirmations.confirm(tx, backend, [put.ref], now_ms=now)
            if await manifests.lock(tx, file_id) is not None:
                await manifests.replace_ref(tx, file_id, ref, put.ref)
    report.sealed += 1
    report.sealed_bytes += put.size
    async with db.write() as tx:
        await confirmations.lock_for_gc(tx)
        if not await manifests.is_referenced(tx, ref):
            await inline.delete(tx, [ref])
            await backend.delete(ref)
            await confirmations.forget(tx, [ref])
            report.removed += 1
