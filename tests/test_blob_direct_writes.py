"""Appending a large blob with O_DIRECT: exact bytes whatever the pieces, the unaligned rest
written through the page cache, and the same bytes where the file system refuses direct
writes."""

from __future__ import annotations

import errno
import fcntl
import os
import random
from pathlib import Path

import pytest

from blobstore import direct_writes
from blobstore.direct_writes import ALIGN, O_DIRECT, DirectAppender

BUFFER = 4 * ALIGN


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | direct_writes.open_flags())


def _append(path: Path, data: bytes, sizes: list[int]) -> DirectAppender:
    fd = _open(path)
    try:
        appender = DirectAppender(fd, BUFFER)
        pos = i = 0
        while pos < len(data):
            n = sizes[i % len(sizes)]
            appender.append([memoryview(data)[pos : pos + n], memoryview(b"")])
            pos, i = pos + n, i + 1
        appender.finish()
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT  # an ordinary descriptor again
    finally:
        os.close(fd)
    return appender


@pytest.mark.parametrize(
    "size, sizes",
    [
        (0, [1]),
        (100, [7]),
        (BUFFER, [BUFFER]),
        (3 * BUFFER, [ALIGN - 1, ALIGN + 1, 1]),
        (5 * BUFFER + 123, [BUFFER + 5000, 3]),
        (2 * BUFFER + ALIGN, [10 * BUFFER]),
    ],
)
def test_appended_bytes_are_exactly_those_given(
    tmp_path: Path, size: int, sizes: list[int]
) -> None:
    data = random.Random(size).randbytes(size)
    _append(tmp_path / "blob", data, sizes)
    assert (tmp_path / "blob").read_bytes() == data


def test_refused_direct_writes_go_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pwrite = os.pwrite

    def refusing(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    data = random.Random(1).randbytes(3 * BUFFER + 77)
    appender = _append(tmp_path / "blob", data, [5000])
    assert not appender.direct
    assert (tmp_path / "blob").read_bytes() == data


def test_other_write_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    fd = _open(tmp_path / "blob")
    appender = DirectAppender(fd, BUFFER)
    try:
        with pytest.raises(OSError) as caught:
            appender.append([memoryview(bytes(BUFFER))])
        assert caught.value.errno == errno.ENOSPC
    finally:
        appender.close()
        appender.close()  # closing twice is harmless (a discard after a failed publish)
        os.close(fd)


def test_buffer_must_be_aligned() -> None:
    with pytest.raises(ValueError):
        DirectAppender(0, ALIGN + 1)
