"""The command line the server-CPU measurements (``python -m bench.read_cpu``, ``write_cpu``,
``download_cpu``) share: the module's docstring as its help, and ``--set NAME=VALUE`` for a
setting of the servers it starts."""

from __future__ import annotations

import argparse


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=VALUE expected")
    return name, value


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, with ``--set`` (read back by :func:`settings`)."""
    p = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=_setting,
        metavar="NAME=VALUE",
        help="a server setting",
    )
    return p


def settings(args: argparse.Namespace) -> dict[str, str]:
    """The ``--set`` settings, as the servers' environment."""
    return dict(args.set)
