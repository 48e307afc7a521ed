"""Run the real ``filesvc serve`` process for end-to-end tests."""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from filesvc.lifetime import die_with_parent
from tests.helpers import MASTER_KEY, SECRET

# The line ``filesvc serve`` logs once its socket is bound, with the port the kernel chose.
_LISTENING = re.compile(rb"listening on http://[^:\s]+:(\d+),")
_LOG_NUMBERS = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server; ``url`` is its base address."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    data_dir: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    ready: bool = False,
    args: tuple[str, ...] = (),
) -> ServerProcess:
    """Start ``filesvc serve`` and wait until /healthz answers (it may not be ready: a full
    disk, an engine down); with ``wait=False``, only until it listens; with ``ready=True``,
    until /readyz answers 200: a server on PostgreSQL listens (and answers /healthz) before
    it has connected and migrated, and answers the API 503 until then.

    Without ``port``, the server binds port 0 and the port the kernel chose is read from its
    log: a port picked here and released before the server binds it could be taken in between
    by any socket of the other test process.  Workers (``--workers``) share one port chosen in
    advance, since each binds its own socket."""
    if port is None and "--workers" in args:
        port = free_port()
    log = data_dir.parent / f"server-{os.getpid()}-{next(_LOG_NUMBERS)}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "FILESVC_JWT_SECRET": SECRET, **(env or {})}
    if full_env.get("FILESVC_DB_URL") or full_env.get("FILESVC_BLOB_URL"):
        # A shared store: every instance is given the same master key.
        full_env.setdefault("FILESVC_MASTER_KEY", MASTER_KEY)
    with open(log, "ab") as out:
        start = out.tell()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "filesvc.cli",
                "serve",
                "--port",
                str(port or 0),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=die_with_parent(),
        )
    deadline = time.monotonic() + 30
    server = ServerProcess(proc, port or _bound_port(proc, log, start, deadline), data_dir, log)
    if not wait:
        return server
    probe = "/readyz" if ready else "/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.url + probe, timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return server
        except OSError:  # not listening yet, or 503 (urllib's HTTPError)
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not answer {probe} with 200: {log.read_text()[-2000:]}")


def _bound_port(proc: subprocess.Popen[bytes], log: Path, start: int, deadline: float) -> int:
    """The port the server logs once it is bound (its log from offset ``start``)."""
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(start)
            found = _LISTENING.search(f.read())
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("server did not start listening")
