"""The master key at start: generated once into the data directory (0600) for the embedded
default, required from the environment or a file for a shared store, and a wrong, malformed or
missing key is one line at start, never garbage served."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.helpers import SECRET
from tests.server_proc import start_server


def serve(
    data: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FILESVC_MASTER_KEY")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "filesvc.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, "FILESVC_JWT_SECRET": SECRET, **(env or {})},
    )


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_malformed_keys_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = {
        "not base64!": "FILESVC_MASTER_KEY (environment) is not base64",
        base64.b64encode(b"short").decode(): (
            "FILESVC_MASTER_KEY (environment) must be 32 bytes in base64, got 5"
        ),
    }
    for value, message in cases.items():
        out = serve(tmp_path / "d", env={"FILESVC_MASTER_KEY": value})
        assert (out.returncode, out.stderr) == (2, f"filesvc: {message}\n")
        assert value not in out.stderr or value == "not base64!"
    missing = tmp_path / "nope.key"
    out = serve(tmp_path / "d", env={"FILESVC_MASTER_KEY_FILE": str(missing)})
    assert out.returncode == 2
    assert out.stderr == (
        f"filesvc: cannot read the master key file {missing}: No such file or directory\n"
    )


def test_a_shared_store_needs_the_key_from_environment_or_file(tmp_path: Path) -> None:
    # No database needs to answer: the settings are refused before anything starts.
    out = serve(tmp_path / "d", env={"FILESVC_DB_URL": "postgresql://u@127.0.0.1:1/x"})
    assert out.returncode == 2
    assert out.stderr == (
        "filesvc: a store shared by instances (FILESVC_DB_URL or FILESVC_BLOB_URL set) needs the"
        " same master key on each: set FILESVC_MASTER_KEY or FILESVC_MASTER_KEY_FILE\n"
    )
    assert not (tmp_path / "d" / "master-key").exists()


def test_generated_key_is_kept_and_a_wrong_key_stops_the_start(tmp_path: Path) -> None:
    data = tmp_path / "d"
    server = start_server(data)
    server.stop()
    path = data / "master-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    server = start_server(data)  # the same key is used again
    server.stop()
    assert path.read_text() == first
    out = serve(data, env={"FILESVC_MASTER_KEY": key()})
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "filesvc: cannot start: KeyUnavailable: the master key is not the one this store's keys"
        " are wrapped with (key check value differs); set FILESVC_MASTER_KEY to the store's key"
    )
    assert out.stderr.count("cannot start") == 1 and "Traceback" not in out.stderr
    # The key from a file (a container secret) is the same key: it starts.
    keyfile = tmp_path / "k"
    keyfile.write_text(first)
    server = start_server(data, env={"FILESVC_MASTER_KEY_FILE": str(keyfile)})
    server.stop()


def test_a_lost_key_is_not_replaced_by_a_new_one(tmp_path: Path) -> None:
    data = tmp_path / "d"
    start_server(data).stop()
    (data / "master-key").unlink()
    out = serve(data)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "filesvc: cannot start: KeyUnavailable: no master key, but this store's keys are wrapped"
        " with one: set FILESVC_MASTER_KEY (or FILESVC_MASTER_KEY_FILE), or put it back in"
        f" {data / 'master-key'}"
    )
    assert not (data / "master-key").exists()
