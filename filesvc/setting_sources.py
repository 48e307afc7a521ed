"""How a setting is declared, and where its value comes from.

A setting is a dataclass field made with :func:`setting`: its :class:`Spec` names the
``FILESVC_*`` variable (also its key in the TOML file and, lowercased, its flag), the parser that
validates a raw value and the help text.  :func:`resolve_fields` reads every declared field from
its sources, highest first: a command-line flag, the environment, the ``--config`` file, the
default.  Which settings exist is :mod:`filesvc.settings`' business.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from filesvc.setting_parsers import ConfigError, Parser

ENV_PREFIX = "FILESVC_"

T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """How one setting is read: its variable name, parser, help and whether it is secret."""

    env: str
    parse: Parser
    help: str
    secret: bool = False
    flag: bool = True  # secrets get no flag: a command line is visible to every local user
    # The default when settings are resolved from flags, environment and file, where it differs
    # from the field's default (what code building the dataclass directly gets).
    configured_default: object = None

    @property
    def flag_name(self) -> str:
        return "--" + self.env.removeprefix(ENV_PREFIX).lower().replace("_", "-")


def setting(default: T, env: str, parse: Parser, help: str, **extra: Any) -> T:
    """A dataclass field that is a setting."""
    spec = Spec(env, parse, help, **extra)
    return field(default=default, repr=not spec.secret, metadata={"spec": spec})


def specs_of(cls: type) -> Iterator[tuple[Field[Any], Spec]]:
    """Every setting's field and spec in ``cls``, in declaration order."""
    for f in fields(cls):
        spec = f.metadata.get("spec")
        if isinstance(spec, Spec):
            yield f, spec


def default_of(f: Field[Any]) -> object:
    spec = f.metadata.get("spec")
    if isinstance(spec, Spec) and spec.configured_default is not None:
        return spec.configured_default
    return None if f.default is MISSING else f.default


def read_config_file(path: Path, known: set[str]) -> dict[str, object]:
    """The ``FILESVC_*`` keys of a TOML file; a key not in ``known`` is an error (a typo would
    otherwise be silently ignored)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key in data:
        if key not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    return data


def resolve_fields(
    cls: type,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    config_file: Path | None = None,
) -> dict[str, tuple[Any, str]]:
    """Each setting of ``cls``: its validated value and where it came from (``flag --x``,
    ``environment``, ``config file``, or ``default``).  An empty environment variable counts as
    unset."""
    env = os.environ if env is None else env
    flags = flags or {}
    declared = list(specs_of(cls))
    known = {spec.env for _, spec in declared}
    from_file = read_config_file(config_file, known) if config_file is not None else {}
    out: dict[str, tuple[Any, str]] = {}
    for f, spec in declared:
        raw: object
        if flags.get(f.name) is not None:
            raw, source = flags[f.name], f"flag {spec.flag_name}"
        elif env.get(spec.env):
            raw, source = env[spec.env], "environment"
        elif spec.env in from_file:
            raw, source = from_file[spec.env], f"config file {config_file}"
        else:
            default = default_of(f)
            # A relative default means relative to where the process starts, once and for all.
            out[f.name] = (default.absolute() if isinstance(default, Path) else default, "default")
            continue
        try:
            out[f.name] = (spec.parse(raw), source)
        except ValueError as exc:
            raise ConfigError(f"{spec.env} ({source}) {exc}") from None
    return out
