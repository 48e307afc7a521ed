"""The checker: walks manifests and blobs and yields typed findings, never stopping at the first.

Findings are *damage* (a file cannot be served as it was uploaded) or *hints* (left by a crash or
by work in progress, harmless: orphan blobs, temp files).  The command decides what is serious.

Memory: the set of referenced refs (with the size manifests claim for each) plus one batch of
blobs; orphan and per-file findings stream out as they are found.  Each damaged blob is mapped to
the files that hold it with one indexed query, so only damage costs lookups.

Safe beside a running server: manifests are read in one snapshot before the scan; a blob committed
after it shows as an orphan (a hint), and a blob that looks missing is re-checked (still referenced
now, still absent) before it is reported, so a concurrent delete plus gc is not damage.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from blobstore import manifests
from blobstore.engine.base import Engine
from blobstore.errors import BlobNotFound, BlobStoreError
from blobstore.findings import (
    SEVERITY as SEVERITY,
)
from blobstore.findings import (
    Counts as Counts,
)
from blobstore.findings import (
    Finding as Finding,
)
from blobstore.findings import (
    Kind as Kind,
)
from blobstore.findings import (
    Progress as Progress,
)
from blobstore.findings import (
    Selector as Selector,
)
from blobstore.findings import (
    Severity as Severity,
)
from blobstore.findings import (
    rehash_all as rehash_all,
)
from blobstore.findings import (
    rehash_none as rehash_none,
)
from blobstore.findings import (
    rehash_sample as rehash_sample,
)
from blobstore.fsck_inline import InlineScan, scan_rows
from blobstore.keyring import KeyRing
from blobstore.manifests import Entry, Head, Holder
from blobstore.port import BlobBackend, BlobInfo, Leftovers, LocalFiles, TempFiles
from blobstore.refs import BlobRef, default_hasher, is_ref, is_sealed, ref_digest

# Blobs checked per step: bounds memory, and batches the thread hand-off of re-hashing.
BATCH_BLOBS = 256
# ...or fewer, when their bytes to re-hash reach this.
BATCH_HASH_BYTES = 64 << 20
READ_SIZE = 1 << 20
# How many chunk numbers a finding lists before it says "and N more".
LIST_LIMIT = 10


def _fmt_list(items: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in items[:LIST_LIMIT])
    more = len(items) - LIST_LIMIT
    return shown + (f" and {more} more" if more > 0 else "")


def manifest_problems(head: Head, slots: dict[str, list[Entry]]) -> list[str]:
    """Pure: what is wrong with one manifest.  Any slot: refs must be well formed.  A complete
    file's chunks must be numbered 1..N without gaps and add up to the expected size."""
    problems: list[str] = []
    for slot, found in sorted(slots.items()):
        bad = [e.idx for e in found if not is_ref(e.ref)]
        if bad:
            problems.append(f"{slot} entries {_fmt_list(bad)} hold malformed refs")
        negative = [e.idx for e in found if e.size < 0]
        if negative:
            problems.append(f"{slot} entries {_fmt_list(negative)} have negative sizes")
    if not head.complete:
        return problems
    chunks = slots.get("chunk", [])
    expected = head.expected_chunks
    if expected is None:
        expected = max((e.idx for e in chunks), default=0)
    state = manifests.completeness(chunks, expected, head.expected_size)
    if state.complete:
        return problems
    if state.missing:
        missing = _fmt_list(state.missing)
        problems.append(f"complete, but chunks {missing} of {expected} are missing")
    extra = [e.idx for e in chunks if e.idx < 1 or e.idx > expected]
    if extra:
        problems.append(f"chunk numbers {_fmt_list(extra)} are outside 1..{expected}")
    if head.expected_size is not None and state.stored_size != head.expected_size:
        problems.append(
            f"chunk sizes add up to {state.stored_size} bytes, the file should have "
            f"{head.expected_size}"
        )
    return problems


HashResult = str | OSError | None  # hex digest; OSError: unreadable; None: vanished


def _hash_files(paths: Sequence[Path]) -> list[HashResult]:
    """Re-hash local files in one thread hand-off (xxhash releases the GIL on large pieces)."""
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    out: list[HashResult] = []
    for path in paths:
        hasher = default_hasher()
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    hasher.update(view[:n])
        except FileNotFoundError:
            out.append(None)
            continue
        except OSError as exc:
            out.append(exc)
            continue
        out.append(hasher.hexdigest())
    return out


async def hash_blobs(backend: BlobBackend, refs: Sequence[BlobRef]) -> list[HashResult]:
    """Re-hash blobs' content: a hex digest each, an OSError when unreadable (a sealed blob that
    fails authentication, too), None when gone.  Plain local blobs are hashed from their files
    in one thread hand-off; sealed ones are opened (decrypted and authenticated) by the
    backend, so the digest is the plaintext's, as the ref names it."""
    local = [ref for ref in refs if isinstance(backend, LocalFiles) and not is_sealed(ref)]
    out: dict[BlobRef, HashResult] = {}
    if local:
        assert isinstance(backend, LocalFiles)
        paths = [backend.local_path(ref) for ref in local]
        out.update(zip(local, await asyncio.to_thread(_hash_files, paths), strict=True))
    for ref in refs:
        if ref in out:
            continue
        hasher = default_hasher()
        try:
            async for piece in backend.read(ref):
                hasher.update(piece)
        except BlobNotFound:
            out[ref] = None
            continue
        except BlobStoreError as exc:
            out[ref] = OSError(str(exc))
            continue
        out[ref] = hasher.hexdigest()
    return [out[ref] for ref in refs]


