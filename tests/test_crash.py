"""kill -9 of the real server at several moments of streaming uploads (DESIGN invariants 1 and 2).

Each round starts ``filesvc serve`` on the same data directory (so every round after the first is
a restart), checks what earlier rounds left, streams uploads (single-request multipart and
chunked), and SIGKILLs the server at one moment.  Right after the kill, before any restart,
``blobstore fsck --full`` must exit 0 (orphans and temp files are hints).  After the restart:
every upload answered 2xx downloads byte-identical, every chunk answered 2xx is stored, and no
file whose upload was cut serves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import xxhash

from blobstore import layout
from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server

pytestmark = pytest.mark.slow

BLOBSTORE = Path(sys.executable).parent / "blobstore"
PIECE = 64 << 10
CHUNK = 256 << 10
CHUNKS = 4
HEADERS = bearer(token())
FILES = f"{PREFIX}/companies/acme/files"


@dataclass
class Ledger:
    """What the server acknowledged, and what was cut."""

    done: dict[str, bytes] = field(default_factory=dict)  # file id -> content, answered 2xx
    chunks: dict[str, dict[int, bytes]] = field(default_factory=dict)  # acknowledged chunks
    cut: set[str] = field(default_factory=set)  # files whose upload the kill interrupted
    intended: dict[str, bytes] = field(default_factory=dict)  # what a cut upload was sending
    sent: set[str] = field(default_factory=set)  # digests of every content sent
    first_done: asyncio.Event = field(default_factory=asyncio.Event)
    mid_chunk: asyncio.Event = field(default_factory=asyncio.Event)


async def slow_stream(
    data: bytes, *, pause: float, signal_at: asyncio.Event | None = None
) -> AsyncIterator[bytes]:
    for i in range(0, len(data), PIECE):
        if signal_at is not None and i >= len(data) // 2:
            signal_at.set()
        yield data[i : i + PIECE]
        await asyncio.sleep(pause)


def content(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


async def single(
    session: aiohttp.ClientSession, base: str, data: bytes, ledger: Ledger, *, pause: float
) -> None:
    ledger.sent.add(xxhash.xxh3_128_hexdigest(data))
    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append(
            aiohttp.payload.AsyncIterablePayload(
                slow_stream(data, pause=pause), content_type="application/octet-stream"
            )
        )
        part.set_content_disposition("form-data", name="file", filename="blob.bin")
        async with session.post(f"{base}{FILES}", data=form, headers=HEADERS) as resp:
            body = await resp.json()
    assert resp.status == 200, body
    file_id = body["resource"]["id"]
    ledger.done[file_id] = data
    ledger.first_done.set()


async def chunked(
    session: aiohttp.ClientSession, base: str, data: bytes, ledger: Ledger, *, pause: float
) -> None:
    ledger.sent.add(xxhash.xxh3_128_hexdigest(data))
    params = {"filename": "c.bin", "total_chunks": str(CHUNKS), "total_size": str(len(data))}
    async with session.post(f"{base}{FILES}", params=params, headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        file_id = (await resp.json())["resource"]["id"]
    ledger.cut.add(file_id)
    ledger.intended[file_id] = data
    ledger.chunks[file_id] = {}
    for k in range(CHUNKS):
        piece = data[k * CHUNK : (k + 1) * CHUNK]
        url = f"{base}{FILES}/{file_id}"
        q = {"chunk_number": str(k + 1), "total_chunks": str(CHUNKS), "total_size": str(len(data))}
        stream = slow_stream(piece, pause=pause, signal_at=ledger.mid_chunk if k == 2 else None)
        headers = {**HEADERS, "Content-Type": "application/octet-stream"}
        async with session.post(url, params=q, data=stream, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            resource = (await resp.json())["resource"]
        ledger.chunks[file_id][k + 1] = piece
    assert resource["upload_data"]["size"] == len(data)
    ledger.cut.discard(file_id)
    ledger.done[file_id] = data


Moment = Callable[[Ledger], Awaitable[None]]


async def after_first_ack(ledger: Ledger) -> None:
    await ledger.first_done.wait()


async def mid_chunk(ledger: Ledger) -> None:
    await ledger.mid_chunk.wait()


async def after_delay(ledger: Ledger) -> None:
    # Counted from the round's first answer: on a loaded 2-core machine 0.05-0.4 s from the
    # start can pass before any upload is answered, and the round then checks nothing.
    await ledger.first_done.wait()
    await asyncio.sleep(random.uniform(0.05, 0.4))


MOMENTS: list[tuple[str, Moment]] = [
    ("after the first answer, others streaming", after_first_ack),
    ("in the middle of a chunk", mid_chunk),
    ("at a random moment", after_delay),
    ("at another random moment", after_delay),
]


def fsck_full(data_dir: Path) -> tuple[int, list[dict[str, object]]]:
    proc = subprocess.run(
        [str(BLOBSTORE), "fsck", "--data-dir", str(data_dir), "--full", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, lines


def complete_files(data_dir: Path) -> list[str]:
    uri = f"{layout.db_path(data_dir).as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return [r[0] for r in conn.execute("SELECT file_id FROM manifests WHERE complete = 1")]


async def check_survivors(session: aiohttp.ClientSession, base: str, ledger: Ledger) -> None:
    for file_id, data in ledger.done.items():
        async with session.get(f"{base}{FILES}/{file_id}/download", headers=HEADERS) as resp:
            assert resp.status == 200, f"acknowledged upload {file_id} lost: {resp.status}"
            assert await resp.read() == data, f"acknowledged upload {file_id} changed"
    for file_id in ledger.cut:
        for number in ledger.chunks.get(file_id, {}):
            async with session.get(
                f"{base}{FILES}/{file_id}", params={"chunk_number": str(number)}, headers=HEADERS
            ) as resp:
                assert resp.status == 200, f"acknowledged chunk {number} of {file_id} lost"
        async with session.get(f"{base}{FILES}/{file_id}/download", headers=HEADERS) as resp:
            # A cut upload is unknown (404) or still incomplete (409), unless the kill came after
            # its last chunk was committed but before the answer reached us: then it serves the
            # whole content, never part of it.
            if resp.status == 200:
                body = await resp.read()
                assert body == ledger.intended[file_id], f"cut upload {file_id} serves a mix"
            else:
                assert resp.status in (404, 409), f"cut upload {file_id} answered {resp.status}"


async def test_kill_9_mid_upload_leaves_a_clean_store_and_keeps_every_answered_upload(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(9)
    ledger = Ledger()
    async with aiohttp.ClientSession() as session:
        for name, moment in MOMENTS:
            server: ServerProcess = await asyncio.to_thread(start_server, data_dir)
            try:
                await check_survivors(session, server.url, ledger)
                ledger.first_done.clear()
                ledger.mid_chunk.clear()
                uploads = [
                    single(session, server.url, content(rng, 96 << 10), ledger, pause=0.0),
                    *(
                        single(session, server.url, content(rng, (1 << 20) + i), ledger, pause=0.05)
                        for i in range(3)
                    ),
                    *(
                        chunked(
                            session, server.url, content(rng, CHUNK * CHUNKS), ledger, pause=0.01
                        )
                        for _ in range(2)
                    ),
                ]
                tasks = [asyncio.create_task(u) for u in uploads]
                await asyncio.wait_for(moment(ledger), 30)
            finally:
                server.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(server.proc.wait)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert any(isinstance(r, BaseException) for r in results), f"{name}: nothing was cut"

            code, lines = await asyncio.to_thread(fsck_full, data_dir)
            damage = [x for x in lines if x.get("severity") == "damage"]
            assert (code, damage) == (0, []), f"{name}: fsck after kill -9: {lines}"

        server = await asyncio.to_thread(start_server, data_dir)
        try:
            await check_survivors(session, server.url, ledger)
            # Every complete file, answered or not (a kill can eat the answer of a commit),
            # holds exactly one of the contents sent: nothing half-written became a file.
            complete = await asyncio.to_thread(complete_files, data_dir)
            assert set(ledger.done) <= set(complete)
            for file_id in complete:
                url = f"{server.url}{FILES}/{file_id}/download"
                async with session.get(url, headers=HEADERS) as resp:
                    assert resp.status == 200
                    assert xxhash.xxh3_128_hexdigest(await resp.read()) in ledger.sent
        finally:
            await asyncio.to_thread(server.stop)
    assert len(ledger.done) >= len(MOMENTS)  # each round got at least one answer in
    assert ledger.cut  # and some uploads were cut
