"""A server that cannot start ends at once, non-zero, with one line and nothing left running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import SECRET


def serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filesvc.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FILESVC_JWT_SECRET": SECRET, **(env or {})},
    )


def test_port_in_use_exits_with_one_line_and_leaves_no_process(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        out = serve(tmp_path, "--port", str(port))
    assert out.returncode == 1
    # Start-up may log what it did before the bind failed; the failure itself is one line, last.
    assert out.stderr.endswith(
        f"\nfilesvc: cannot start: 127.0.0.1:{port}: Address already in use\n"
    )
    assert "Traceback" not in out.stderr and out.stderr.count("cannot start") == 1
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert left == set()  # no thumbnail worker outlives the failed start


def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = serve(tmp_path, env={"FILESVC_SQLITE_SYNCHRONOUS": "sometimes"})
    assert out.returncode == 2
    assert out.stderr == (
        "filesvc: FILESVC_SQLITE_SYNCHRONOUS (environment) must be one of OFF, NORMAL, FULL,"
        " EXTRA, got 'sometimes'\n"
    )
    bad_flag = serve(tmp_path, "--port", "eighty")
    assert bad_flag.returncode == 2
    assert (
        bad_flag.stderr
        == "filesvc: FILESVC_PORT (flag --port) must be a whole number, got 'eighty'\n"
    )


def test_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    out = subprocess.run(
        [sys.executable, "-m", "filesvc.cli", "serve", "--data-dir", str(tmp_path / "file" / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FILESVC_JWT_SECRET": SECRET},
    )
    assert out.returncode == 1
    assert out.stderr == f"filesvc: cannot start: Not a directory: {tmp_path / 'file' / 'd'}\n"
