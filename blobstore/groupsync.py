"""Durability shared by concurrent writers: one ``syncfs`` round of the store's filesystem makes
every write finished before it durable, so many uploads finishing together pay for one flush."""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from blobstore.errors import StorageFailure


class GroupSync:
    """Group commit for the file system: many writers share one ``syncfs``.

    Per-blob fdatasync plus directory fsyncs cost several ms each and serialise on the journal
    (the profile of 4 KiB uploads was mostly directory fsyncs).  :meth:`sync` returns once a sync
    that *started after the call* has finished, which covers every write made before the call;
    concurrent callers share one sync, and no thread waits for it but the one flushing.
    ``syncfs`` flushes the one file system holding the store (data, inodes, directories); where
    it is missing, ``sync`` flushes them all.  Loop-confined: call it from the event loop."""

    def __init__(self, root: Path, run: Callable[[Callable[[], None]], Awaitable[None]]) -> None:
        self._root = root
        self._run = run
        self._issued = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._syncfs = _load_syncfs()

    async def sync(self) -> None:
        """Wait until everything written before the call is durable."""
        self._issued += 1
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((self._issued, done))
        if self._task is None:
            self._task = asyncio.create_task(self._flusher())
        await done

    async def _flusher(self) -> None:
        try:
            while self._waiters:
                upto = self._issued  # a flush starting now covers every call so far
                error: Exception | None = None
                try:
                    await self._run(self._flush)
                except asyncio.CancelledError:
                    # Nothing is known to be durable: no waiter may go on as if it were, nor
                    # wait for a round that will never end.
                    waiters, self._waiters = self._waiters, []
                    for _, done in waiters:
                        if not done.done():
                            done.set_exception(StorageFailure("blob store sync was interrupted"))
                    raise
                except OSError as exc:
                    error = exc
                except Exception:  # e.g. RuntimeError: the store's pool is shut down
                    error = StorageFailure("blob store sync could not run")
                covered = [w for w in self._waiters if w[0] <= upto]
                self._waiters = [w for w in self._waiters if w[0] > upto]
                for _, done in covered:
                    if done.done():
                        continue
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
        finally:
            self._task = None

    def _flush(self) -> None:
        if self._syncfs is None:
            os.sync()
            return
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._syncfs(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
        finally:
            os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return fn