class Checker:
    """One fsck run.  Use :meth:`run` (an async generator of findings); ``counts`` fills in."""

    def __init__(
        self,
        db: Engine,
        backend: BlobBackend,
        *,
        rehash: Selector = rehash_none,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
        keys: KeyRing | None = None,
    ) -> None:
        self._db = db
        self._backend = backend
        # Opens sealed inline rows: the sealing backend's key ring unless one is given.
        self._keys = keys if keys is not None else getattr(backend, "keys", None)
        self._rehash = rehash
        self._progress = progress
        self._clock = clock
        self.counts = Counts()
        self._inline: set[BlobRef] = set()

    def _begin(self, phase: str, total: int | None) -> None:
        if self._progress is not None:
            self._progress.begin(phase, total)

    def _advance(self, items: int, hashed_bytes: int = 0) -> None:
        if self._progress is not None:
            self._progress.advance(items, hashed_bytes)

    async def run(self) -> AsyncIterator[Finding]:
        """Yield every finding: manifests first, then blobs as the scan meets them, then missing
        blobs, then temp files."""
        claims: dict[BlobRef, int] = {}
        conflicting: set[BlobRef] = set()
        async for finding in self._walk_manifests(claims, conflicting):
            yield self._count(finding)
        self.counts.referenced = len(claims)
        async for finding in self._scan_inline(claims, conflicting):
            yield self._count(finding)
        async for finding in self._scan_blobs(claims, conflicting):
            yield self._count(finding)
        async for finding in self._missing(claims):
            yield self._count(finding)
        async for finding in self._temp_files():
            yield self._count(finding)

    def _count(self, finding: Finding) -> Finding:
        self.counts.by_kind[finding.kind] = self.counts.by_kind.get(finding.kind, 0) + 1
        return finding

    async def _walk_manifests(
        self, claims: dict[BlobRef, int], conflicting: set[BlobRef]
    ) -> AsyncIterator[Finding]:
        async with self._db.read() as tx:
            self._begin("manifests", await manifests.count(tx))
            async for head, slots in manifests.walk(tx):
                self.counts.files += 1
                self._advance(1)
                for found in slots.values():
                    for e in found:
                        if not is_ref(e.ref):
                            continue
                        known = claims.setdefault(e.ref, e.size)
                        if known != e.size:
                            conflicting.add(e.ref)
                problems = manifest_problems(head, slots)
                if problems:
                    holder = Holder(head.file_id, head.owner, "manifest", head.damaged)
                    yield Finding(
                        Kind.MANIFEST_INCONSISTENT,
                        "; ".join(problems),
                        file_id=head.file_id,
                        holders=(holder,),
                    )

    async def _scan_inline(
        self, claims: dict[BlobRef, int], conflicting: set[BlobRef]
    ) -> AsyncIterator[Finding]:
        """The inline rows first; a referenced row's ref then leaves ``claims`` (a backend copy
        of the same content, if any, is then checked as a blob of its own)."""
        seen = InlineScan()
        async for finding in scan_rows(
            self._db, self._keys, claims, conflicting, self._rehash, seen
        ):
            yield finding
        self.counts.blobs += seen.rows
        self.counts.blob_bytes += seen.row_bytes
        self.counts.hashed += seen.hashed
        self.counts.hashed_bytes += seen.hashed_bytes
        for blob, why in seen.corrupt:
            claim = claims.get(blob.ref)
            yield Finding(
                Kind.CORRUPT_BLOB,
                why + " (inline row)",
                ref=blob.ref,
                size=blob.size,
                expected_size=claim if claim is not None and claim >= 0 else None,
                holders=await self._holders(blob.ref),
            )
        for blob, checked in seen.wrong_size:
            wrong = await self._wrong_size(blob, checked=checked)
            if wrong is not None:
                yield wrong
        self._inline = seen.present

    async def _scan_blobs(
        self, claims: dict[BlobRef, int], conflicting: set[BlobRef]
    ) -> AsyncIterator[Finding]:
        for ref in self._inline:
            claims.pop(ref, None)
        self._begin("blobs", len(claims) or None)
        batch: list[tuple[BlobInfo, int | None]] = []
        batch_bytes = 0
        async for blob in self._backend.scan():
            claim = claims.pop(blob.ref, None)
            self.counts.blobs += 1
            self.counts.blob_bytes += blob.size
            if claim is None and blob.ref not in self._inline:
                yield Finding(
                    Kind.ORPHAN_BLOB,
                    "no manifest references this blob; gc reclaims it once it is older than"
                    " gc's grace period (--grace, 1h by default), since an upload may be about"
                    " to commit it",
                    ref=blob.ref,
                    size=blob.size,
                )
            if blob.ref in conflicting:
                claim = -1  # several sizes claimed: look each up
            batch.append((blob, claim))
            if self._rehash(blob.ref):
                batch_bytes += blob.size
            if len(batch) >= BATCH_BLOBS or batch_bytes >= BATCH_HASH_BYTES:
                async for finding in self._check_batch(batch, claims):
                    yield finding
                batch, batch_bytes = [], 0
        if batch:
            async for finding in self._check_batch(batch, claims):
                yield finding

    async def _check_batch(
        self, batch: list[tuple[BlobInfo, int | None]], claims: dict[BlobRef, int]
    ) -> AsyncIterator[Finding]:
        to_hash = [blob.ref for blob, _ in batch if self._rehash(blob.ref)]
        digests = dict(zip(to_hash, await hash_blobs(self._backend, to_hash), strict=True))
        hashed_bytes = 0
        for blob, claim in batch:
            if blob.ref in digests:
                result = digests[blob.ref]
                if result is None:  # deleted since the scan saw it
                    if claim is not None:
                        claims[blob.ref] = claim  # the missing-blob pass re-checks it
                    continue
                self.counts.hashed += 1
                hashed_bytes += blob.size
                if isinstance(result, OSError) or result != ref_digest(blob.ref):
                    yield await self._corrupt(blob, result, claim)
                    continue
            if claim is not None and claim != blob.size:
                finding = await self._wrong_size(blob, checked=blob.ref in digests)
                if finding is not None:
                    yield finding
        self.counts.hashed_bytes += hashed_bytes
        self._advance(len(batch), hashed_bytes)

    async def _holders(self, ref: str) -> tuple[Holder, ...]:
        async with self._db.read() as conn:
            return tuple(await manifests.holders(conn, ref))

    async def _corrupt(self, blob: BlobInfo, result: HashResult, claim: int | None) -> Finding:
        if isinstance(result, OSError):
            why = f"unreadable ({os.strerror(result.errno) if result.errno else result})"
        else:
            why = f"content hashes to {result}, not to its name"
        if claim is not None and claim >= 0 and claim != blob.size:
            why += f"; {blob.size} bytes stored, manifests say {claim}"
        return Finding(
            Kind.CORRUPT_BLOB,
            why,
            ref=blob.ref,
            size=blob.size,
            expected_size=claim if claim is not None and claim >= 0 else None,
            holders=await self._holders(blob.ref),
        )

    async def _wrong_size(self, blob: BlobInfo, *, checked: bool) -> Finding | None:
        async with self._db.read() as conn:
            sizes = await manifests.claimed_sizes(conn, blob.ref)
            holders = await manifests.holders(conn, blob.ref)
        wrong = {fid: size for fid, size in sizes if size != blob.size}
        if not wrong:
            return None  # the disagreeing entries are gone meanwhile
        expected = sorted(set(wrong.values()))
        content = "content matches its name, so the manifests are wrong" if checked else ""
        message = f"{blob.size} bytes stored, manifests say {', '.join(map(str, expected))}"
        return Finding(
            Kind.WRONG_SIZE,
            message + (f" ({content})" if content else ""),
            ref=blob.ref,
            size=blob.size,
            expected_size=expected[0],
            holders=tuple(h for h in holders if h.file_id in wrong),
        )

    async def _missing(self, claims: dict[BlobRef, int]) -> AsyncIterator[Finding]:
        self._begin("missing", len(claims) or None)
        for ref, claim in claims.items():
            self._advance(1)
            holders = await self._holders(ref)
            if not holders:
                continue  # the files let go of it meanwhile
            if await self._backend.stat(ref) is not None:
                continue  # published after the scan passed its directory
            yield Finding(
                Kind.MISSING_BLOB,
                "manifests reference this blob but the store does not have it",
                ref=ref,
                expected_size=claim if claim >= 0 else None,
                holders=holders,
            )

    async def _temp_files(self) -> AsyncIterator[Finding]:
        now = self._clock()
        if isinstance(self._backend, Leftovers):
            for left in await self._backend.leftovers():
                yield Finding(
                    Kind.TEMP_LEFTOVER,
                    left.what,
                    path=left.name,
                    size=left.size,
                    age=max(0.0, now - left.written),
                )
        if not isinstance(self._backend, TempFiles):
            return
        for path, size, mtime in await asyncio.to_thread(self._backend.temp_files):
            yield Finding(
                Kind.TEMP_LEFTOVER,
                "temporary file of an interrupted (or running) upload or gc",
                path=str(path),
                size=size,
                age=max(0.0, now - mtime),
            )


def check(
    db: Engine,
    backend: BlobBackend,
    *,
    rehash: Selector = rehash_none,
    progress: Progress | None = None,
) -> AsyncIterator[Finding]:
    """Shorthand for ``Checker(...).run()`` when the counts are not needed."""
    return Checker(db, backend, rehash=rehash, progress=progress).run()
