"""Open either metadata engine for a test, migrated to the current schema."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from blobstore.engine import make_engine, parse_db_url
from blobstore.engine.base import Engine
from blobstore.engine.migrate import migrate
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database
from blobstore.keyring import KeyRing
from filesvc.schema import TRACKS


@asynccontextmanager
async def opened(
    url: str | None, data_dir: Path, *, synchronous: str = "FULL"
) -> AsyncIterator[Engine]:
    """The engine ``url`` names (None: SQLite in ``data_dir``), open; closed on the way out."""
    db = make_engine(parse_db_url(url, data_dir), synchronous=synchronous)
    if isinstance(db, Database):
        await db.open()
    else:
        assert isinstance(db, PostgresEngine)
        await db.connect()
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def migrated(url: str | None, data_dir: Path) -> AsyncIterator[Engine]:
    """The engine ``url`` names (None: SQLite in ``data_dir``), open and migrated."""
    async with opened(url, data_dir, synchronous="NORMAL") as db:
        await migrate(db, TRACKS)
        yield db


@asynccontextmanager
async def key_ring(data_dir: Path) -> AsyncIterator[KeyRing]:
    """A key ring under a fresh random master key, its data key recorded in a SQLite engine
    in ``data_dir``."""
    async with migrated(None, data_dir) as engine:
        ring = KeyRing(engine, os.urandom(32))
        await ring.check(record=True)
        yield ring


# A table of no schema's own, for tests of the engine interface itself.
SCRATCH_SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY, y TEXT)"
SCRATCH_INSERT = "INSERT INTO t (x, y) VALUES (?, ?)"


@asynccontextmanager
async def with_scratch_table(url: str | None, data_dir: Path) -> AsyncIterator[Engine]:
    """The engine ``url`` names, open, with the scratch table ``t`` made and empty."""
    async with opened(url, data_dir) as db:
        async with db.write() as tx:
            await tx.execute(SCRATCH_SCHEMA)
            await tx.execute("DELETE FROM t")
        yield db


async def scratch_rows(db: Engine) -> list[tuple[int, str]]:
    """The scratch table's rows, in key order."""
    return [(r["x"], r["y"]) for r in await db.query("SELECT x, y FROM t ORDER BY x")]
