"""The ``blobstore`` command: fsck (and its repair), gc, stat, show, cat, encrypt and
rotate-master-key, over a data directory.

Exit codes, decided in one place (:func:`exit_code`): 0 clean (hints allowed), 1 damage found
(or, for ``cat``, no such blob), 2 usage error or the store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from blobstore.backends import parse_blob_url
from blobstore.cli.commands import cmd_cat, cmd_gc, cmd_show, cmd_stat
from blobstore.cli.fsck_cmd import HINTS_SHOWN, cmd_fsck
from blobstore.cli.keys_cmd import cmd_encrypt, cmd_rotate, key_settings
from blobstore.cli.outcome import ExitCode, Outcome, UsageError, exit_code
from blobstore.cli.output import Out
from blobstore.cli.parser import build_parser
from blobstore.engine import ENV as DB_URL_ENV
from blobstore.errors import BlobNotFound

__all__ = ["HINTS_SHOWN", "ExitCode", "build_parser", "main"]


async def _run(args: argparse.Namespace) -> Outcome:
    if args.command == "cat":
        return await cmd_cat(args, sys.stdout.buffer)
    as_json = bool(getattr(args, "json", False))
    console = Console(file=sys.stdout, soft_wrap=True)
    out = Out(console, as_json)
    match args.command:
        case "fsck":
            return await cmd_fsck(args, out)
        case "gc":
            return await cmd_gc(args, out)
        case "stat":
            return await cmd_stat(args, out)
        case "show":
            return await cmd_show(args, out)
        case "encrypt":
            return await cmd_encrypt(args, out)
        case "rotate-master-key":
            return await cmd_rotate(args, out)
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    try:
        # Same default as ``filesvc serve``, read here at the edge and nowhere deeper.
        default_dir = Path(os.environ.get("FILESVC_DATA_DIR") or "data")
        default_db = os.environ.get(DB_URL_ENV) or None
        args = build_parser(default_dir, os.environ.get("FILESVC_BLOB_URL"), default_db).parse_args(
            argv
        )
        args.data_dir = args.data_dir.resolve()  # the printed commands work from anywhere
        args.blobs = parse_blob_url(args.blob_url, args.data_dir, os.environ)
        key_settings(args, os.environ)
        outcome = asyncio.run(_run(args))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BrokenPipeError:
        # The reader had enough (``blobstore cat REF | head``); keep Python's exit-time flush of
        # stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as exc:
        code = exit_code(exc)  # re-raises what it does not know: a bug, shown with its traceback
        print(f"blobstore: {_describe(exc)}", file=sys.stderr)
        return int(code)
    return int(exit_code(outcome))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BlobNotFound):
        return f"no such blob: {exc}"
    return str(exc) or type(exc).__name__
