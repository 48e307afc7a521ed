"""The local backend's read paths for downloads: whole reads of up to a MiB (from the page cache
on the calling thread, else in a store thread, also where the file system refuses RWF_NOWAIT),
and a blob's bytes as mapped windows (right bytes for any range, never more than a window per
view, short rather than a crash when the file was cut before a window is mapped)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from blobstore.local import LocalBackend
from blobstore.local_maps import MAP_WINDOW
from blobstore.refs import BlobRef
from tests.blob_backends import local_backend_holding

MiB = 1 << 20
REF = BlobRef("xxh3_128-" + "ab" * 16)


def _make(root: Path, content: bytes) -> LocalBackend:
    return local_backend_holding(root, REF, content)


async def _backend_with(root: Path, content: bytes) -> LocalBackend:
    return await asyncio.to_thread(_make, root, content)


def _roots(tmp_path: Path) -> list[Path]:
    roots = [tmp_path / "disk"]
    shm = Path("/dev/shm")  # tmpfs: preadv with RWF_NOWAIT is refused there (EOPNOTSUPP)
    if shm.is_dir() and os.access(shm, os.W_OK):
        roots.append(shm / f"filesvc-test-{os.getpid()}-{tmp_path.name}")
    return roots


async def test_whole_reads_give_the_bytes_on_any_file_system(tmp_path: Path) -> None:
    content = os.urandom(3 * MiB)
    for root in _roots(tmp_path):
        backend = await _backend_with(root, content)
        try:
            for start, end in ((0, MiB), (12345, 12345 + MiB), (3 * MiB - 70_000, 3 * MiB)):
                # twice: the first may find the file system refuses RWF_NOWAIT, the second
                # then goes straight to the thread
                assert await backend.read_whole(REF, start, end) == content[start:end]
                assert await backend.read_whole(REF, start, end) == content[start:end]
            # past the end: the bytes there are (the caller sees the short count)
            assert await backend.read_whole(REF, 3 * MiB - 100_000, 4 * MiB) == content[-100_000:]
        finally:
            await backend.close()
            if root.is_relative_to("/dev/shm"):
                shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 2 * MAP_WINDOW + 5), (4097, MAP_WINDOW + 1), (MAP_WINDOW - 3, MAP_WINDOW + 3)],
)
async def test_mapped_views_are_the_range_a_window_at_most_each(
    tmp_path: Path, start: int, end: int
) -> None:
    content = os.urandom(2 * MAP_WINDOW + 5)
    backend = await _backend_with(tmp_path, content)
    stream = await backend.open(REF, start, end)
    try:
        got = bytearray()
        async for view in stream.mapped():
            assert 0 < len(view) <= MAP_WINDOW
            got += view  # read here only because nothing truncates this file
            del view
        assert got == content[start:end]
    finally:
        await stream.aclose()
        await backend.close()


async def test_mapped_views_end_short_when_the_file_was_cut(tmp_path: Path) -> None:
    content = os.urandom(3 * MAP_WINDOW)
    backend = await _backend_with(tmp_path, content)
    stream = await backend.open(REF)  # size learnt here: 3 windows
    os.truncate(backend.local_path(REF), MAP_WINDOW + 100)
    try:
        seen = 0
        async for view in stream.mapped():
            seen += len(view)  # counted, never read: the pages past the cut are gone
            del view
        assert seen < len(content)  # short: the download's caller cuts its connection
    finally:
        await stream.aclose()
        await backend.close()


async def test_a_mapped_stream_closed_early_waits_for_its_mapping(tmp_path: Path) -> None:
    backend = await _backend_with(tmp_path, os.urandom(3 * MAP_WINDOW))
    stream = await backend.open(REF)
    views = stream.mapped()
    first = await anext(views)
    assert len(first) == MAP_WINDOW
    del first
    await views.aclose()
    await stream.aclose()  # the window mapped ahead is done before the fd is closed
    assert stream.length == 3 * MAP_WINDOW
    await backend.close()
