"""The ``thumbnail_jobs`` table: a durable queue with leases.  Every statement on it is here.

A job is queued in the transaction that completes a file, so a crash cannot lose it.  Any
process of any instance claims a job by taking a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so two claimers never take the same row; SQLite's one writer gives the same).  A job whose
claimer died is claimable again when its lease ends.  ``generation`` grows with every new content
of the file, so a job for replaced content saves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from blobstore.engine.base import Tx
from blobstore.engine.migrate import Step

# Release 0.1.0's table (SQLite), and its PostgreSQL twin.
TABLE_SQL = {
    "sqlite": (
        """CREATE TABLE IF NOT EXISTS thumbnail_jobs (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    )""",
    ),
    "postgresql": (
        """CREATE TABLE IF NOT EXISTS thumbnail_jobs (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL
    )""",
    ),
}

STEP_LEASES = Step(
    2,
    "thumbnail_jobs: leases, so that any instance runs jobs and takes over a dead one's",
    {
        "sqlite": (
            "ALTER TABLE thumbnail_jobs ADD COLUMN lease_owner TEXT",
            "ALTER TABLE thumbnail_jobs ADD COLUMN lease_until INTEGER",
            "CREATE INDEX IF NOT EXISTS thumbnail_jobs_open ON thumbnail_jobs(state, lease_until)",
        ),
        "postgresql": (
            "ALTER TABLE thumbnail_jobs ADD COLUMN IF NOT EXISTS lease_owner TEXT",
            "ALTER TABLE thumbnail_jobs ADD COLUMN IF NOT EXISTS lease_until BIGINT",
            "CREATE INDEX IF NOT EXISTS thumbnail_jobs_open ON thumbnail_jobs(state, lease_until)",
        ),
    },
)


@dataclass(frozen=True)
class Claimed:
    """A job this claimer holds the lease of.  ``attempts`` counts this one."""

    file_id: str
    generation: int
    attempts: int


async def enqueue(tx: Tx, file_id: str, *, now_ms: int) -> int:
    """Queue a job for the file's new content; return its generation."""
    row = await tx.fetchrow(
        "INSERT INTO thumbnail_jobs (file_id, generation, state, updated_at)"
        " VALUES (?, 1, 'pending', ?)"
        " ON CONFLICT (file_id) DO UPDATE SET generation = thumbnail_jobs.generation + 1,"
        " state = 'pending', attempts = 0, lease_owner = NULL, lease_until = NULL,"
        " updated_at = excluded.updated_at"
        " RETURNING generation",
        file_id,
        now_ms,
    )
    assert row is not None
    return int(row[0])


async def enqueue_new(tx: Tx, jobs: Iterable[tuple[str, int]]) -> None:
    """Queue the first job of new files: (file_id, now_ms) pairs."""
    await tx.executemany_later(
        "INSERT INTO thumbnail_jobs (file_id, generation, state, updated_at)"
        " VALUES (?, 1, 'pending', ?)",
        list(jobs),
    )


async def claimable(tx: Tx, *, now_ms: int) -> bool:
    """True when some open job's lease is free or over (a read: idle pollers write nothing)."""
    row = await tx.fetchrow(
        "SELECT 1 FROM thumbnail_jobs WHERE state IN ('pending', 'running')"
        " AND (lease_until IS NULL OR lease_until <= ?) LIMIT 1",
        now_ms,
    )
    return row is not None


async def claim(tx: Tx, owner: str, *, now_ms: int, lease_ms: int) -> Claimed | None:
    """Take the oldest open job whose lease is free or over, with a lease until
    ``now_ms + lease_ms``; None when there is none."""
    # The only non-constant part is the dialect's clause.
    row = await tx.fetchrow(
        "UPDATE thumbnail_jobs SET state = 'running', attempts = attempts + 1,"  # noqa: S608
        " lease_owner = ?, lease_until = ?"
        " WHERE file_id = (SELECT file_id FROM thumbnail_jobs"
        "  WHERE state IN ('pending', 'running') AND (lease_until IS NULL OR lease_until <= ?)"
        "  ORDER BY updated_at LIMIT 1" + tx.dialect.skip_locked + ")"
        " RETURNING file_id, generation, attempts",
        owner,
        now_ms + lease_ms,
        now_ms,
    )
    return None if row is None else Claimed(row[0], int(row[1]), int(row[2]))


async def generation(tx: Tx, file_id: str) -> int | None:
    """The file's current content generation (None: no job, e.g. the file was deleted)."""
    row = await tx.fetchrow("SELECT generation FROM thumbnail_jobs WHERE file_id = ?", file_id)
    return None if row is None else int(row[0])


async def lock_generation(tx: Tx, file_id: str) -> int | None:
    """:func:`generation`, with the job row locked until the transaction ends."""
    row = await tx.fetchrow(
        "SELECT generation FROM thumbnail_jobs WHERE file_id = ?"  # noqa: S608
        + tx.dialect.for_update,
        file_id,
    )
    return None if row is None else int(row[0])


async def state(tx: Tx, file_id: str, gen: int) -> str | None:
    """The state of that generation's job; None when the job moved on or is gone."""
    row = await tx.fetchrow(
        "SELECT state FROM thumbnail_jobs WHERE file_id = ? AND generation = ?", file_id, gen
    )
    return None if row is None else str(row[0])


async def finish(tx: Tx, file_id: str, gen: int, outcome: str) -> None:
    """Record the outcome (``done`` or ``error``) of that generation's job, releasing its lease."""
    await tx.execute(
        "UPDATE thumbnail_jobs SET state = ?, lease_owner = NULL, lease_until = NULL"
        " WHERE file_id = ? AND generation = ?",
        outcome,
        file_id,
        gen,
    )


async def waiting_jobs(tx: Tx) -> int:
    """Jobs waiting for a worker (not claimed yet), in every process."""
    row = await tx.fetchrow("SELECT COUNT(*) FROM thumbnail_jobs WHERE state = 'pending'")
    return int(row[0]) if row is not None else 0


async def release(tx: Tx, owner: str) -> int:
    """End every lease ``owner`` holds (it stopped, or it is known dead): its jobs are open to
    any claimer at once.  Returns how many."""
    return await tx.execute(
        "UPDATE thumbnail_jobs SET lease_until = NULL, lease_owner = NULL"
        " WHERE lease_owner = ? AND state IN ('pending', 'running')",
        owner,
    )


async def lease_owners(tx: Tx, *, now_ms: int) -> list[str]:
    """The claimers holding a lease that has not run out."""
    rows = await tx.fetch(
        "SELECT DISTINCT lease_owner FROM thumbnail_jobs"
        " WHERE lease_owner IS NOT NULL AND lease_until > ?",
        now_ms,
    )
    return [str(r[0]) for r in rows]


async def force_lease(tx: Tx, file_id: str, *, owner: str, until_ms: int, attempts: int) -> None:
    """Set a job's lease as a claimer would have (tests and tools simulating a dead claimer)."""
    await tx.execute(
        "UPDATE thumbnail_jobs SET state = 'running', lease_owner = ?, lease_until = ?,"
        " attempts = ? WHERE file_id = ?",
        owner,
        until_ms,
        attempts,
        file_id,
    )
