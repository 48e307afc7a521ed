"""The server-CPU measurements' shared command line: ``--set NAME=VALUE`` becomes the servers'
environment, and anything else is a usage error naming the argument, not a traceback."""

from __future__ import annotations

import pytest

from bench import cpu_args


def test_settings_become_the_servers_environment() -> None:
    p = cpu_args.parser("bench.read_cpu", "doc")
    args = p.parse_args(["--set", "FILESVC_ENCRYPTION=off", "--set", "FILESVC_X=a=b"])
    assert cpu_args.settings(args) == {"FILESVC_ENCRYPTION": "off", "FILESVC_X": "a=b"}
    assert cpu_args.settings(p.parse_args([])) == {}


@pytest.mark.parametrize("bad", ["FILESVC_ENCRYPTION", "=off"])
def test_a_setting_without_a_name_and_value_is_a_usage_error(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cpu_args.parser("bench.read_cpu", "doc").parse_args(["--set", bad])
    assert exited.value.code == 2
    assert f"argument --set: {bad!r}: NAME=VALUE expected" in capsys.readouterr().err
