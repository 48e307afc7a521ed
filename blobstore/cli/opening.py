"""Opening a store for a command: the metadata engine and the configured blob backend."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from blobstore import manifests
from blobstore.backends import BlobLocation, LocalLocation, open_backend
from blobstore.cli.outcome import StoreUnavailable
from blobstore.engine import DbTarget, parse_db_url
from blobstore.engine.base import Engine
from blobstore.engine.migrate import current, migrate
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database
from blobstore.errors import BlobStoreError, KeyUnavailable
from blobstore.keyring import KeyRing
from blobstore.port import BlobBackend
from blobstore.schema import TRACK
from blobstore.sealed import seal_backend


def _check_layout(data_dir: Path, target: DbTarget, blobs: Path | None) -> None:
    if not data_dir.is_dir():
        raise StoreUnavailable(f"{data_dir}: no such directory")
    if target.sqlite_path is not None and not target.sqlite_path.is_file():
        raise StoreUnavailable(
            f"{target.sqlite_path}: no database (is this the service's --data-dir?)"
        )
    if blobs is not None and not blobs.is_dir():
        raise StoreUnavailable(f"{blobs}: no blob directory")


# Attempts to reach PostgreSQL before a command gives up (about 3 s with the backoff).
CONNECT_ATTEMPTS = 5


async def _open_engine(target: DbTarget, *, writable: bool) -> Engine:
    if target.sqlite_path is not None:
        db = Database(target.sqlite_path)
        try:
            if writable:
                await db.open()
            else:
                await db.open_readonly()
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise StoreUnavailable(
                f"{target.sqlite_path}: cannot open the database: {exc}"
            ) from None
        return db
    assert target.postgres_dsn is not None
    pg = PostgresEngine(target.postgres_dsn, pool_size=2)
    try:
        await pg.connect_with_backoff(attempts=CONNECT_ATTEMPTS, longest=1.0)
    except BlobStoreError as exc:
        raise StoreUnavailable(f"{target.describe()}: {exc}") from None
    return pg


@asynccontextmanager
async def open_store(
    data_dir: Path,
    blobs: BlobLocation,
    *,
    writable: bool,
    db_url: str | None = None,
    current_schema: bool = False,
    master: bytes | None = None,
    sealing: bool = False,
) -> AsyncIterator[tuple[Engine, BlobBackend]]:
    """The store's metadata engine and the configured blob backend, or StoreUnavailable.
    Read-only opening changes nothing (fsck right after a crash must not disturb the evidence);
    writable opening brings the blob store's schema up to date.  ``current_schema``: refuse a
    read-only opening of a schema older than this release's (gc's dry run reads newer tables).
    The backend opens sealed blobs with ``master`` (checked against the store's key check
    value: a wrong key is refused here) and seals new ones when ``sealing``."""
    target = parse_db_url(db_url, data_dir)
    local_root = blobs.root if isinstance(blobs, LocalLocation) else None
    await asyncio.to_thread(_check_layout, data_dir, target, local_root)
    db = await _open_engine(target, writable=writable)
    try:
        try:
            if writable:
                await migrate(db, [TRACK])
            elif current_schema and await current(db, TRACK.component) < len(TRACK.steps):
                raise StoreUnavailable(
                    "the database schema is older than this blobstore: start filesvc (or run"
                    " `blobstore gc`) once to migrate it"
                )
            async with db.read() as tx:
                await manifests.probe(tx)
        except (sqlite3.Error, OSError, BlobStoreError) as exc:
            raise StoreUnavailable(f"{target.describe()}: cannot use the database: {exc}") from None
        keys = KeyRing(db, master)
        try:
            if master is not None and await current(db, TRACK.component) >= len(TRACK.steps):
                await keys.check(record=False)
        except KeyUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None
        backend: BlobBackend = seal_backend(await open_backend(blobs), keys, sealing=sealing)
    except BaseException:
        await db.close()
        raise
    try:
        yield db, backend
    finally:
        await backend.close()
        await db.close()
