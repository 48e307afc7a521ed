"""Small blobs kept in the metadata database: owner of the ``inline_blobs`` table.

A blob whose stored bytes are at most the inline limit (``FILESVC_INLINE_MAX``) is not written to
the blob backend: :meth:`ContentStore.put <blobstore.store.ContentStore.put>` hands back its
bytes (sealed when encryption is on) as an :class:`InlineRow`, and the caller inserts that row in
the same transaction as the manifest rows that reference it (:func:`add`).  One commit, one log
flush, no file: a crash leaves either both or neither.

The ref is the one the backend would have used (same digest, scope, sealed marker and collision
variant): where a blob lives is a storage detail.  One name is never given two contents: a put
looks a candidate name up here and in the backend before it takes it, and a row inserted by a
commit that lost a race to another content of the same name fails the insert (its fingerprint,
a keyed hash of the plaintext, differs), so the commit rolls back instead of referencing
someone else's bytes.

Reads resolve a ref here first (the download's view query joins this table, :data:`VIEW_JOIN`,
or, where the server keeps a blob cache, :mod:`blobstore.inline_cached` reads through it), then
the backend (blobs stored before the feature, or above the limit).  gc, fsck and stat walk
the rows through the functions below, under the same guard as the backend's blobs
(:mod:`blobstore.confirmations`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from blobstore.engine.base import Engine, Tx, fetch_in
from blobstore.engine.migrate import Step
from blobstore.errors import BlobCorrupt, NameTaken
from blobstore.keyring import KeyRing
from blobstore.refs import BlobRef, is_sealed, ref_digest, ref_scope
from blobstore.sealed_trailers import VerifiedTrailers
from blobstore.sealing import SEGMENT, TRAILER, Opener, ScopeKey, read_trailer, stored_range

# The most the setting may be: a row is read whole with the query that fetches a download's
# chunks, and held in memory by a put.
CEILING = 256 * 1024

STEP_TABLE = Step(
    4,
    "inline_blobs: small blobs stored in the database, committed with their manifests",
    {
        "sqlite": (
            "CREATE TABLE IF NOT EXISTS inline_blobs (ref TEXT PRIMARY KEY,"
            " size INTEGER NOT NULL, fp BLOB NOT NULL, data BLOB NOT NULL)",
        ),
        "postgresql": (
            "CREATE TABLE IF NOT EXISTS inline_blobs (ref TEXT PRIMARY KEY,"
            " size BIGINT NOT NULL, fp BYTEA NOT NULL, data BYTEA NOT NULL)",
            # Sealed bytes do not compress: never tried.  And rows up to a heap page stay in
            # it (toast_tuple_target at its most): a 4 KiB blob moved out of line to the TOAST
            # table cost every download a second index lookup and heap fetch.
            "ALTER TABLE inline_blobs ALTER COLUMN data SET STORAGE EXTERNAL",
            "ALTER TABLE inline_blobs SET (toast_tuple_target = 8160)",
        ),
    },
)

STEP_ADDED_AT = Step(
    5,
    "inline_blobs.added_at: when a row was inserted, gc's time for a row no commit confirmed",
    {
        "sqlite": ("ALTER TABLE inline_blobs ADD COLUMN added_at INTEGER",),
        "postgresql": ("ALTER TABLE inline_blobs ADD COLUMN IF NOT EXISTS added_at BIGINT",),
    },
)

# For the download's view query (filesvc.repo): each chunk entry with its inline bytes, if any,
# in the same statement (one round trip).  ``e`` is the manifest entry's alias.
VIEW_COLUMN = "i.data AS e_inline"
VIEW_JOIN = " LEFT JOIN inline_blobs i ON i.ref = e.ref"

_FP_LABEL = b"filesvc inline fingerprint v1"


@dataclass(frozen=True)
class InlineRow:
    """A small blob's row: its ref, plaintext size, fingerprint and stored bytes."""

    ref: BlobRef
    size: int
    fp: bytes
    data: bytes


