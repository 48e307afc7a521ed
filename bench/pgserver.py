"""A throwaway PostgreSQL server (tests, benchmarks): Debian's binaries, a temp dir, a loopback
port.

initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user (which
Debian's package creates) on a directory handed to it.  The socket lives in the temp dir too, so
nothing touches the machine's own clusters.  ``make test`` installs the package when missing
(scripts/system-packages.txt).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from filesvc.lifetime import die_with_parent

# Test data is disposable: no fsync (a killed server still keeps every commit: the kernel has
# it), so creating a database per test costs milliseconds.
SERVER_OPTIONS = "-c fsync=off -c full_page_writes=off"
# How long a start may take before it counts as failed (pg_ctl -w waits 60 s by default).
START_TIMEOUT_S = 120.0
# pg_ctl's shutdown modes, as the postmaster's signals.
_SHUTDOWN_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bin_dir() -> Path:
    """The newest installed PostgreSQL's server binaries."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make test installs it)")
    return found[-1].parent


@dataclass
class PgServer:
    """A running server; :meth:`new_database` hands each test its own empty database."""

    root: Path
    port: int
    bin: Path
    as_user: list[str] = field(default_factory=list)
    durable: bool = False  # True: fsync as in production (benchmarks)
    shared: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout

    def fresh_shared_database(self) -> str:
        """One database reused test after test, emptied each time (cheaper than a new one):
        its schema dropped, so every user starts from nothing and migrates."""
        if not self.shared:
            self.shared = self.new_database()
        else:
            self.psql(
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public", self.shared.rsplit("/", 1)[1]
            )
        return self.shared

    def new_database(self) -> str:
        """An empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return self.url(name)

    def start(self) -> None:
        """Run ``postgres`` in the foreground as this process's child (not daemonised by
        pg_ctl), so that it dies with this process (bench/children.py); wait until it takes
        connections."""
        options = [] if self.durable else SERVER_OPTIONS.split()
        argv = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "listen_addresses=127.0.0.1",
            *options,
        ]
        user: int | None = None
        group: int | None = None
        groups: list[int] | None = None
        if os.geteuid() == 0:  # postgres refuses to run as root
            pw = pwd.getpwnam("postgres")
            user, group, groups = pw.pw_uid, pw.pw_gid, []
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,  # our Ctrl-C (to postgres: fast shutdown) stays ours
                preexec_fn=die_with_parent(),
                user=user,
                group=group,
                extra_groups=groups,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepting():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop("immediate")
                log_text = (self.root / "server.log").read_text(errors="replace")
                raise RuntimeError(f"postgres did not start: {log_text[-2000:]}")
            time.sleep(0.1)

    def _accepting(self) -> bool:
        ready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(ready, timeout=30, check=False).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Shut down as ``pg_ctl stop -m MODE`` does (the postmaster's signal for that mode)
        and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(_SHUTDOWN_SIGNALS[mode])
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_postgres(*, durable: bool = False) -> PgServer:
    """initdb a fresh cluster under a temp dir and start it on a free loopback port."""
    root = Path(tempfile.mkdtemp(prefix="filesvc-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PgServer(root, free_port(), bin_dir(), as_user, durable)
    subprocess.run(
        [
            *as_user,
            str(server.bin / "initdb"),
            "-D",
            str(server.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    server.start()
    return server


def remove(server: PgServer) -> None:
    """Stop the server (if running) and delete its files."""
    server.stop("immediate")
    shutil.rmtree(server.root, ignore_errors=True)
