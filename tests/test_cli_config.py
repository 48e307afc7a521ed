"""Settings from a TOML file, their precedence, `filesvc config`, `serve --help`, `--version`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from filesvc.cli import main
from filesvc.settings import ConfigError, Settings, default_of, specs
from tests.helpers import SECRET


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = write(
        tmp_path / "filesvc.toml",
        'FILESVC_PORT = 7000\nFILESVC_HOST = "127.0.0.5"\nFILESVC_DRAIN_TIMEOUT = 5\n'
        'FILESVC_THUMB_WORKERS = "3"\n',
    )
    env = {"FILESVC_JWT_SECRET": SECRET, "FILESVC_HOST": "127.0.0.6", "FILESVC_PORT": "7001"}
    s = Settings.load(env, flags={"port": "7002"}, config_file=config)
    assert (s.port, s.host, s.drain_timeout, s.thumb_workers) == (7002, "127.0.0.6", 5.0, 3)
    assert s.max_concurrent_uploads == 256  # default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FILESVC_PORT = 'x'\n", "FILESVC_PORT (config file {p}) must be a whole number, got 'x'"),
        (
            "FILESVC_PORT = true\n",
            "FILESVC_PORT (config file {p}) must be a whole number, got 'true'",
        ),
        ("FILESVC_PROT = 1\n", "config file {p}: unknown setting 'FILESVC_PROT'"),
        ("port = 1\n", "config file {p}: unknown setting 'port'"),
        (
            "FILESVC_PORT = \n",
            "config file {p} is not valid TOML: Invalid value (at line 1, column 16)",
        ),
    ],
)
def test_bad_config_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as exc:
        Settings.load({"FILESVC_JWT_SECRET": SECRET}, config_file=config)
    assert str(exc.value) == message.format(p=config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.load({"FILESVC_JWT_SECRET": SECRET}, config_file=tmp_path / "none.toml")
    assert (
        str(exc.value)
        == f"cannot read config file {tmp_path / 'none.toml'}: No such file or directory"
    )


def test_config_command_prints_effective_settings_with_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "f.toml", "FILESVC_THUMB_WORKERS = 4\n")
    monkeypatch.setenv("FILESVC_JWT_SECRET", SECRET)
    monkeypatch.setenv("FILESVC_PORT", "9123")
    monkeypatch.setenv("FILESVC_CONFIG", str(config))
    monkeypatch.setenv("FILESVC_METRICS_TOKEN", "scraper-only-token")
    assert main(["config", "--host", "127.0.0.3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {spec.env for _, spec in specs()}
    assert rows["FILESVC_PORT"] == {"value": 9123, "source": "environment"}
    assert rows["FILESVC_HOST"] == {"value": "127.0.0.3", "source": "flag --host"}
    assert rows["FILESVC_THUMB_WORKERS"] == {"value": 4, "source": f"config file {config}"}
    assert rows["FILESVC_JWT_SECRET"] == {"value": "<redacted>", "source": "environment"}
    assert rows["FILESVC_METRICS_TOKEN"] == {"value": "<redacted>", "source": "environment"}
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    assert SECRET not in text and "scraper-only-token" not in text
    assert "FILESVC_PORT = 9123  # environment\n" in text


def test_config_command_does_not_create_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FILESVC_JWT_SECRET", raising=False)
    monkeypatch.delenv("FILESVC_CONFIG", raising=False)
    assert main(["config", "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert f"# {tmp_path / 'd' / 'jwt-secret'} (created at first start)" in out
    assert not (tmp_path / "d").exists()


def test_serve_help_lists_every_setting_with_its_default() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "filesvc.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    out = " ".join(out.split())  # argparse wraps long help lines
    for f, spec in specs():
        assert spec.env in out, spec.env
        if spec.flag:
            assert spec.flag_name in out
            default = default_of(f)
            shown = "unset" if default is None else default
            assert f"{spec.env}; default: {shown}" in out
    assert "flag > environment > config file > default" in out


@pytest.mark.parametrize("tool", ["filesvc", "blobstore"])
def test_version(tool: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", f"{tool}.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"{tool} {version('filesvc')}"


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [spec.env for _, spec in specs() if f"| `{spec.env}`" not in readme]
    assert missing == []
