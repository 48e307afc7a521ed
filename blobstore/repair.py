"""Repair what fsck found, where that is safe.  Nothing is deleted that holds data someone needs.

- Temp leftovers older than a minimum age are removed (younger ones may belong to an upload in
  flight): temp files of the local store; staging objects and incomplete multipart uploads of
  S3 (aborted).  A blob gc had set aside when it was killed is put back first if its name is
  free.
- A corrupt blob (re-hashed once more, to be sure) moves to ``quarantine/``, never deleted, and
  every file that holds it is marked damaged, so the API answers a clear error, not wrong bytes.
- Files that hold a missing blob, a blob of the wrong size, or whose manifest does not add up
  are marked damaged.  Each is re-checked inside the write transaction that marks it.
- A damaged inline row is handled alike (:mod:`blobstore.repair_inline`): its bytes go to
  ``quarantine/``, the row is removed, its files are marked damaged.
- Orphan blobs are left to ``blobstore gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from blobstore import manifests, repair_inline
from blobstore.engine.base import Engine, Tx
from blobstore.fsck import Finding, Kind, hash_blobs, manifest_problems
from blobstore.keyring import KeyRing
from blobstore.layout import fsync_dir
from blobstore.local import parked_ref
from blobstore.port import BlobBackend, Leftovers, LocalFiles
from blobstore.refs import BlobRef, ref_digest

# A staging file is written continuously while its upload runs; one untouched for an hour belongs
# to an upload that died (a client may stall, but not for an hour inside one request).
DEFAULT_TEMP_MIN_AGE = 3600.0


def repairable(finding: Finding, *, temp_min_age: float = DEFAULT_TEMP_MIN_AGE) -> bool:
    """Whether ``--repair`` would change something for this finding."""
    match finding.kind:
        case Kind.TEMP_LEFTOVER:
            # A blob a killed gc set aside shows as missing too, and that finding offers the
            # repair (which puts it back whatever the temp file's age).
            return finding.age is not None and finding.age >= temp_min_age
        case Kind.CORRUPT_BLOB:
            return True  # the blob is still in place: quarantine it
        case Kind.MISSING_BLOB | Kind.WRONG_SIZE | Kind.MANIFEST_INCONSISTENT:
            return any(not h.marked_damaged for h in finding.holders)
        case Kind.ORPHAN_BLOB:
            return False
    return False


@dataclass
class RepairReport:
    """What the repair did, and what it left alone and why."""

    removed_temp: int = 0
    removed_temp_bytes: int = 0
    restored: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    marked: list[tuple[str, str]] = field(default_factory=list)  # (file_id, company)
    left: list[str] = field(default_factory=list)


def _quarantine_sync(src: Path, qdir: Path, ref: str) -> Path | None:
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / ref
    n = 0
    while dest.exists():  # quarantined before (a later upload re-created it, then it rotted)
        n += 1
        dest = qdir / f"{ref}.{n}"
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        return None
    fsync_dir(qdir)
    fsync_dir(src.parent)
    return dest


def _restore_sync(parked: Path, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(parked, target)
    except FileExistsError:
        return False
    fsync_dir(target.parent)
    return True


class Repairer:
    """Applies the safe repairs for a list of findings (hints and damage; orphans are ignored)."""

    def __init__(
        self,
        db: Engine,
        backend: BlobBackend,
        *,
        quarantine: Path,
        temp_min_age: float = DEFAULT_TEMP_MIN_AGE,
        clock: Callable[[], float] = time.time,
        keys: KeyRing | None = None,
    ) -> None:
        self._db = db
        self._backend = backend
        # Opens sealed inline rows: the sealing backend's key ring unless one is given.
        self._keys = keys if keys is not None else getattr(backend, "keys", None)
        self._quarantine = quarantine
        self._temp_min_age = temp_min_age
        self._clock = clock
        self.report = RepairReport()

    async def apply(self, findings: Iterable[Finding]) -> RepairReport:
        """Repair temp files first (a put-back blob is then no longer missing), then blobs, then
        mark the files that stay broken."""
        order = [
            Kind.TEMP_LEFTOVER,
            Kind.CORRUPT_BLOB,
            Kind.WRONG_SIZE,
            Kind.MISSING_BLOB,
            Kind.MANIFEST_INCONSISTENT,
        ]
        todo = sorted((f for f in findings if f.kind in order), key=lambda f: order.index(f.kind))
        for finding in todo:
            match finding.kind:
                case Kind.TEMP_LEFTOVER:
                    await self._temp(finding)
                case Kind.CORRUPT_BLOB | Kind.WRONG_SIZE:
                    await self._bad_blob(finding)
                case Kind.MISSING_BLOB:
                    await self._missing(finding)
                case Kind.MANIFEST_INCONSISTENT:
                    await self._manifest(finding)
        return self.report

    async def _temp(self, finding: Finding) -> None:
        assert finding.path is not None
        if isinstance(self._backend, Leftovers):
            await self._leftover(self._backend, finding.path, finding)
            return
        path = Path(finding.path)
        ref = parked_ref(path.name)
        if ref is not None and isinstance(self._backend, LocalFiles):
            target = self._backend.local_path(ref)
            if await asyncio.to_thread(_restore_sync, path, target):
                self.report.restored.append(ref)
        if finding.age is None or finding.age < self._temp_min_age:
            self.report.left.append(
                f"{path}: younger than {self._temp_min_age:.0f}s, may belong to a running upload"
            )
            return
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)
            self.report.removed_temp += 1
            self.report.removed_temp_bytes += finding.size or 0

    async def _leftover(self, backend: Leftovers, name: str, finding: Finding) -> None:
        if finding.age is None or finding.age < self._temp_min_age:
            self.report.left.append(
                f"{name}: younger than {self._temp_min_age:.0f}s, may belong to a running upload"
            )
            return
        await backend.remove_leftover(name)
        self.report.removed_temp += 1
        self.report.removed_temp_bytes += finding.size or 0

    async def _bad_blob(self, finding: Finding) -> None:
        assert finding.ref is not None
        ref = BlobRef(finding.ref)
        done = await repair_inline.repair_row(
            self._db, self._backend, self._keys, ref, quarantine=self._quarantine, mark=self._mark
        )
        if done == "quarantined":
            self.report.quarantined.append(ref)
        if done is not None:
            return
        [digest] = await hash_blobs(self._backend, [ref])
        if digest is not None and not isinstance(digest, OSError) and digest == ref_digest(ref):
            # Content is right: only the files that claim another size are broken.
            await self._mark_holders(ref, only_wrong_size=True)
            return
        if digest is not None:
            if not isinstance(self._backend, LocalFiles):
                self.report.left.append(f"{ref}: this backend cannot quarantine; left in place")
            else:
                src = self._backend.local_path(ref)
                moved = await asyncio.to_thread(_quarantine_sync, src, self._quarantine, ref)
                if moved is not None:
                    self.report.quarantined.append(ref)
        await self._mark_holders(ref, only_wrong_size=False)

    async def _missing(self, finding: Finding) -> None:
        assert finding.ref is not None
        ref = BlobRef(finding.ref)
        if await self._backend.stat(ref) is not None:
            return  # put back from a gc leftover, or re-uploaded meanwhile
        await self._mark_holders(ref, only_wrong_size=False)

    async def _manifest(self, finding: Finding) -> None:
        assert finding.file_id is not None
        async with self._db.write() as conn:
            async for head, slots in manifests.walk(conn, finding.file_id):
                if manifest_problems(head, slots):
                    await self._mark(conn, head.file_id, head.owner, head.damaged)

    async def _mark_holders(self, ref: BlobRef, *, only_wrong_size: bool) -> None:
        async with self._db.write() as conn:
            holders = await manifests.holders(conn, ref)
            if only_wrong_size:
                size = await self._backend.stat(ref)
                claims = await manifests.claimed_sizes(conn, ref)
                wrong = {fid for fid, claim in claims if claim != size}
                holders = [h for h in holders if h.file_id in wrong]
            for h in holders:
                await self._mark(conn, h.file_id, h.owner, h.marked_damaged)

    async def _mark(self, conn: Tx, file_id: str, owner: str, already: bool) -> None:
        if already or any(m[0] == file_id for m in self.report.marked):
            return
        await manifests.mark(conn, file_id, now_ms=int(self._clock() * 1000), damaged=True)
        self.report.marked.append((file_id, owner))
