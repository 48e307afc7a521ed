"""The download's stall guard on its own: when it cuts a connection (the client took no bytes
for the timeout) and when it leaves one alone (the client keeps taking bytes, or nothing waits
for it).  The transport here is the smallest stand-in for what the guard reads of one: what it
still holds and whether it is closing; tests/test_api_download_stall.py covers a real socket."""

from __future__ import annotations

import asyncio
import time

from filesvc.download import StallGuard

TIMEOUT = 0.2


class HeldBytes(asyncio.Transport):
    """A transport holding ``held`` bytes it has not sent; records when it was aborted."""

    def __init__(self, held: int) -> None:
        super().__init__()
        self.held = held
        self.aborted_at: float | None = None

    def get_write_buffer_size(self) -> int:
        return self.held

    def is_closing(self) -> bool:
        return self.aborted_at is not None

    def abort(self) -> None:
        self.aborted_at = time.monotonic()


async def test_a_client_taking_no_bytes_is_cut_but_not_before_the_timeout() -> None:
    transport = HeldBytes(4 << 20)
    start = time.monotonic()
    guard = StallGuard(transport, TIMEOUT)
    for _ in range(100):  # cut after one to one and a half timeouts, however late the loop is
        if transport.aborted_at is not None:
            break
        await asyncio.sleep(TIMEOUT / 4)
    guard.cancel()
    assert guard.stalled
    assert transport.aborted_at is not None
    assert transport.aborted_at - start >= TIMEOUT * 0.99


async def test_a_client_that_keeps_taking_bytes_is_never_cut() -> None:
    transport = HeldBytes(8 << 20)
    guard = StallGuard(transport, TIMEOUT)
    for _ in range(12):  # six timeouts, each with bytes taken
        await asyncio.sleep(TIMEOUT / 4)
        transport.held -= 4096
    guard.cancel()
    assert not guard.stalled
    assert transport.aborted_at is None


async def test_new_bytes_handed_over_count_as_progress() -> None:
    """The transport's level alone can repeat (taken as much as was added): what the stream has
    handed over tells the two apart."""
    transport = HeldBytes(1 << 20)
    guard = StallGuard(transport, TIMEOUT)
    for _ in range(12):
        await asyncio.sleep(TIMEOUT / 4)
        guard.fed += 1 << 20
    guard.cancel()
    assert transport.aborted_at is None


async def test_nothing_waiting_for_the_client_is_no_stall() -> None:
    """An empty buffer (the stream is waiting on its own disk, say) never cuts the client."""
    transport = HeldBytes(0)
    guard = StallGuard(transport, TIMEOUT)
    await asyncio.sleep(3 * TIMEOUT)
    guard.cancel()
    assert transport.aborted_at is None


async def test_cancelled_guard_never_fires() -> None:
    transport = HeldBytes(1 << 20)
    StallGuard(transport, TIMEOUT).cancel()
    await asyncio.sleep(2 * TIMEOUT)
    assert transport.aborted_at is None
