"""Start, watch and stop the servers under test, and sample their memory.

`ServerProcess` runs a command as a subprocess (output to a log file), waits until its port
answers, and stops it with SIGTERM then SIGKILL. `RssSampler` reads the resident memory of a
process and its children every 100 ms in a thread; a scenario resets it at its start and reads
peak and growth at its end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs in the venv

from bench.results_model import RssStats
from filesvc.lifetime import die_with_parent

SAMPLE_INTERVAL_S = 0.1
# How often a sampler looks for the server's child processes again.  Finding them scans every
# process on the machine (about 3 ms here): done every 100 ms in each server's sampler, that was
# most of the bench's own CPU during a 1 GiB upload (0.2-0.3 s per GiB per server sampled, taken
# from the same two cores as the subject; bench/README.md, single-stream tus PATCH).  Between
# scans the known processes' RSS alone is read (0.06 ms each).
TREE_SCAN_S = 2.0
STOP_TIMEOUT_S = 15.0
MiB = float(1 << 20)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_bin(name: str) -> str | None:
    """`name` next to this interpreter (the project's venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def loop_and_cpu(pid: int, *, children: bool = False) -> tuple[float, float]:
    """(its event loop thread, the whole process) CPU seconds of a server process; with
    ``children``, the whole includes its child processes too."""
    proc = psutil.Process(pid)
    loop = 0.0
    for t in proc.threads():
        if t.id == pid:
            loop = t.user_time + t.system_time
    total = 0.0
    for p in (proc, *proc.children(recursive=True)) if children else (proc,):
        times = p.cpu_times()
        total += times.user + times.system
    return loop, total


def _rss_mib(procs: Sequence[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / MiB


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants now (none when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class RssSampler:
    """Samples the RSS of one process tree every `interval` seconds in a daemon thread.  The
    tree itself is looked up every ``TREE_SCAN_S`` and at each window's start and end: a child
    started between two scans counts from the next."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._tree: list[psutil.Process] = [self._proc]
        self._scanned = -TREE_SCAN_S
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _sample(self, *, scan: bool = False) -> float:
        now = time.monotonic()
        if scan or now - self._scanned >= TREE_SCAN_S:
            with contextlib.suppress(psutil.Error):
                self._tree = [self._proc, *self._proc.children(recursive=True)]
            self._scanned = now
        return _rss_mib(self._tree)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._sample()
            with self._lock:
                self._samples.append((time.monotonic() - self._t0, rss))
            self._stop.wait(self._interval)

    def reset(self) -> None:
        """Start a new window: forget earlier samples and take one now as the baseline."""
        rss = self._sample(scan=True)
        with self._lock:
            self._t0 = time.monotonic()
            self._samples = [(0.0, rss)]

    def stats(self) -> RssStats:
        """Start, peak and end of the current window (one more sample is taken now)."""
        rss = self._sample(scan=True)
        with self._lock:
            self._samples.append((time.monotonic() - self._t0, rss))
            samples = list(self._samples)
        values = [v for _, v in samples]
        return RssStats(
            start_mib=values[0], peak_mib=max(values), end_mib=values[-1], samples=samples
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class ServerProcess:
    """One server under test: a command, its log file, its readiness check, its RSS sampler."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        ready_url: str | None = None,
        startup_timeout_s: float = 60.0,
        cwd: Path | None = None,
        ready_needs_ok: bool = False,
        listeners: int = 1,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.env = env
        self.ready_url = ready_url
        self.startup_timeout_s = startup_timeout_s
        self.cwd = cwd
        self.ready_needs_ok = ready_needs_ok
        # Processes that must listen on the port before it counts as started: a server of N
        # workers answers as soon as its first one does, and connections opened before the
        # others listen all stay with it (SO_REUSEPORT spreads new connections only).
        self.listeners = listeners
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # our Ctrl-C reaches us, and we stop it ourselves
                preexec_fn=die_with_parent(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.sampler = RssSampler(self.proc.pid)

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} at start-up; "
                    f"see {self.log_path}: {self.log_tail()}"
                )
            if self._answers() and self._listening() >= self.listeners:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {self.startup_timeout_s:.0f} s")

    def _answers(self) -> bool:
        if self.ready_url is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2):  # noqa: S310 - loopback only
                return True
        except urllib.error.HTTPError:
            # Any HTTP answer (401, 404…) means it is serving, unless readiness is asked for.
            return not self.ready_needs_ok
        except (OSError, ValueError):
            return False

    def _listening(self) -> int:
        """How many processes of the server's tree listen on its port now."""
        assert self.proc is not None
        if self.listeners <= 1:
            return 1
        count = 0
        for proc in process_tree(self.proc.pid):
            try:
                sockets = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            count += any(
                s.status == psutil.CONN_LISTEN and s.laddr.port == self.port for s in sockets
            )
        return count

    def log_tail(self, n: int = 600) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def filesvc_server(
    data_dir: Path,
    log_path: Path,
    secret: str,
    *,
    fake: bool = False,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """`filesvc serve` (or the bench's own fake of the contract) on a free loopback port, with
    ``workers`` server processes and ``env`` added (``FILESVC_DB_URL``, ``FILESVC_BLOB_URL``...).
    filesvc counts as started once ``/readyz`` answers 200 (PostgreSQL connected and migrated)."""
    port = free_port()
    if fake:
        argv = [sys.executable, "-m", "bench.fake_server"]
        name = "fake filesvc"
    else:
        exe = venv_bin("filesvc")
        if exe is None:
            raise RuntimeError("the `filesvc` console script is not installed in this venv")
        argv = [exe]
        name = "filesvc"
    argv += ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"
    return ServerProcess(
        name,
        argv,
        port=port,
        log_path=log_path,
        env={**(env or {}), "FILESVC_JWT_SECRET": secret},
        ready_url=f"{base}/internal/services/files/v1/companies/bench/files/x"
        if fake
        else f"{base}/readyz",
        ready_needs_ok=not fake,
        cwd=server_code_dir(env),
        listeners=1 if fake else workers,
    )


def server_code_dir(env: dict[str, str] | None) -> Path:
    """The working directory of a filesvc server: the tree its code comes from.  Workers are
    started as ``python -m filesvc.cli``, which puts the working directory before
    ``PYTHONPATH``, so a server given an older tree (``PYTHONPATH``, :mod:`bench.before_code`)
    must also start in it, or its workers import this repository's code."""
    code = (env or {}).get("PYTHONPATH", "").split(os.pathsep)[0]
    return Path(code) if os.path.isabs(code) else Path(__file__).resolve().parent.parent


def master_key_env() -> dict[str, str]:
    """A fresh master key, as a store shared through PostgreSQL or S3 must be given one."""
    import base64
    import secrets

    return {"FILESVC_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