def fingerprint(key: ScopeKey | None, plain: bytes) -> bytes:
    """A keyed hash of the plaintext (a sealed blob's under its scope's key, so the row tells
    nothing a disk reader could check a guess against): two rows of one name with different
    fingerprints hold different contents."""
    fp_key = b"" if key is None else key.derived(_FP_LABEL)
    return hashlib.blake2b(plain, digest_size=16, key=fp_key).digest()


async def add(tx: Tx, rows: Iterable[InlineRow], *, now_ms: int) -> None:
    """Insert the rows in the caller's transaction (the one committing the manifests that use
    them), stamped ``now_ms``: a row its commit inserts is not confirmed in ``blob_refs``
    (:func:`blobstore.confirmations.confirm`), and gc's grace for it counts from this time
    (:func:`added_at`).  A row already there with the same fingerprint is kept (the same
    content, a dedup hit or a concurrent upload of it), its stamp moved to ``now_ms``; one with
    another fingerprint fails the statement (a NOT NULL violation), so the transaction rolls
    back."""
    await tx.executemany_later(
        "INSERT INTO inline_blobs (ref, size, fp, data, added_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (ref) DO UPDATE SET"
        " size = CASE WHEN inline_blobs.fp = excluded.fp THEN inline_blobs.size END,"
        " added_at = excluded.added_at",
        [(r.ref, r.size, r.fp, r.data, now_ms) for r in rows],
    )


@contextmanager
def name_races() -> Iterator[None]:
    """Around a commit that inserts rows (:func:`add`): the engine's error for a row of the
    same name with another fingerprint becomes :class:`~blobstore.errors.NameTaken`."""
    try:
        yield
    except NameTaken:
        raise
    except Exception as exc:
        if is_name_race(exc):
            raise NameTaken("another content took this blob's name before the commit") from None
        raise


def is_name_race(exc: BaseException) -> bool:
    """True for the error :func:`add` raises when a row of the name holds another content (the
    NOT NULL violation on ``inline_blobs.size``: "NOT NULL constraint failed: inline_blobs.size"
    on SQLite, 'null value in column "size" of relation "inline_blobs"' on PostgreSQL)."""
    text = str(exc)
    return "inline_blobs" in text and ("NOT NULL" in text or "null value" in text)


async def lookup(db: Engine, ref: BlobRef) -> InlineRow | None:
    """The row stored under ``ref``, or None.  One statement, its own snapshot."""
    rows = await db.query("SELECT size, fp, data FROM inline_blobs WHERE ref = ?", ref)
    if not rows:
        return None
    r = rows[0]
    return InlineRow(ref, int(r[0]), bytes(r[1]), bytes(r[2]))


async def content(db: Engine, keys: KeyRing | None, ref: BlobRef) -> bytes | None:
    """The content stored under ``ref`` (opened when sealed), or None when it has no row."""
    row = await lookup(db, ref)
    return None if row is None else await plain(keys, ref, row.data)


async def plain(keys: KeyRing | None, ref: BlobRef, stored: bytes) -> bytes:
    """The content of a row: its bytes, opened when the ref is sealed.  BlobCorrupt when a
    sealed row fails its checks."""
    if not is_sealed(ref):
        return stored
    if keys is None:
        raise BlobCorrupt(f"{ref} is sealed and no key ring is at hand")
    scope = ref_scope(ref)
    assert scope is not None
    key = await keys.key(scope, create=False)
    return open_sealed(key, ref, stored)


def open_sealed(key: ScopeKey, ref: BlobRef, stored: bytes) -> bytes:
    """The plaintext of a sealed row (checked against its name, every segment authenticated)."""
    scope = ref_scope(ref)
    assert scope is not None
    if len(stored) < TRAILER:
        raise BlobCorrupt("sealed blob is too short")
    trailer = read_trailer(
        key, stored[-TRAILER:], stored=len(stored), digest=ref_digest(ref), scope=scope
    )
    return Opener(key, trailer).open_many(0, memoryview(stored)[:-TRAILER])


