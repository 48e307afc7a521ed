"""Kill -9 of the server while a preview job runs: after a restart the job runs again and ends.

The job is held in its worker deterministically: the one worker process is warmed by a first job
and then stopped (SIGSTOP), so the next job goes to it, is recorded as running and cannot end
before the server is killed, however busy the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import aiohttp
import psutil
import pytest

from blobstore import layout
from tests.helpers import PREFIX, bearer, token
from tests.server_proc import start_server

HEADERS = bearer(token())
FILES = f"{PREFIX}/companies/acme/files"


def job_state(data_dir: Path, file_id: str) -> str | None:
    uri = f"{layout.db_path(data_dir).as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        row = conn.execute(
            "SELECT state FROM thumbnail_jobs WHERE file_id = ?", (file_id,)
        ).fetchone()
    return None if row is None else str(row[0])


async def upload(session: aiohttp.ClientSession, base: str, content: bytes) -> str:
    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append(content, {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="file", filename="x.bin")
        async with session.post(f"{base}{FILES}", data=form, headers=HEADERS) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["resource"]["id"])


async def settled(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """The file resource once its thumbnails are no longer being made."""
    for _ in range(600):
        async with session.get(url, headers=HEADERS) as resp:
            resource: dict[str, object] = (await resp.json())["resource"]
        metadata = resource["metadata"]
        assert isinstance(metadata, dict)
        if metadata["thumbnails_status"] != "waiting":
            return resource
        await asyncio.sleep(0.1)
    raise AssertionError(f"thumbnails still waiting: {resource}")


def the_worker(server_pid: int) -> psutil.Process:
    workers = [
        child
        for child in psutil.Process(server_pid).children()
        if "filesvc.thumbnails.worker" in child.cmdline()
    ]
    assert len(workers) == 1, workers
    return workers[0]


@pytest.mark.parametrize("kind", ["video", "office"])
async def test_kill_9_during_a_preview_job_resumes_it_after_restart(
    tmp_path: Path, kind: str
) -> None:
    from tests.office_media import text_document
    from tests.thumbnail_media import make_video, solid

    data_dir = tmp_path / "data"
    content = (
        make_video("mp4", "libx264", 1920, 1080, frames=2)
        if kind == "video"
        else text_document("Minutes", pages=3)
    )
    env = {"FILESVC_THUMB_WORKERS": "1"}
    async with aiohttp.ClientSession() as session:
        server = await asyncio.to_thread(start_server, data_dir, env=env)
        worker: psutil.Process | None = None
        try:
            warm = await upload(session, server.url, solid(64, 48).write_to_buffer(".png"))
            warmed = await settled(session, f"{server.url}{FILES}/{warm}")
            assert warmed["metadata"]["thumbnails_status"] == "done"  # type: ignore[index]
            worker = the_worker(server.proc.pid)
            worker.send_signal(signal.SIGSTOP)
            file_id = await upload(session, server.url, content)
            for _ in range(2000):
                if await asyncio.to_thread(job_state, data_dir, file_id) != "pending":
                    break
                await asyncio.sleep(0.005)
            assert await asyncio.to_thread(job_state, data_dir, file_id) == "running"
        finally:
            server.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.proc.wait)
            if worker is not None:
                # The worker dies with the server (PR_SET_PDEATHSIG); a stopped one too.
                await asyncio.to_thread(worker.wait, 10)

        server = await asyncio.to_thread(start_server, data_dir, env=env)
        try:
            url = f"{server.url}{FILES}/{file_id}"
            resource = await settled(session, url)
            assert resource["metadata"]["thumbnails_status"] == "done", resource  # type: ignore[index]
            thumbnails = resource["thumbnails"]
            assert isinstance(thumbnails, list)
            assert len(thumbnails) == (1 if kind == "video" else 3)
            async with session.get(url + "/download", headers=HEADERS) as resp:
                assert await resp.read() == content
        finally:
            await asyncio.to_thread(server.stop)
