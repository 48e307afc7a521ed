"""The thumbnail worker processes and their pipe protocol.

A worker serves many files, of many companies, one after the other over one pipe: an answer read
for the wrong request hands one file's thumbnails to another (a tenant-isolation bug)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pyvips

from filesvc.thumbnails import pool
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.pool import ProcessRenderer


def _run_worker(prelude: str, requests: list[dict[str, object]]) -> list[bytes]:
    """Run the real worker module (after ``prelude``), feed it ``requests``, return its lines."""
    code = prelude + "\nfrom filesvc.thumbnails import worker\nworker.main()\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=b"".join(json.dumps(r).encode() + b"\n" for r in requests),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return out.stdout.splitlines()


def test_what_a_decoder_prints_never_enters_the_answer_channel() -> None:
    """A native library that writes to fd 1 (a debug print, a warning) must not be read as an
    answer: the parent would read it for this job and this job's answer for the next one."""
    prelude = textwrap.dedent(
        """
        import os
        from filesvc.thumbnails import worker
        def probe(path, limits, converter=None):
            os.write(1, b'{"pixels": 1}\\n')  # what a library could print mid-decode
            return 5
        worker.probe_pixels = probe
        """
    )
    lines = _run_worker(prelude, [{"op": "probe", "path": "/nonexistent", "limits": {}}])
    assert len(lines) == 1
    assert json.loads(lines[0])["pixels"] == 5


# A stand-in worker that says more than it is asked: it answers the render of "a" three times.
# Each render answer carries the requested path as its one thumbnail's bytes.
CHATTY_WORKER = textwrap.dedent(
    """
    import json, sys
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        req = json.loads(line)
        if req["op"] == "probe":
            answers = [(dict(pixels=1), b"")]
        else:
            data = req["path"].encode()
            head = dict(status="done", reason=None, thumbnails=[
                dict(mime="image/png", width=1, height=1, size=len(data))])
            answers = [(head, data)] * (3 if req["path"].endswith("a") else 1)
        for head, data in answers:
            if "id" in req:
                head = dict(head, id=req["id"])
            out.write(json.dumps(head).encode() + b"\\n" + data)
        out.flush()
    """
)


async def test_a_stale_answer_is_never_taken_for_the_next_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def start(cls: type[pool._Worker], env: dict[str, str]) -> pool._Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHATTY_WORKER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    monkeypatch.setattr(pool._Worker, "start", classmethod(start))
    renderer = ProcessRenderer(RenderLimits(), workers=1, job_timeout=30, pixel_budget=1 << 30)
    try:
        for name in ["/files/a", "/files/b", "/files/c", "/files/d"]:
            rendered = await renderer(Path(name))
            for thumb in rendered.thumbnails:
                assert thumb.data == name.encode(), f"{name} got the thumbnail of {thumb.data!r}"
    finally:
        await renderer.close()


# A stand-in worker that takes a request and never answers (a long render).
STUCK_WORKER = "import sys, time\nsys.stdin.buffer.readline()\ntime.sleep(600)\n"


async def test_close_stops_a_busy_worker_and_starts_no_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    procs: list[asyncio.subprocess.Process] = []
    started = asyncio.Event()

    async def start(cls: type[pool._Worker], env: dict[str, str]) -> pool._Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            STUCK_WORKER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        started.set()
        return cls(proc)

    monkeypatch.setattr(pool._Worker, "start", classmethod(start))
    renderer = ProcessRenderer(RenderLimits(), workers=2, job_timeout=600, pixel_budget=1 << 30)
    job = asyncio.create_task(renderer(Path("/files/big")))
    try:
        await asyncio.wait_for(started.wait(), 30)
        await renderer.close()
        # No worker outlives close(): the busy one is not left running (until the service
        # process exits) just because it was busy.
        assert [p.returncode is not None for p in procs] == [True]
        rendered = await asyncio.wait_for(job, 30)
        assert rendered.status == "error"
        # A job after close starts no worker process.
        assert (await renderer(Path("/files/late"))).status == "error"
        assert len(procs) == 1
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        job.cancel()


async def test_workers_start_with_one_libvips_thread_per_core_and_huge_page_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator's own glibc tunables are kept beside the huge-page one.
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    given: list[dict[str, str]] = []
    real_start = pool._Worker.start.__func__  # type: ignore[attr-defined]

    async def start(cls: type[pool._Worker], env: dict[str, str]) -> pool._Worker:
        given.append(env)
        worker: pool._Worker = await real_start(cls, env)
        return worker

    monkeypatch.setattr(pool._Worker, "start", classmethod(start))
    image = tmp_path / "pixel.png"
    image.write_bytes(pyvips.Image.black(8, 8).pngsave_buffer())
    renderer = ProcessRenderer(RenderLimits(), workers=2, job_timeout=60, pixel_budget=1 << 30)
    try:
        # A real worker starts and renders in that environment.
        assert (await renderer(image)).status == "done"
    finally:
        await renderer.close()
    (env,) = given
    assert env["VIPS_CONCURRENCY"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"


def test_an_operators_huge_page_choice_is_kept() -> None:
    env = pool.worker_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, 1)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
