"""The local backend's pump (blobstore/local_pump.py): a blob's range sent to a socket by a thread
of the store, over a real socket pair: the right bytes for any range, short when the file is, a
stop or a cancellation that ends the thread before the blob's fd is closed, a peer that takes no
bytes timed out, and never more pumps at once than there are pump threads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blobstore.local import PUMP_THREADS, LocalBackend, LocalBlobStream
from blobstore.local_pump import MAP_WINDOW, SEND_SLICE
from blobstore.port import Pumps, supports
from blobstore.refs import BlobRef
from tests.blob_backends import local_backend_holding

MiB = 1 << 20
REF = BlobRef("xxh3_128-" + "cd" * 16)


def _make(root: Path, content: bytes) -> LocalBackend:
    return local_backend_holding(root, REF, content)


def _pair() -> tuple[socket.socket, socket.socket]:
    """(the sending end, non-blocking as a loop's connection is; a duplicate for the pump)."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    return ours, peer


@contextlib.asynccontextmanager
async def _pumping(
    root: Path, content: bytes
) -> AsyncIterator[tuple[LocalBackend, socket.socket, socket.socket]]:
    """A local backend holding ``content`` as REF and a connected pair (:func:`_pair`), all
    closed after use."""
    backend = await asyncio.to_thread(_make, root, content)
    ours, peer = _pair()
    try:
        yield backend, ours, peer
    finally:
        ours.close()
        peer.close()
        await backend.close()


def _dup(sock: socket.socket) -> socket.socket:
    return socket.socket(fileno=os.dup(sock.fileno()))


def _receive(peer: socket.socket, count: int) -> bytes:
    got = bytearray()
    peer.settimeout(20)
    while len(got) < count:
        data = peer.recv(1 << 20)
        if not data:
            break
        got += data
    return bytes(got)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 2 * MAP_WINDOW + 5),
        (4097, MAP_WINDOW + SEND_SLICE + 1),
        (MAP_WINDOW - 1, 2 * MAP_WINDOW),
        (100, 200),
    ],
)
async def test_a_pump_sends_exactly_the_range(tmp_path: Path, start: int, end: int) -> None:
    content = os.urandom(3 * MAP_WINDOW)
    async with _pumping(tmp_path, content) as (backend, ours, peer):
        stream = await backend.open(REF, start, end)
        assert supports(stream, Pumps)
        pump = stream.pump(_dup(ours), 5)
        assert pump is not None
        received = asyncio.create_task(asyncio.to_thread(_receive, peer, end - start))
        assert await pump.run() == end - start == pump.sent
        await stream.aclose()
        assert await received == content[start:end]


async def test_a_pump_ends_short_when_the_file_is_shorter(tmp_path: Path) -> None:
    content = os.urandom(3 * MiB)
    async with _pumping(tmp_path, content) as (backend, ours, peer):
        stream = await backend.open(REF)
        os.truncate(backend.local_path(REF), MiB + 7)  # cut after the open
        pump = stream.pump(_dup(ours), 5)
        assert pump is not None
        received = asyncio.create_task(asyncio.to_thread(_receive, peer, MiB + 7))
        assert await pump.run() == MiB + 7
        await stream.aclose()
        assert await received == content[: MiB + 7]


async def test_a_file_cut_mid_page_under_a_pump_ends_it_at_the_cut(tmp_path: Path) -> None:
    # The window being sent is mapped whole; the file is then cut inside it, mid-page (the
    # page's tail past the cut reads as zeros through the mapping): the pump stops exactly at
    # the cut, and no byte past it goes out.
    content = os.urandom(3 * MiB)
    async with _pumping(tmp_path, content) as (backend, ours, peer):
        stream = await backend.open(REF)
        pump = stream.pump(_dup(ours), 20)
        assert pump is not None
        running = asyncio.create_task(pump.run())
        while pump.sent == 0:  # sending, then blocked: the peer reads nothing yet
            await asyncio.sleep(0.01)
        cut = 2 * MiB + 123
        assert pump.sent < cut
        os.truncate(backend.local_path(REF), cut)
        received = asyncio.create_task(asyncio.to_thread(_receive, peer, len(content)))
        assert await running == cut == pump.sent
        ours.shutdown(socket.SHUT_WR)  # the peer reads to the end of what was sent
        await stream.aclose()
        assert await received == content[:cut]


async def test_a_peer_that_takes_nothing_times_the_pump_out(tmp_path: Path) -> None:
    async with _pumping(tmp_path, os.urandom(16 * MiB)) as (backend, ours, _peer):
        stream = await backend.open(REF)
        pump = stream.pump(_dup(ours), 0.2)
        assert pump is not None
        with pytest.raises(TimeoutError):
            await pump.run()  # the peer never reads
        assert 0 < pump.sent < 16 * MiB
        await stream.aclose()


async def test_a_cancelled_pump_stops_and_the_fd_outlives_its_thread(tmp_path: Path) -> None:
    async with _pumping(tmp_path, os.urandom(16 * MiB)) as (backend, ours, peer):
        stream = await backend.open(REF)
        pump = stream.pump(_dup(ours), 30)
        assert pump is not None
        task = asyncio.create_task(pump.run())
        while pump.sent == 0:  # sending, then blocked: the peer reads nothing
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()  # waits for the thread before closing the blob's fd
        assert isinstance(stream, LocalBlobStream)
        # The peer sees the end of the stream (the pump shut the connection down).
        peer.settimeout(20)
        while peer.recv(1 << 20):
            pass


async def test_no_more_pumps_at_once_than_pump_threads(tmp_path: Path) -> None:
    backend = await asyncio.to_thread(_make, tmp_path, os.urandom(MiB))
    pairs = [_pair() for _ in range(PUMP_THREADS + 1)]
    streams = [await backend.open(REF) for _ in pairs]
    try:
        dups = [_dup(ours) for ours, _ in pairs]
        pumps = [s.pump(d, 5) for s, d in zip(streams, dups, strict=True)]
        assert all(p is not None for p in pumps[:PUMP_THREADS])
        assert pumps[PUMP_THREADS] is None  # all taken: the caller sends another way
        dups[PUMP_THREADS].close()  # and the socket stayed the caller's
        # A stream closed without running its pump gives the thread back.
        await streams[0].aclose()
        again = await backend.open(REF)
        streams.append(again)
        assert again.pump(_dup(pairs[-1][0]), 5) is not None
    finally:
        for s in streams:
            await s.aclose()
        for ours, peer in pairs:
            ours.close()
            peer.close()
        await backend.close()
