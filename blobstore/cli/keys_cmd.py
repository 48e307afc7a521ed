"""The master key for every command, and ``blobstore encrypt`` and ``rotate-master-key``.

Commands read the key the way the service does: ``FILESVC_MASTER_KEY``, else the file named by
``FILESVC_MASTER_KEY_FILE``, else ``<data dir>/master-key`` (never made here); and
``FILESVC_ENCRYPTION`` (on unless ``off``) for what ``encrypt`` needs.  Without a key, commands
that only read metadata work, and reading a sealed blob says the key is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from blobstore import keyring
from blobstore.backends import LocalLocation
from blobstore.cli.opening import open_store
from blobstore.cli.outcome import Outcome, UsageError
from blobstore.cli.output import Out, human_bytes
from blobstore.encrypt import encrypt_store
from blobstore.masterkey import (
    KEY_FILE,
    MasterKeyError,
    key_check_value,
    load_master_key,
    read_key_file,
)
from blobstore.sealed import SealedBackend

_OFF = ("0", "false", "no", "off")


def _replace_key_file(kept: Path, new: Path) -> None:
    staged = kept.with_name(KEY_FILE + ".new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(new.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    staged.replace(kept)


def key_settings(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Set ``args.master`` (bytes or None) and ``args.sealing`` from the environment."""
    key_file = env.get("FILESVC_MASTER_KEY_FILE") or None
    try:
        args.master = load_master_key(
            args.data_dir,
            configured=env.get("FILESVC_MASTER_KEY") or None,
            key_file=Path(key_file) if key_file else None,
            shared=False,
            create=False,
        )
    except MasterKeyError as exc:
        raise UsageError(str(exc)) from None
    args.sealing = (env.get("FILESVC_ENCRYPTION") or "on").strip().lower() not in _OFF


def _need_key(args: argparse.Namespace) -> bytes:
    if args.master is None:
        raise UsageError(
            "no master key: set FILESVC_MASTER_KEY or FILESVC_MASTER_KEY_FILE as the server has"
            f" it (or keep it in {args.data_dir / KEY_FILE})"
        )
    return bytes(args.master)


async def cmd_encrypt(args: argparse.Namespace, out: Out) -> Outcome:
    if args.master is None:
        # Like the server's first start with encryption on: a store of one instance keeps its
        # key in the data directory; a shared one must be given it.
        shared = bool(args.db_url) or not isinstance(args.blobs, LocalLocation)
        try:
            args.master = await asyncio.to_thread(
                load_master_key,
                args.data_dir,
                configured=None,
                key_file=None,
                shared=shared,
                create=True,
            )
        except MasterKeyError as exc:
            raise UsageError(str(exc)) from None
    master = _need_key(args)
    async with open_store(
        args.data_dir, args.blobs, writable=True, db_url=args.db_url, master=master, sealing=True
    ) as (db, backend):
        assert isinstance(backend, SealedBackend)
        report = await encrypt_store(db, backend)
    if out.as_json:
        out.record(
            {
                "plain_blobs": report.plain,
                "sealed_blobs": report.sealed,
                "sealed_bytes": report.sealed_bytes,
                "removed_plain_blobs": report.removed,
                "missing": list(report.missing),
                "corrupt": list(report.corrupt),
            }
        )
    else:
        out.line(
            f"sealed {report.sealed} of {report.plain} plain blobs"
            f" ({human_bytes(report.sealed_bytes)}), removed {report.removed} plain blobs"
        )
        for ref in report.missing:
            out.line(f"    missing (fsck reports it): {ref}")
        for ref in report.corrupt:
            out.line(f"    content does not match its name, left as it is (fsck): {ref}")
    return Outcome.DAMAGE if report.missing or report.corrupt else Outcome.CLEAN


async def cmd_rotate(args: argparse.Namespace, out: Out) -> Outcome:
    old = _need_key(args)
    try:
        new = await asyncio.to_thread(read_key_file, args.new_key_file)
    except MasterKeyError as exc:
        raise UsageError(str(exc)) from None
    if new == old:
        raise UsageError("the new master key is the current one")
    kept = args.data_dir / KEY_FILE
    in_data_dir = (
        not os.environ.get("FILESVC_MASTER_KEY")
        and not os.environ.get("FILESVC_MASTER_KEY_FILE")
        and await asyncio.to_thread(kept.is_file)
    )
    async with open_store(
        args.data_dir, args.blobs, writable=True, db_url=args.db_url, master=old
    ) as (db, _):
        count = await keyring.rotate(db, old, new)
    if in_data_dir:
        # The server reads the key from here: it gets the new one (the store already needs it).
        await asyncio.to_thread(_replace_key_file, kept, args.new_key_file)
    if out.as_json:
        out.record({"rewrapped_keys": count, "key_check_value": key_check_value(new)[:8]})
    else:
        where = f"{kept} now holds it" if in_data_dir else "configure it on every instance"
        out.line(
            f"re-wrapped {count} company keys under the new master key ({where}); restart every"
            " instance with the new key"
        )
    return Outcome.CLEAN
