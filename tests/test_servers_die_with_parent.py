"""The servers tests and benchmarks start (PostgreSQL, SeaweedFS, ``filesvc serve``) die with the
process that started them when it is killed outright (``kill -9``, a CI timeout), every process
of theirs with them (PostgreSQL's own, the workers of ``filesvc serve --workers``): none is left
holding ports, files and CPU for the runs that follow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs in the venv

REPO = Path(__file__).resolve().parent.parent

# The parent: starts one server of each kind, says where they are, then waits to be killed.
PARENT = """
import sys
from pathlib import Path

from bench.pgserver import start_postgres
from bench.seaweedfs import start_seaweedfs
from tests.server_proc import start_server

work = Path(sys.argv[1])
pg = start_postgres()
weed = start_seaweedfs(work / "weed", ["orphans"])
server = start_server(work / "server" / "data", args=("--workers", "2"))
print(pg.root, pg.proc.pid, weed.proc.pid, server.proc.pid, flush=True)
sys.stdin.read()
"""


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it runs nothing and holds nothing)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_servers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert parent.stdout is not None
    line = parent.stdout.readline().split()
    try:
        assert len(line) == 4, line
        servers = [int(pid) for pid in line[1:]]
        # The supervisor starts its second worker only once the first listens, which may be
        # after the server first answered: wait for both before taking the roll.
        supervisor = psutil.Process(servers[2])
        deadline = time.monotonic() + 60
        while len(supervisor.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(supervisor.children()) == 2
        everyone = set(servers)
        for pid in servers:
            assert psutil.Process(pid).ppid() == parent.pid
            everyone |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        # PostgreSQL's own processes and the filesvc workers are watched too.
        assert len(everyone) > len(servers) + 2
        assert not any(_gone(pid) for pid in everyone)

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while not all(_gone(pid) for pid in everyone) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in everyone if not _gone(pid)] == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        assert parent.stdin is not None
        parent.stdin.close()
        if line:
            shutil.rmtree(line[0].decode(), ignore_errors=True)
