"""`filesvc token`: the same settings as serve, says which secret it used, never invents one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filesvc.auth import verify
from tests.helpers import SECRET


def token(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FILESVC_")}
    return subprocess.run(
        [sys.executable, "-m", "filesvc.cli", "token", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
    )


def test_no_secret_anywhere_is_an_error_not_a_new_secret(tmp_path: Path) -> None:
    out = token("--company", "acme", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        "filesvc: no token secret: FILESVC_JWT_SECRET is unset and "
        f"{tmp_path / 'data' / 'jwt-secret'} does not exist\n"
    )
    assert not (tmp_path / "data").exists()


def test_create_secret_only_when_asked(tmp_path: Path) -> None:
    out = token("--company", "acme", "--create-secret", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 0, out.stderr
    secret = (tmp_path / "d" / "jwt-secret").read_text().strip()
    assert verify(out.stdout.strip(), secret).companies == {"acme"}
    assert (
        f"secret from {tmp_path / 'd' / 'jwt-secret'} (data directory: flag --data-dir)"
        in out.stderr
    )


def test_reads_the_data_dir_the_server_reads(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    token("--company", "x", "--create-secret", "--data-dir", str(data))
    secret = (data / "jwt-secret").read_text().strip()
    by_env = token("--company", "acme", env={"FILESVC_DATA_DIR": str(data)})
    assert verify(by_env.stdout.strip(), secret).companies == {"acme"}
    assert "(data directory: environment)" in by_env.stderr
    config = tmp_path / "f.toml"
    config.write_text(f'FILESVC_DATA_DIR = "{data}"\n')
    by_file = token("--company", "acme", "--config", str(config))
    assert verify(by_file.stdout.strip(), secret).companies == {"acme"}
    assert f"(data directory: config file {config})" in by_file.stderr


def test_secret_from_the_environment_is_named(tmp_path: Path) -> None:
    out = token("--company", "acme", env={"FILESVC_JWT_SECRET": SECRET}, cwd=tmp_path)
    assert out.returncode == 0
    assert verify(out.stdout.strip(), SECRET).companies == {"acme"}
    assert out.stderr == "filesvc token: secret from FILESVC_JWT_SECRET (environment)\n"
    assert SECRET not in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--company", "a/b"], "--company: company id must be 1-128 letters, digits or _.:@-"),
        (["--company", ""], "--company: company id must be 1-128 letters, digits or _.:@-"),
        (["--company", "x" * 129], "--company: company id must be 1-128 letters, digits or _.:@-"),
        (
            ["--company", "acme", "--ttl", "-5"],
            "--ttl must be a whole number of seconds from 1 to 31622400",
        ),
        (
            ["--company", "acme", "--ttl", "0"],
            "--ttl must be a whole number of seconds from 1 to 31622400",
        ),
        (
            ["--company", "acme", "--ttl", "1e9"],
            "--ttl must be a whole number of seconds from 1 to 31622400",
        ),
        (
            ["--company", "acme", "--ttl", "99999999999"],
            "--ttl must be a whole number of seconds from 1 to 31622400",
        ),
        (["--company", "acme", "--user", ""], "--user must be 1-256 printable characters"),
        (["--company", "acme", "--user", "a\nb"], "--user must be 1-256 printable characters"),
        (["--company", "acme", "--app", " bot"], "--app must be 1-256 printable characters"),
    ],
)
def test_hostile_arguments_are_refused(args: list[str], message: str) -> None:
    out = token(*args, env={"FILESVC_JWT_SECRET": SECRET})
    assert (out.returncode, out.stdout, out.stderr) == (2, "", f"filesvc: {message}\n")
