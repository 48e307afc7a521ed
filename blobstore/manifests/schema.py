"""The manifests tables' schema steps (see :mod:`blobstore.engine.migrate`)."""

from __future__ import annotations

from blobstore.engine.migrate import Step

# Release 0.1.0's tables, as it created them (SQLite), and their PostgreSQL twins (sizes and
# epoch milliseconds need 64 bits there).
STEP_TABLES = Step(
    1,
    "manifests and manifest_entries",
    {
        "sqlite": (
            """CREATE TABLE IF NOT EXISTS manifests (
        file_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expected_chunks INTEGER,
        expected_size INTEGER,
        staged_chunks INTEGER,
        staged_size INTEGER,
        staged_owner TEXT,
        complete INTEGER NOT NULL DEFAULT 0,
        damaged INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    )""",
            """CREATE TABLE IF NOT EXISTS manifest_entries (
        file_id TEXT NOT NULL REFERENCES manifests(file_id) ON DELETE CASCADE,
        slot TEXT NOT NULL,
        idx INTEGER NOT NULL,
        ref TEXT NOT NULL,
        size INTEGER NOT NULL,
        attrs TEXT,
        PRIMARY KEY (file_id, slot, idx)
    ) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS manifest_entries_ref ON manifest_entries(ref)",
        ),
        "postgresql": (
            """CREATE TABLE IF NOT EXISTS manifests (
        file_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expected_chunks INTEGER,
        expected_size BIGINT,
        staged_chunks INTEGER,
        staged_size BIGINT,
        staged_owner TEXT,
        complete INTEGER NOT NULL DEFAULT 0,
        damaged INTEGER NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL
    )""",
            """CREATE TABLE IF NOT EXISTS manifest_entries (
        file_id TEXT NOT NULL REFERENCES manifests(file_id) ON DELETE CASCADE,
        slot TEXT NOT NULL,
        idx INTEGER NOT NULL,
        ref TEXT NOT NULL,
        size BIGINT NOT NULL,
        attrs TEXT,
        PRIMARY KEY (file_id, slot, idx)
    )""",
            "CREATE INDEX IF NOT EXISTS manifest_entries_ref ON manifest_entries(ref)",
        ),
    },
)
