"""How a command ended, and the one switch from outcomes and errors to exit codes."""

from __future__ import annotations

import enum
import sqlite3

from blobstore.backends import BadBlobUrl
from blobstore.engine.base import BadDatabaseUrl
from blobstore.errors import BlobNotFound, BlobStoreError
from blobstore.refs import InvalidRef


class ExitCode(enum.IntEnum):
    OK = 0
    DAMAGE = 1
    USAGE = 2


class Outcome(enum.Enum):
    """How a command that ran to its end went."""

    CLEAN = "clean"
    DAMAGE = "damage"


class UsageError(Exception):
    """Bad arguments."""


class StoreUnavailable(Exception):
    """The data directory or its database cannot be opened as a store."""


def exit_code(result: Outcome | BaseException) -> ExitCode:
    """The one switch from outcomes and errors to exit codes."""
    match result:
        case Outcome.CLEAN:
            return ExitCode.OK
        case Outcome.DAMAGE | BlobNotFound():
            return ExitCode.DAMAGE
        case (
            UsageError()
            | InvalidRef()
            | StoreUnavailable()
            | BadDatabaseUrl()
            | BadBlobUrl()
            | sqlite3.Error()
        ):
            return ExitCode.USAGE
        case BlobStoreError() | OSError():
            return ExitCode.USAGE  # the store cannot be read: not a verdict on its content
        case BaseException():
            raise result
    raise AssertionError(result)
