"""Plaintext never touches a disk: a real server (encryption on, its default) takes uploads of
every kind, makes previews (image, video, office), is killed with -9 in the middle of an upload,
restarted, and gc runs; then neither the data directory nor the temp directories hold a known
marker anywhere, while every file still downloads whole."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pyvips

from tests.helpers import PREFIX, bearer, token
from tests.server_proc import ServerProcess, start_server
from tests.thumbnail_media import make_video
from tests.tus_helpers import PATCH_TYPE, auth, meta, uploads

BLOBSTORE = Path(sys.executable).parent / "blobstore"
FILES = f"{PREFIX}/companies/acme/files"
HEADERS = bearer(token())
SYNC = {"thumbnail_sync": "1"}
# A plaintext copy made by the server would be about the size of what was uploaded here; files
# this large in the shared temp directories are other jobs' and are not read.
SCAN_LIMIT = 256 << 20


def marker() -> bytes:
    return b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()


def files_under(root: Path, *, since: float | None = None) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_file() or path.is_symlink() or st.st_uid != os.getuid():
                continue
            if since is not None and st.st_mtime < since:
                continue
            if st.st_size <= SCAN_LIMIT:
                yield path


def holding(paths: Iterator[Path], needle: bytes) -> list[Path]:
    found = []
    for path in paths:
        try:
            if needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def png_with(mark: bytes) -> bytes:
    return (
        bytes(pyvips.Image.black(64, 48).new_from_image([30, 90, 200]).write_to_buffer(".png"))
        + mark
    )


def mp4_with(mark: bytes) -> bytes:
    # A 'free' box at the end: valid MP4, holding the marker.
    return (
        make_video("mp4", "libx264", 320, 240, frames=3)
        + struct.pack(">I", 8 + len(mark))
        + b"free"
        + mark
    )


async def upload(session: aiohttp.ClientSession, base: str, data: bytes, name: str) -> str:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with session.post(f"{base}{FILES}", data=form, params=SYNC, headers=HEADERS) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    resource = body["resource"]
    return str(resource["id"])


async def chunked(session: aiohttp.ClientSession, base: str, data: bytes) -> str:
    n = 3
    size = -(-len(data) // n)
    q = {"filename": "c.bin", "total_chunks": str(n), "total_size": str(len(data))}
    async with session.post(f"{base}{FILES}", params=q, headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        file_id = str((await resp.json())["resource"]["id"])
    for k in range(n):
        q = {"chunk_number": str(k + 1), "total_chunks": str(n), "total_size": str(len(data))}
        headers = {**HEADERS, "Content-Type": "application/octet-stream"}
        piece = data[k * size : (k + 1) * size]
        async with session.post(
            f"{base}{FILES}/{file_id}", params=q, data=piece, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
    return file_id


async def tus(session: aiohttp.ClientSession, base: str, data: bytes) -> str:
    headers = auth(**{"Upload-Length": str(len(data)), "Upload-Metadata": meta(filename="t.bin")})
    async with session.post(f"{base}{uploads()}", headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        location = resp.headers["Location"]
    url = location if location.startswith("http") else f"{base}{location}"
    half = len(data) // 2
    for offset, piece in ((0, data[:half]), (half, data[half:])):
        patch = auth(**{"Upload-Offset": str(offset), **PATCH_TYPE})
        async with session.patch(url, data=piece, headers=patch) as resp:
            assert resp.status == 204, await resp.text()
    return url.rstrip("/").rsplit("/", 1)[1]


async def download(session: aiohttp.ClientSession, base: str, file_id: str) -> bytes:
    async with session.get(f"{base}{FILES}/{file_id}/download", headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def thumbnails_of(session: aiohttp.ClientSession, base: str, file_id: str) -> list[object]:
    async with session.get(f"{base}{FILES}/{file_id}", headers=HEADERS) as resp:
        body = await resp.json()
    assert body["resource"]["metadata"]["thumbnails_status"] == "done", body
    return list(body["resource"]["thumbnails"])


async def cut_upload(base: str, data: bytes, server: ServerProcess) -> None:
    """A single upload killed (-9) half-way through its body."""
    halfway = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 64 << 10):
            if i >= len(data) // 2:
                halfway.set()
                await asyncio.sleep(30)
            yield data[i : i + (64 << 10)]

    async def send() -> None:
        headers = {**HEADERS, "Content-Type": "application/octet-stream"}
        q = {"filename": "cut.bin", "total_chunks": "1", "total_size": str(len(data))}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}{FILES}", params=q, headers=HEADERS) as resp:
                file_id = (await resp.json())["resource"]["id"]
            q["chunk_number"] = "1"
            await session.post(f"{base}{FILES}/{file_id}", params=q, data=body(), headers=headers)

    task = asyncio.create_task(send())
    await asyncio.wait_for(halfway.wait(), 30)
    await asyncio.sleep(0.5)  # let the server write what it got
    server.proc.kill()
    server.proc.wait()
    task.cancel()
    with pytest.raises((asyncio.CancelledError, aiohttp.ClientError)):
        await task


@pytest.mark.slow
async def test_no_plaintext_reaches_a_disk(tmp_path: Path) -> None:
    started = time.time() - 1
    mark = marker()
    data_dir = tmp_path / "data"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp), "FILESVC_THUMB_WORKERS": "1"}
    server = start_server(data_dir, env=env)
    contents: dict[str, bytes] = {}
    try:
        async with aiohttp.ClientSession() as session:
            base = server.url
            small = b"small " + mark
            large = (mark + os.urandom(1000)) * 3000  # ~3 MiB, many segments
            contents[await upload(session, base, small, "s.bin")] = small
            contents[await upload(session, base, small, "again.bin")] = small  # dedup hit
            contents[await chunked(session, base, large)] = large
            tus_data = (mark + os.urandom(500)) * 300
            contents[await tus(session, base, tus_data)] = tus_data
            image = png_with(mark)
            video = mp4_with(mark)
            text = b"Minutes of the meeting\n" + mark + b"\n" + b"line\n" * 50
            for data, name in ((image, "i.png"), (video, "v.mp4"), (text, "notes.txt")):
                file_id = await upload(session, base, data, name)
                contents[file_id] = data
                assert await thumbnails_of(session, base, file_id), name
            await cut_upload(base, (mark + os.urandom(4000)) * 500, server)
        server = start_server(data_dir, env=env)
        async with aiohttp.ClientSession() as session:
            for file_id, data in contents.items():
                assert await download(session, server.url, file_id) == data
        gc = subprocess.run(
            [
                str(BLOBSTORE),
                "gc",
                "--data-dir",
                str(data_dir),
                "--grace",
                "0s",
                "--abandon-after",
                "0s",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert gc.returncode == 0, gc.stderr
    finally:
        server.stop()
    assert [p for p in files_under(data_dir) if p.name.endswith(".sqlite3")], (
        "the scan sees the store"
    )
    assert holding(files_under(data_dir), mark) == []
    assert holding(files_under(temp), mark) == []
    for shared in (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")):
        assert holding(files_under(shared, since=started), mark) == [], shared
    # The check can fail: the marker is found where plaintext is (the control).
    (temp / "control").write_bytes(b"x" + mark)
    assert holding(files_under(temp), mark) == [temp / "control"]
