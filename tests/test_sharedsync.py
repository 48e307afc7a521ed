"""Workers serving one store share its ``syncfs`` (blobstore/sharedsync.py): a caller returns
only after a flush that started after its call has finished, in any process, and callers that
wait together are covered by one flush.  Each ``SharedSync`` here opens the numbers file on its
own, as a worker process does (``flock`` locks open files, not processes)."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

from blobstore.sharedsync import SEQ_FILE, SharedSync


class Flushes:
    """A flush that counts, and can be held until released."""

    def __init__(self) -> None:
        self.count = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def __call__(self) -> None:
        self.count += 1
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise OSError(errno.EIO, "I/O error")


def test_a_flush_that_started_before_the_call_does_not_cover_it(tmp_path: Path) -> None:
    flushes = Flushes()
    a, b = SharedSync(tmp_path, flushes), SharedSync(tmp_path, flushes)
    try:
        a.flush()
        b.flush()  # a's flush had ended before this call: not enough
        a.flush()
        assert flushes.count == 3
        assert (tmp_path / SEQ_FILE).stat().st_size == 16
    finally:
        a.close()
        b.close()


def test_callers_waiting_during_a_flush_share_the_next_one(tmp_path: Path) -> None:
    flushes = Flushes()
    syncs = [SharedSync(tmp_path, flushes) for _ in range(3)]
    try:
        flushes.release.clear()
        first = threading.Thread(target=syncs[0].flush)
        first.start()
        assert flushes.entered.wait(10)
        # Both call while the first flush runs: it started before their calls, so neither may
        # count on it; one flush after it covers both.
        waiting = [threading.Thread(target=s.flush) for s in syncs[1:]]
        for t in waiting:
            t.start()
        time.sleep(0.2)  # both are waiting for the lock
        assert flushes.count == 1
        flushes.release.set()
        for t in [first, *waiting]:
            t.join(10)
            assert not t.is_alive()
        assert flushes.count == 2
    finally:
        for s in syncs:
            s.close()


def test_a_failed_flush_covers_nobody(tmp_path: Path) -> None:
    flushes = Flushes()
    a, b = SharedSync(tmp_path, flushes), SharedSync(tmp_path, flushes)
    try:
        flushes.fail = True
        with pytest.raises(OSError, match="I/O error"):
            a.flush()
        flushes.fail = False
        b.flush()
        assert flushes.count == 2
    finally:
        a.close()
        b.close()


def test_where_the_numbers_file_cannot_be_made_every_flush_is_its_own(tmp_path: Path) -> None:
    flushes = Flushes()
    sync = SharedSync(tmp_path / "missing", flushes)
    sync.flush()
    sync.flush()
    assert flushes.count == 2
    assert not (tmp_path / "missing").exists()
    sync.close()
