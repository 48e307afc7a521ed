"""Numbered schema steps, applied at start on either engine, each recorded in ``schema_version``.

Each component (the blob store, the service) keeps its own numbered track, defined by the modules
that own the tables; this module owns only ``schema_version``.  A step runs in one transaction
together with the row that records it, so it is applied exactly once: a crash mid-step leaves the
schema as it was, and running the migrations again does nothing.  Concurrent starters (two server
processes) are serialised by the migration lock and each re-reads the version inside it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blobstore.engine.base import DialectName, Engine, Tx

LOCK = "filesvc:migrations"

_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " component TEXT NOT NULL, step INTEGER NOT NULL, description TEXT NOT NULL,"
    " applied_at BIGINT NOT NULL, PRIMARY KEY (component, step))"
)


@dataclass(frozen=True)
class Step:
    """One schema change: statements per dialect, in order."""

    number: int
    description: str
    sql: Mapping[DialectName, Sequence[str]]


@dataclass(frozen=True)
class Track:
    """A component's steps, numbered 1, 2, ... without gaps."""

    component: str
    steps: Sequence[Step]

    def __post_init__(self) -> None:
        numbers = [s.number for s in self.steps]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{self.component}: steps must be numbered 1..N, got {numbers}")


class SchemaTooNew(Exception):
    """The database was migrated by a newer release than this one."""


async def applied(tx: Tx, component: str) -> int:
    """The highest step of ``component`` recorded (0: none, or no ``schema_version`` yet)."""
    row = await tx.fetchrow(
        "SELECT COALESCE(MAX(step), 0) FROM schema_version WHERE component = ?", component
    )
    return int(row[0]) if row is not None else 0


async def current(engine: Engine, component: str) -> int:
    """The version recorded for ``component``; 0 when the table does not exist yet."""
    async with engine.read() as tx:
        if not await _has_table(tx):
            return 0
        return await applied(tx, component)


async def _has_table(tx: Tx) -> bool:
    if tx.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version'"
    return await tx.fetchrow(sql) is not None


async def migrate(engine: Engine, tracks: Sequence[Track]) -> list[tuple[str, int]]:
    """Apply every step not yet recorded, track by track in the order given (a component whose
    tables reference another's comes after it).  Returns the (component, step) pairs applied."""
    done: list[tuple[str, int]] = []
    async with engine.write() as tx:
        await tx.lock(LOCK)
        await tx.execute(_TABLE)
    for track in tracks:
        for step in track.steps:
            async with engine.write() as tx:
                await tx.lock(LOCK)
                have = await applied(tx, track.component)
                if have > len(track.steps):
                    raise SchemaTooNew(
                        f"the database holds {track.component} schema step {have}; this release"
                        f" knows {len(track.steps)}: upgrade filesvc"
                    )
                if have >= step.number:
                    continue
                for sql in step.sql[tx.dialect.name]:
                    await tx.execute(sql)
                await tx.execute(
                    "INSERT INTO schema_version (component, step, description, applied_at)"
                    " VALUES (?, ?, ?, ?)",
                    track.component,
                    step.number,
                    step.description,
                    time.time_ns() // 1_000_000,
                )
                done.append((track.component, step.number))
    return done
