"""Open either metadata engine for a test, migrated to the current schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from blobstore.engine import make_engine, parse_db_url
from blobstore.engine.base import Engine
from blobstore.engine.migrate import migrate
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database
from filesvc.schema import TRACKS


@asynccontextmanager
async def migrated(url: str | None, data_dir: Path) -> AsyncIterator[Engine]:
    """The engine ``url`` names (None: SQLite in ``data_dir``), open and migrated."""
    db = make_engine(parse_db_url(url, data_dir), synchronous="NORMAL")
    if isinstance(db, Database):
        await db.open()
    else:
        assert isinstance(db, PostgresEngine)
        await db.connect()
    try:
        await migrate(db, TRACKS)
        yield db
    finally:
        await db.close()
