"""Inline rows read through the in-process blob cache (:mod:`blobstore.blobcache`), where the
deployment keeps one (a backend behind a network: S3).

Without a cache a download's view query brings each inline entry's bytes with it (one round
trip, :data:`blobstore.inline.VIEW_JOIN`).  With one, the view is asked without the rows, and
the bytes of each small entry come from the cache when it holds its ref, else from the rows in
one more statement (then cached).  A repeat download of a small file then costs the metadata
query alone, as a cached blob of the backend does.

Nothing stale is served: the view (file, manifest, refs) is still read from the database on
every request, so an overwritten or deleted file is never answered from the cache; only the
bytes a ref names are, and a ref names the same bytes for as long as it is stored.  Only rows
that check out against their name (sealed: opened and authenticated; plain: re-hashed) are
cached, so damaged bytes never outlive their row's quarantine (``fsck --repair``) in a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from blobstore import inline
from blobstore.blobcache import BlobCache
from blobstore.engine.base import Engine
from blobstore.errors import BlobStoreError
from blobstore.keyring import KeyRing
from blobstore.manifest_model import Entry
from blobstore.refs import BlobRef, default_hasher, is_sealed, ref_digest


async def attach(
    db: Engine,
    cache: BlobCache,
    keys: KeyRing | None,
    groups: Sequence[list[Entry]],
) -> None:
    """Give each small entry of ``groups`` (lists changed in place) its stored bytes: from the
    cache, else from its inline row.  Entries with neither stay as they are (the backend's)."""
    wanted: dict[BlobRef, list[tuple[list[Entry], int]]] = {}
    for entries in groups:
        for i, entry in enumerate(entries):
            if entry.inline is not None or entry.size > inline.CEILING:
                continue
            if entry.ref in cache:
                stored = cache.get(entry.ref)
                if stored is not None:
                    entries[i] = replace(entry, inline=stored)
                    continue
            wanted.setdefault(entry.ref, []).append((entries, i))
    if not wanted:
        return
    rows = await inline.stored_many(db, list(wanted))
    for ref, stored in rows.items():
        cache.stats.misses += 1
        for entries, i in wanted[ref]:
            entries[i] = replace(entries[i], inline=stored)
        if cache.fits(len(stored)) and await _sound(keys, ref, stored):
            cache.put(ref, stored)


async def _sound(keys: KeyRing | None, ref: BlobRef, stored: bytes) -> bool:
    """Whether a row's bytes are the content its ref names."""
    try:
        content = await inline.plain(keys, ref, stored)
    except BlobStoreError:
        return False
    if is_sealed(ref):
        return True  # opened: every segment authenticated, the trailer bound to the digest
    hasher = default_hasher()
    hasher.update(content)
    return hasher.hexdigest() == ref_digest(ref)
