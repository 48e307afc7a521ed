"""``Engine.query``: one statement, its own snapshot, on both engines.  On SQLite a statement
runs on the event loop within a budget of steps; one over it (a file with thousands of
chunks) is interrupted and run on a reader thread, with the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from blobstore.engine.sqlite import INLINE_STEPS, Database
from tests.engines import opened

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY)"
MANY = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) SELECT i FROM n"


async def test_query_sees_the_last_commit_on_both_engines(
    engine: str | None, tmp_path: Path
) -> None:
    async with opened(engine, tmp_path) as db:
        async with db.write() as tx:
            await tx.execute(SCHEMA)
            await tx.execute("DELETE FROM t")
        assert await db.query("SELECT x FROM t") == []
        async with db.write() as tx:
            await tx.executemany("INSERT INTO t (x) VALUES (?)", [(1,), (2,)])
        rows = await db.query("SELECT x FROM t WHERE x >= ? ORDER BY x", 1)
        assert [r["x"] for r in rows] == [1, 2]


async def test_a_statement_over_the_inline_budget_runs_on_a_thread_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(tmp_path / "m.sqlite3", readers=1)
    await db.open([SCHEMA])
    inline = db._query_inline
    outcomes: list[bool] = []

    def watched(*args: object) -> object:
        rows = inline(*args)  # type: ignore[arg-type]
        outcomes.append(rows is not None)
        return rows

    monkeypatch.setattr(db, "_query_inline", watched)
    try:
        small = await db.query(MANY, 10)
        large = await db.query(MANY, INLINE_STEPS)  # several steps a row: over the budget
        assert [r[0] for r in small] == list(range(1, 11))
        assert [r[0] for r in large] == list(range(1, INLINE_STEPS + 1))
        assert outcomes == [True, False]  # the small one inline, the large one interrupted
        assert [r[0] for r in await db.query(MANY, 3)] == [1, 2, 3]  # and inline again after
        assert outcomes[-1] is True
    finally:
        await db.close()