async def present(tx: Tx, refs: Sequence[BlobRef]) -> set[BlobRef]:
    """Which of ``refs`` have a row, in the caller's transaction."""
    rows = await fetch_in(tx, "SELECT ref FROM inline_blobs WHERE ref IN ({marks})", refs)
    return {BlobRef(r[0]) for r in rows}


def open_range(
    trailers: VerifiedTrailers,
    key: ScopeKey,
    ref: BlobRef,
    stored: bytes,
    start: int,
    end: int,
) -> bytes | bytearray:
    """Plaintext ``[start, end)`` of a sealed row, for a download: the trailer checked (or found
    already checked, with its cipher, in ``trailers``), then only the segments that hold the
    range authenticated and decrypted, cut without copying."""
    scope = ref_scope(ref)
    assert scope is not None
    size = len(stored)
    if size < TRAILER:
        raise BlobCorrupt("sealed blob is too short")
    verified = trailers.verify(ref, key, scope, stored[-TRAILER:], size)
    stop = min(end, verified.plain)
    if start >= stop:
        return b""
    first, lo, hi = stored_range(verified.plain, start, stop)
    out = bytearray(hi - lo)
    with memoryview(stored) as view:
        n = verified.opener.open_into(first, view[lo:hi], out)
    skip = start - first * SEGMENT
    # Both cuts move no bytes: a bytearray drops its head by moving its start.
    del out[min(n, skip + stop - start) :]
    del out[:skip]
    return out


async def scan(tx: Tx) -> AsyncIterator[tuple[BlobRef, int, bytes]]:
    """Every row as (ref, plaintext size, stored bytes), a batch at a time (fsck's re-hash)."""
    async for row in tx.stream("SELECT ref, size, data FROM inline_blobs"):
        yield BlobRef(row[0]), int(row[1]), bytes(row[2])


async def added_at(tx: Tx, refs: Collection[BlobRef]) -> dict[BlobRef, int]:
    """When each of ``refs`` that is a row was inserted (rows made before the stamp existed
    have none: their commits confirmed them in ``blob_refs``)."""
    rows = await fetch_in(
        tx,
        "SELECT ref, added_at FROM inline_blobs WHERE added_at IS NOT NULL AND ref IN ({marks})",
        sorted(refs),
    )
    return {BlobRef(r[0]): int(r[1]) for r in rows}


async def sizes(tx: Tx) -> dict[BlobRef, int]:
    """Every row's ref and plaintext size (gc's and fsck's listing; no bytes)."""
    rows = await tx.fetch("SELECT ref, size FROM inline_blobs")
    return {BlobRef(r[0]): int(r[1]) for r in rows}


async def totals(tx: Tx) -> tuple[int, int]:
    """How many rows, and their stored bytes in all."""
    row = await tx.fetchrow(
        "SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(data)), 0) AS BIGINT) FROM inline_blobs"
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def remove_damaged(tx: Tx, row: InlineRow) -> bool:
    """Remove a row fsck found damaged (repair), only if it still holds the bytes that were
    checked: a commit may have put the right content back under the name meanwhile."""
    gone = await tx.execute(
        "DELETE FROM inline_blobs WHERE ref = ? AND data = ?", row.ref, row.data
    )
    return gone > 0


async def delete(tx: Tx, refs: Sequence[BlobRef]) -> None:
    """Remove rows (gc, under the lock commits take; repair)."""
    await tx.executemany("DELETE FROM inline_blobs WHERE ref = ?", [(ref,) for ref in refs])


async def stored_many(db: Engine, refs: Sequence[BlobRef]) -> dict[BlobRef, bytes]:
    """The stored bytes of those of ``refs`` that have a row (one statement per 500 refs, each
    its own snapshot: rows are content-addressed, so a row read is the bytes its ref names)."""
    found: dict[BlobRef, bytes] = {}
    for i in range(0, len(refs), 500):
        part = refs[i : i + 500]
        marks = ", ".join("?" * len(part))
        rows = await db.query(
            f"SELECT ref, data FROM inline_blobs WHERE ref IN ({marks})",  # noqa: S608
            *part,
        )
        found.update((BlobRef(r[0]), bytes(r[1])) for r in rows)
    return found
