"""Free space on the data directory's file system: a floor for new uploads and a held reserve.

Two mechanisms, because they fail differently:

- **Floor** (``FILESVC_MIN_FREE_BYTES``): below it new uploads and creates are refused with 507
  before a byte is written (and the blob store refuses further write batches), so uploads stop
  while the metadata database still has room to record and delete what is stored.
- **Reserve** (``FILESVC_DISK_RESERVE_BYTES``): a preallocated file, ``space-reserve`` in the data
  directory, that only this service gives back.  When something else fills the disk (another
  process, a log, uploads overshooting the floor together), a DELETE releases it and so can
  always commit, which is what lets an operator empty a full store through the API.  It is made
  again once free space is back above floor + reserve.

The state is sampled by a background task (one ``statvfs`` a second, off the loop); admission
checks read the sample, so an upload pays no system call for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from filesvc.errors import InsufficientStorage

log = logging.getLogger(__name__)

RESERVE_FILE = "space-reserve"
# Admission and readiness count as "low" this much above the floor: one write batch of the blob
# store, so an admitted upload can always write at least its first batch, and an instance
# whose uploads the store would refuse is never reported ready.
LOW_HEADROOM = 1 << 20
# How often free space is sampled: often enough that uploads resume within a second of gc
# freeing space, rare enough to cost nothing.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class SpaceState:
    """One sample of the file system holding the data directory."""

    free: int
    reserve_held: bool


class SpaceGuard:
    """The floor and the reserve of one data directory."""

    def __init__(self, data_dir: Path, *, min_free_bytes: int, reserve_bytes: int) -> None:
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self.reserve_bytes = reserve_bytes
        self.reserve_path = data_dir / RESERVE_FILE
        self._state = SpaceState(free=2**63, reserve_held=False)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def state(self) -> SpaceState:
        """The last sample."""
        return self._state

    async def start(self) -> None:
        """Take a first sample (making the reserve if there is room), then keep sampling.  On a
        disk full to the last bytes the reserve is given back at once: the database cannot even
        open (SQLite makes its log and index files) without a little room."""
        state = await self.refresh()
        if state.reserve_held and state.free < self.reserve_bytes:
            await self.release()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Stop sampling.  The reserve file stays: it is kept across restarts."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self.refresh()
            except OSError:
                log.exception("sampling free space failed")

    async def refresh(self) -> SpaceState:
        """Sample free space now; remake the reserve when there is room for it again."""
        async with self._lock:
            self._state = await asyncio.to_thread(self._refresh_sync)
        return self._state

    def _refresh_sync(self) -> SpaceState:
        held = self._reserve_held()
        free = self._free()
        if not held and self.reserve_bytes > 0 and free >= self.min_free_bytes + self.reserve_bytes:
            held = self._make_reserve()
            free = self._free()
        return SpaceState(free=free, reserve_held=held)

    def _free(self) -> int:
        st = os.statvfs(self.data_dir)
        return st.f_bavail * st.f_frsize

    def _reserve_held(self) -> bool:
        try:
            return self.reserve_path.stat().st_size >= self.reserve_bytes > 0
        except FileNotFoundError:
            return False

    def _make_reserve(self) -> bool:
        # Allocated, not just sized: a sparse file would hold back nothing.
        tmp = self.reserve_path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.reserve_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("could not make the space reserve: %s", os.strerror(exc.errno or 0))
            return False
        log.info("space reserve of %d bytes is held", self.reserve_bytes)
        return True

    async def release(self) -> bool:
        """Give the reserve back to the file system; True when it was held."""
        async with self._lock:
            released = await asyncio.to_thread(self._release_sync)
            self._state = SpaceState(free=await asyncio.to_thread(self._free), reserve_held=False)
        return released

    def _release_sync(self) -> bool:
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        log.warning("free space is exhausted: released the space reserve so deletes can commit")
        return True

    @property
    def low(self) -> bool:
        """Free space is (within a write batch of) the floor: new uploads are refused."""
        return self._state.free < self.min_free_bytes + LOW_HEADROOM

    def admit(self) -> None:
        """507 before anything is written when free space is below the floor."""
        if self.low:
            raise InsufficientStorage(
                "the file store is full: nothing was saved; retry once space is freed"
            )

    async def before_delete(self) -> None:
        """A delete must commit even on a full disk: when less than the reserve's size is free,
        give the reserve back first (a delete needs a few pages of the database's log, far less
        than the reserve).  Not sooner: released space above the floor would admit uploads,
        which would eat it."""
        if self._state.free < self.reserve_bytes and self._state.reserve_held:
            await self.release()

    def problem(self) -> str | None:
        """Why the disk is not ready, or None."""
        state = self._state
        if self.low:
            return "free space is below the floor: uploads are refused until space is freed"
        if self.reserve_bytes > 0 and not state.reserve_held:
            return "the space reserve is not held: free space is short"
        return None
