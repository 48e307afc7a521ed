"""The secrets the settings resolve at start: the token secret kept in the data directory when
none is configured (random, mode 0600, made once and then shared by every process serving that
directory), and the master key a shared store must be given."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blobstore.masterkey import MasterKeyError, load_master_key
from filesvc.setting_parsers import ConfigError, jwt_secret

SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name, not a secret


def secret_from_data_dir(data_dir: Path, *, create: bool) -> str:
    """The secret kept in ``data_dir``; created (random, mode 0600) only when ``create``."""
    path = data_dir / SECRET_FILE
    try:
        return jwt_secret(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"no token secret: FILESVC_JWT_SECRET is unset and {path} does not exist"
            ) from None
    except ValueError as exc:
        raise ConfigError(f"the secret in {path} {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the secret in {path}: {exc.strerror}") from None
    return load_or_create_secret(data_dir)


def load_or_create_secret(data_dir: Path) -> str:
    """The secret kept in ``data_dir``, created (random, mode 0600) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
        f.flush()
        os.fsync(f.fileno())
    return secret


def resolve_master_key(values: Mapping[str, Any], *, create: bool) -> bytes | None:
    """The master key the settings name.  A shared store (PostgreSQL or S3) with encryption on
    must be given one (``FILESVC_MASTER_KEY`` or ``FILESVC_MASTER_KEY_FILE``) when serving; the
    data directory's own key is read or made at start (:mod:`filesvc.app`), where an unusable
    data directory is reported as such."""
    shared = bool(values["db_url"]) or bool((values["blob_url"] or "").strip())
    if not shared and not values["master_key"] and values["master_key_file"] is None:
        return None
    try:
        return load_master_key(
            values["data_dir"],
            configured=values["master_key"],
            key_file=values["master_key_file"],
            shared=shared and values["encryption"] and create,
            create=False,
        )
    except MasterKeyError as exc:
        raise ConfigError(str(exc)) from None
