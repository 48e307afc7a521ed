"""``fsck --repair`` for a damaged inline row (:mod:`blobstore.inline`), the counterpart of a
blob file's quarantine (:mod:`blobstore.repair`).

The row is checked once more.  When its content matches its name, only the files that claim
another size are broken, and they are marked damaged.  Otherwise its stored bytes (sealed as
they were, so no plaintext reaches a disk that did not hold it) are written to ``quarantine/``
and the row is removed in the transaction that marks its files damaged: it is never served
again, and a later put of the same content finds the name free and stores it afresh instead of
comparing against (or carrying) the damaged bytes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from blobstore import inline, manifests
from blobstore.engine.base import Engine, Tx
from blobstore.fsck_inline import check_row
from blobstore.keyring import KeyRing
from blobstore.layout import fsync_dir
from blobstore.port import BlobBackend
from blobstore.refs import BlobRef

# Marks one file damaged in the caller's transaction (the repairer's bookkeeping with it).
Mark = Callable[[Tx, str, str, bool], Awaitable[None]]


def _write_quarantine(qdir: Path, ref: str, data: bytes) -> Path:
    """The row's bytes as a file in ``qdir`` (a new name if the ref was quarantined before),
    durable before the row goes."""
    qdir.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        dest = qdir / (ref if n == 0 else f"{ref}.{n}")
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            continue
        break
    try:
        with memoryview(data) as view:
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(qdir)
    return dest


async def repair_row(
    db: Engine,
    backend: BlobBackend,
    keys: KeyRing | None,
    ref: BlobRef,
    *,
    quarantine: Path,
    mark: Mark,
) -> str | None:
    """Repair the row of ``ref`` if it has one; None when it has none (the ref lives in the
    backend, or the row is gone).  Otherwise "ok" (content right: only files claiming another
    size were marked) or "quarantined" (bytes set aside, row removed, holders marked)."""
    row = await inline.lookup(db, ref)
    if row is None:
        return None
    why = await check_row(keys, ref, row.size, row.data)
    if why is None:
        async with db.write() as tx:
            claims = await manifests.claimed_sizes(tx, ref)
            wrong = {fid for fid, claim in claims if claim != row.size}
            for h in await manifests.holders(tx, ref):
                if h.file_id in wrong:
                    await mark(tx, h.file_id, h.owner, h.marked_damaged)
        return "ok"
    await asyncio.to_thread(_write_quarantine, quarantine, ref, row.data)
    # A backend copy of the name (stored before the feature) is checked by fsck as a blob of
    # its own: once the row is gone, reads fall through to it, so its holders are not broken.
    backend_copy = await backend.stat(ref) is not None
    async with db.write() as tx:
        if await inline.remove_damaged(tx, row) and not backend_copy:
            for h in await manifests.holders(tx, ref):
                await mark(tx, h.file_id, h.owner, h.marked_damaged)
    return "quarantined"
