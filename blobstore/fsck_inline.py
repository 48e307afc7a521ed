"""fsck's pass over the inline rows (:mod:`blobstore.inline`): the same findings as for the
backend's blobs (orphan, corrupt when re-hashed, wrong size), each damaged row mapped to the
files that hold it by the checker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from blobstore import inline
from blobstore.engine.base import Engine
from blobstore.errors import BlobStoreError
from blobstore.findings import Finding, Kind, Selector
from blobstore.keyring import KeyRing
from blobstore.port import BlobInfo
from blobstore.refs import BlobRef, default_hasher, ref_digest


@dataclass
class InlineScan:
    """What the pass saw: every row's ref (the checker then stops waiting for them), and the
    rows to report once their holders are known."""

    present: set[BlobRef] = field(default_factory=set)
    corrupt: list[tuple[BlobInfo, str]] = field(default_factory=list)
    wrong_size: list[tuple[BlobInfo, bool]] = field(default_factory=list)
    rows: int = 0
    row_bytes: int = 0
    hashed: int = 0
    hashed_bytes: int = 0


async def scan_rows(
    db: Engine,
    keys: KeyRing | None,
    claims: dict[BlobRef, int],
    conflicting: set[BlobRef],
    rehash: Selector,
    seen: InlineScan,
) -> AsyncIterator[Finding]:
    """Yield the orphan rows as they come; record corrupt and wrongly sized ones in ``seen``
    (the caller maps them to files, outside this snapshot)."""
    async with db.read() as tx:
        async for ref, size, stored in inline.scan(tx):
            seen.present.add(ref)
            seen.rows += 1
            seen.row_bytes += size
            claim = claims.get(ref)
            if claim is None:
                yield Finding(
                    Kind.ORPHAN_BLOB,
                    "no manifest references this inline blob; gc reclaims it once it is older"
                    " than gc's grace period",
                    ref=ref,
                    size=size,
                )
            if ref in conflicting:
                claim = -1
            blob = BlobInfo(ref, size)
            checked = False
            if rehash(ref):
                why = await check_row(keys, ref, size, stored)
                seen.hashed += 1
                seen.hashed_bytes += size
                if why is not None:
                    seen.corrupt.append((blob, why))
                    continue
                checked = True
            if claim is not None and claim != size:
                seen.wrong_size.append((blob, checked))


async def check_row(keys: KeyRing | None, ref: BlobRef, size: int, stored: bytes) -> str | None:
    """Why the row is corrupt (unreadable, wrong content, or not its recorded size), or None."""
    try:
        content = await inline.plain(keys, ref, stored)
    except BlobStoreError as exc:
        return f"unreadable ({exc})"
    hasher = default_hasher()
    hasher.update(content)
    digest = hasher.hexdigest()
    if digest != ref_digest(ref):
        return f"content hashes to {digest}, not to its name"
    if len(content) != size:
        return f"{len(content)} bytes stored, the row says {size}"
    return None
