"""The body rate rule judges the client, never our side: time the server spends writing what it
received does not count against the client (its bytes wait in the socket meanwhile)."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

from blobstore.memory import MemoryBackend, MemoryStaging
from filesvc.settings import Settings
from tests.conftest import AppFactory

MiB = 1 << 20


class SlowDiskStaging(MemoryStaging):
    async def write(self, data: bytes) -> None:
        await asyncio.sleep(0.4)  # a disk far slower than the client
        await super().write(data)


class SlowDisk(MemoryBackend):
    async def stage(self, size: int | None = None) -> MemoryStaging:
        return SlowDiskStaging(self)


async def test_a_fast_client_on_a_slow_disk_is_not_judged_too_slow(
    make_api: AppFactory, settings: Settings
) -> None:
    # 4 MiB through a store that takes 0.4 s a MiB: about 2.5 MiB/s of wall time, far below the
    # 16 MiB/s asked here; the client itself sends as fast as the loopback carries.
    demanding = replace(settings, body_min_rate=16 * MiB, body_rate_window=0.4, body_rate_grace=0.0)
    api = await make_api(settings_=demanding, backend=SlowDisk())
    resp = await api.client.post(
        api.files(),
        data=io.BytesIO(b"f" * (4 * MiB)),
        params={"filename": "big.bin"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["resource"]["upload_data"]["uploaded_size"] == 4 * MiB
