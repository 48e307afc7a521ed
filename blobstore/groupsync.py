"""Durability shared by concurrent writers: one ``syncfs`` round of the store's filesystem makes
every write finished before it durable, so many uploads finishing together pay for one flush.

A round can also carry small file operations (a small blob's write, its link into place): they
run in the round's own thread hand-off, just before its flush, so many uploads share one hop as
well as one flush (bench/README.md, small uploads)."""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from blobstore.errors import StorageFailure

T = TypeVar("T")


@dataclass(eq=False)
class Carried(Generic[T]):
    """A file operation carried by a round.  ``ran`` resolves once the round's thread has run it
    (its result, or what it raised), even if the round is abandoned; ``durable`` resolves with the
    same result once the flush that followed it has finished (or with the flush's error)."""

    fn: Callable[[], T]
    ran: asyncio.Future[T]
    durable: asyncio.Future[T]


# A caller waiting for a flush: its number (callers are numbered in the order they came) and
# the future that answers it.
Waiter = tuple[int, "asyncio.Future[None]"]


def answer_covered(waiters: list[Waiter], upto: int, error: BaseException | None) -> list[Waiter]:
    """Answer each waiter numbered at most ``upto`` (it came before the flush started, so the
    flush covered it) with the flush's outcome; return the others, left for a later flush."""
    for number, done in waiters:
        if number <= upto and not done.done():  # a done one: its caller gave up
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
    return [w for w in waiters if w[0] > upto]


def fail_all(waiters: list[Waiter], failure: BaseException) -> None:
    """Fail every waiter still waiting: nothing is known to be durable."""
    for _, done in waiters:
        if not done.done():
            done.set_exception(failure)


def _run_round(fns: list[Callable[[], Any]], flush: Callable[[], None]) -> tuple[list[Any], Any]:
    """In the round's thread: every carried operation (each outcome kept apart, so one failure
    fails only its own upload), then the flush.  Returns the outcomes and the flush's error."""
    outcomes: list[Any] = []
    for fn in fns:
        try:
            outcomes.append((True, fn()))
        except Exception as exc:  # handed to that operation's caller
            outcomes.append((False, exc))
    try:
        flush()
    except OSError as exc:
        return outcomes, exc
    return outcomes, None


def _deliver_ran(carried: list[Carried[Any]], job: asyncio.Future[tuple[list[Any], Any]]) -> None:
    if job.cancelled():
        outcomes = [(False, StorageFailure("blob store sync was interrupted"))] * len(carried)
    elif job.exception() is not None:
        outcomes = [(False, StorageFailure("blob store sync could not run"))] * len(carried)
    else:
        outcomes = job.result()[0]
    for c, (ok, value) in zip(carried, outcomes, strict=True):
        if c.ran.done():
            continue
        if ok:
            c.ran.set_result(value)
        else:
            c.ran.set_exception(value)


class GroupSync:
    """Group commit for the file system: many writers share one ``syncfs``.

    Per-blob fdatasync plus directory fsyncs cost several ms each and serialise on the journal
    (the profile of 4 KiB uploads was mostly directory fsyncs).  :meth:`sync` returns once a sync
    that *started after the call* has finished, which covers every write made before the call;
    concurrent callers share one sync, and no thread waits for it but the one flushing.  A round
    starts as soon as the previous one has ended, never on a timer.  ``syncfs`` flushes the one
    file system holding the store (data, inodes, directories); where it is missing, ``sync``
    flushes them all.  Loop-confined: call it from the event loop."""

    def __init__(
        self, root: Path | str, run: Callable[[Callable[[], Any]], Awaitable[Any]]
    ) -> None:
        self._root = root
        self._run = run
        self._issued = 0
        self._waiters: list[Waiter] = []
        self._carried: list[Carried[Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._syncfs = _load_syncfs()

    async def sync(self) -> None:
        """Wait until everything written before the call is durable."""
        self._issued += 1
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((self._issued, done))
        self._start()
        await done

    def carry(self, fn: Callable[[], T]) -> Carried[T]:
        """Run ``fn`` (a short file operation) in the next round's thread, before its flush: one
        thread hand-off for all operations of the round instead of one each.  Await
        ``durable`` for its result once it is durable; ``ran`` says when it has run (a caller
        that gives up must still wait for that before touching what ``fn`` uses)."""
        loop = asyncio.get_running_loop()
        carried = Carried(fn, loop.create_future(), loop.create_future())
        self._carried.append(carried)
        self._start()
        return carried

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flusher())

    async def _flusher(self) -> None:
        try:
            while self._waiters or self._carried:
                upto = self._issued  # a flush starting now covers every call so far
                carried, self._carried = self._carried, []
                error: Exception | None = None
                outcomes: list[Any] = []
                job = asyncio.ensure_future(
                    self._run(partial(_run_round, [c.fn for c in carried], self._flush))
                )
                # Operations that ran are reported to their callers even if this task is
                # cancelled: the thread cannot be stopped, and they used the callers' files.
                job.add_done_callback(partial(_deliver_ran, carried))
                try:
                    outcomes, error = await asyncio.shield(job)
                except asyncio.CancelledError:
                    # Nothing is known to be durable: no waiter may go on as if it were, nor
                    # wait for a round that will never end.
                    failure = StorageFailure("blob store sync was interrupted")
                    waiters, self._waiters = self._waiters, []
                    fail_all(waiters, failure)
                    for c in [*carried, *self._carried]:
                        if not c.durable.done():
                            c.durable.set_exception(failure)
                    self._carried = []
                    raise
                except OSError as exc:
                    error = exc
                except Exception:  # e.g. RuntimeError: the store's pool is shut down
                    error = StorageFailure("blob store sync could not run")
                for i, c in enumerate(carried):
                    if c.durable.done():
                        continue
                    ok, value = outcomes[i] if i < len(outcomes) else (False, error)
                    if not ok:
                        c.durable.set_exception(value)
                    elif error is not None:
                        c.durable.set_exception(error)
                    else:
                        c.durable.set_result(value)
                self._waiters = answer_covered(self._waiters, upto, error)
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
