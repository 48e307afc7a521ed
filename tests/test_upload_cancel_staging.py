"""An upload cancelled (client gone) while a staging operation runs in a thread.

A thread cannot be stopped: the operation finishes after the caller has gone, and it uses the
staging's fd.  Discard must wait for it, or the temp file and its fd leak (or the fd is closed
under the running operation, and its number may by then be another file's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from blobstore.local import LocalBackend
from blobstore.local_staging import LocalStaging
from blobstore.store import WRITE_BATCH, ContentStore


def _open_fds_under(directory: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory)):
                out.append(target)
    return out


def _gate(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, threading.Event]:
    """Make LocalStaging.<name> (run in a store thread) wait for ``go`` before it starts."""
    entered, go = threading.Event(), threading.Event()
    real: Callable[..., object] = getattr(LocalStaging, name)

    def gated(self: LocalStaging, *args: object) -> object:
        entered.set()
        assert go.wait(10)
        return real(self, *args)

    monkeypatch.setattr(LocalStaging, name, gated)
    return entered, go


async def _cancel_when(
    entered: threading.Event, go: threading.Event, task: asyncio.Task[object]
) -> None:
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    await asyncio.sleep(0)  # the put has seen the cancellation and gone to its cleanup
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _assert_clean(backend: LocalBackend) -> None:
    assert [info async for info in backend.scan()] == []
    await backend.close()  # waits for the store's threads
    assert await asyncio.to_thread(os.listdir, backend.tmp) == []
    assert await asyncio.to_thread(_open_fds_under, backend.root) == []


async def test_cancel_during_prepare_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    store = ContentStore(backend)
    entered, go = _gate(monkeypatch, "_prepare")
    task = asyncio.create_task(store.put_bytes(b"small upload"))
    await _cancel_when(entered, go, task)
    await _assert_clean(backend)


async def test_cancel_while_a_write_is_in_flight_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    store = ContentStore(backend)
    entered, go = _gate(monkeypatch, "_write_all")

    async def body() -> AsyncIterator[bytes]:
        for _ in range(3):  # the first batch is held, the second goes to a thread, the third queues
            yield b"x" * WRITE_BATCH

    task = asyncio.create_task(store.put(body()))
    await _cancel_when(entered, go, task)
    await _assert_clean(backend)
