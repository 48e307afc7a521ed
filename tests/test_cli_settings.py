"""`filesvc token`, settings from flags and environment, and the secret kept in the data dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from filesvc.auth import verify
from filesvc.cli import main
from filesvc.settings import ConfigError, Settings
from tests.helpers import SECRET


def test_token_for_user_and_app(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILESVC_JWT_SECRET", SECRET)
    assert main(["token", "--company", "acme", "--user", "bob", "--ttl", "60"]) == 0
    caller = verify(capsys.readouterr().out.strip(), SECRET)
    assert (
        caller.user_id == "bob" and caller.companies == {"acme"} and caller.application_id is None
    )
    assert main(["token", "--company", "acme", "--app", "sync"]) == 0
    tok = capsys.readouterr().out.strip()
    assert verify(tok, SECRET).application_id == "sync"
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    first = Settings.from_env(env, data_dir=tmp_path)
    second = Settings.from_env(env, data_dir=tmp_path)
    assert first.jwt_secret == second.jwt_secret and len(first.jwt_secret) >= 32
    mode = stat.S_IMODE((tmp_path / "jwt-secret").stat().st_mode)
    assert mode == 0o600


def test_flags_win_over_environment(tmp_path: Path) -> None:
    env = {
        "FILESVC_JWT_SECRET": SECRET,
        "FILESVC_HOST": "127.0.0.9",
        "FILESVC_PORT": "9000",
        "FILESVC_DATA_DIR": str(tmp_path / "env"),
        "FILESVC_MAX_UPLOAD_BYTES": "1000",
    }
    s = Settings.from_env(env)
    assert (s.host, s.port, s.data_dir, s.max_upload_bytes) == (
        "127.0.0.9",
        9000,
        tmp_path / "env",
        1000,
    )
    s = Settings.from_env(env, host="127.0.0.2", port=1234, data_dir=tmp_path / "flag")
    assert (s.host, s.port, s.data_dir) == ("127.0.0.2", 1234, tmp_path / "flag")
    assert "jwt_secret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FILESVC_JWT_SECRET": "short"},
            "FILESVC_JWT_SECRET (environment) must be at least 32 bytes long",
        ),
        (
            {"FILESVC_PORT": "http"},
            "FILESVC_PORT (environment) must be a whole number, got 'http'",
        ),
        (
            {"FILESVC_PORT": "70000"},
            "FILESVC_PORT (environment) must be from 0 to 65535, got 70000",
        ),
        ({"FILESVC_PORT": "-1"}, "FILESVC_PORT (environment) must be from 0 to 65535, got -1"),
        (
            {"FILESVC_PORT": "\uff18\uff10"},  # fullwidth digits: isdigit() says yes
            "FILESVC_PORT (environment) must be a whole number, got '\uff18\uff10'",
        ),
        (
            {"FILESVC_SQLITE_SYNCHRONOUS": "bogus"},
            "FILESVC_SQLITE_SYNCHRONOUS (environment) must be one of OFF, NORMAL, FULL, EXTRA,"
            " got 'bogus'",
        ),
        (
            {"FILESVC_DRAIN_TIMEOUT": "nan"},
            "FILESVC_DRAIN_TIMEOUT (environment) must be more than 0 and at most 3600 seconds,"
            " got nan",
        ),
        (
            {"FILESVC_BODY_IDLE_TIMEOUT": "0"},
            "FILESVC_BODY_IDLE_TIMEOUT (environment) must be more than 0 and at most 86400"
            " seconds, got 0",
        ),
        (
            {"FILESVC_MAX_UPLOAD_BYTES": "0"},
            "FILESVC_MAX_UPLOAD_BYTES (environment) must be from 1 to 9223372036854775807, got 0",
        ),
        (
            {"FILESVC_ACCESS_LOG": "xml"},
            "FILESVC_ACCESS_LOG (environment) must be one of text, json, off, got 'xml'",
        ),
        (
            {"FILESVC_ACCESS_LOG_PROBES": "maybe"},
            "FILESVC_ACCESS_LOG_PROBES (environment) must be true or false, got 'maybe'",
        ),
        (
            {"FILESVC_HOST": "a b"},
            "FILESVC_HOST (environment) must be a host name or address, got 'a b'",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_HEAD_TIMEOUT": "0"},
            "FILESVC_HEAD_TIMEOUT (environment) must be at least 0.1 and at most 86400 seconds,"
            " got 0",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_KEEPALIVE_TIMEOUT": "-5"},
            "FILESVC_KEEPALIVE_TIMEOUT (environment) must be at least 0.1 and at most 86400"
            " seconds, got -5",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_BODY_RATE_WINDOW": "0"},
            "FILESVC_BODY_RATE_WINDOW (environment) must be at least 0.1 and at most 86400"
            " seconds, got 0",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_BODY_MIN_RATE": "-1"},
            "FILESVC_BODY_MIN_RATE (environment) must be from 0 to 9223372036854775807, got -1",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_BODY_RATE_GRACE": "-1"},
            "FILESVC_BODY_RATE_GRACE (environment) must be at least 0 and at most 86400 seconds,"
            " got -1",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_MAX_UPLOADS_PER_CALLER": "0"},
            "FILESVC_MAX_UPLOADS_PER_CALLER (environment) must be from 1 to 1000000, got 0",
        ),
        (
            {"FILESVC_SEND_STALL_TIMEOUT": "0"},
            "FILESVC_SEND_STALL_TIMEOUT (environment) must be at least 0.1 and at most 86400"
            " seconds, got 0",
        ),
        (
            {"FILESVC_DOWNLOAD_THREADS": "-1"},
            "FILESVC_DOWNLOAD_THREADS (environment) must be from 0 to 1024, got -1",
        ),
        (
            {"FILESVC_UVLOOP": "perhaps"},
            "FILESVC_UVLOOP (environment) must be true or false, got 'perhaps'",
        ),
        (
            {"FILESVC_JWT_SECRET": SECRET, "FILESVC_BODY_MIN_RATE": "fast"},
            "FILESVC_BODY_MIN_RATE (environment) must be a whole number, got 'fast'",
        ),
    ],
)
def test_bad_configuration_stops_with_a_message(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"FILESVC_JWT_SECRET": SECRET, **env}, data_dir=tmp_path)
    assert str(exc.value) == message


def test_slow_client_limits_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FILESVC_JWT_SECRET": SECRET,
        "FILESVC_HEAD_TIMEOUT": "5",
        "FILESVC_KEEPALIVE_TIMEOUT": "30",
        "FILESVC_BODY_MIN_RATE": "0",
        "FILESVC_BODY_RATE_WINDOW": "12.5",
        "FILESVC_BODY_RATE_GRACE": "0",
        "FILESVC_MAX_UPLOADS_PER_CALLER": "3",
    }
    s = Settings.from_env(env, data_dir=tmp_path)
    assert (
        s.head_timeout,
        s.keepalive_timeout,
        s.body_min_rate,
        s.body_rate_window,
        s.body_rate_grace,
        s.max_uploads_per_caller,
    ) == (5.0, 30.0, 0, 12.5, 0.0, 3)


def test_console_script_prints_a_token(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "filesvc.cli",
            "token",
            "--company",
            "c1",
            "--data-dir",
            str(tmp_path),
            "--create-secret",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "FILESVC_JWT_SECRET": ""},
    )
    secret = (tmp_path / "jwt-secret").read_text().strip()
    assert verify(out.stdout.strip(), secret).companies == {"c1"}


def test_relative_data_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({"FILESVC_JWT_SECRET": SECRET})
    assert s.data_dir == tmp_path / "data" and s.data_dir.is_absolute()


async def test_database_opens_on_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobstore.engine.sqlite import Database

    monkeypatch.chdir(tmp_path)
    db = Database(Path("rel") / "meta.sqlite3")
    try:
        await db.open(["CREATE TABLE t (x)"])
        async with db.read() as conn:
            rows = await conn.fetch("SELECT COUNT(*) FROM t")
        assert [r[0] for r in rows] == [0]
    finally:
        await db.close()
