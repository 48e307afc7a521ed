"""The master key: where it comes from, and its key check value.

The master key only wraps the scopes' data keys (:mod:`blobstore.keyring`); it never touches a
blob.  It comes from ``FILESVC_MASTER_KEY`` (32 bytes, base64), from a file named by
``FILESVC_MASTER_KEY_FILE`` (the same text: a container secret, a systemd credential), or, for a
single instance with everything in its data directory, from ``<data dir>/master-key``, generated
once (mode 0600) like the token secret.  A store shared by several instances (PostgreSQL or S3)
must get it from the environment or a file, so that every instance has the same one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

KEY_BYTES = 32
KEY_FILE = "master-key"
_KCV_LABEL = b"filesvc master key check v1"


class MasterKeyError(Exception):
    """The master key cannot be had or is malformed; one line, never the key."""


def parse_master_key(text: str, *, source: str) -> bytes:
    """32 bytes from base64 text (standard or URL-safe alphabet, padding optional)."""
    raw = text.strip()
    try:
        padded = raw + "=" * (-len(raw) % 4)
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source} is not base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{source} must be {KEY_BYTES} bytes in base64, got {len(key)}")
    return key


def new_master_key_text() -> str:
    """A fresh random master key, as the text the settings take."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def key_check_value(master: bytes) -> str:
    """A value stored beside the wrapped keys that tells a wrong master key from damage
    (HMAC of a fixed label: it reveals nothing about the key)."""
    return hmac.new(master, _KCV_LABEL, hashlib.sha256).hexdigest()[:32]


def read_key_file(path: Path) -> bytes:
    """The key in ``path`` (``FILESVC_MASTER_KEY_FILE``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise MasterKeyError(
            f"cannot read the master key file {path}: {exc.strerror or exc}"
        ) from None
    return parse_master_key(text, source=f"the master key file {path}")


def load_master_key(
    data_dir: Path,
    *,
    configured: str | None,
    key_file: Path | None,
    shared: bool,
    create: bool,
) -> bytes | None:
    """The master key: configured, else from ``key_file``, else the data directory's (created
    when ``create``).  ``shared``: the store is shared by instances (PostgreSQL or S3), so it
    must be configured.  None when there is none and ``create`` is false."""
    if configured:
        return parse_master_key(configured, source="FILESVC_MASTER_KEY")
    if key_file is not None:
        return read_key_file(key_file)
    if shared:
        raise MasterKeyError(
            "a store shared by instances (FILESVC_DB_URL or FILESVC_BLOB_URL set) needs the same"
            " master key on each: set FILESVC_MASTER_KEY or FILESVC_MASTER_KEY_FILE"
        )
    path = data_dir / KEY_FILE
    try:
        return parse_master_key(path.read_text(), source=f"the master key in {path}")
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key in {path}: {exc.strerror}") from None
    return _create(path)


def _create(path: Path) -> bytes:
    """Write a new key beside ``path`` and link it into place: a process racing this one (the
    workers of ``--workers N`` start together) reads either no file or a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = new_master_key_text()
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(staged, path)
        except FileExistsError:  # another process made it first: use that one
            return parse_master_key(path.read_text(), source=f"the master key in {path}")
    finally:
        staged.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return parse_master_key(text, source="a new master key")
