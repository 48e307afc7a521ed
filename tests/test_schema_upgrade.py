"""Schema migrations: a data directory made by release 0.1.0 is migrated at start and serves its
files byte-identical; migrating again changes nothing, on either engine."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import xxhash

from blobstore import layout
from blobstore.engine import make_engine, parse_db_url
from blobstore.engine.migrate import SchemaTooNew, current, migrate
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database
from blobstore.local import LocalBackend
from blobstore.store import ContentStore
from filesvc.schema import TRACKS
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import SECRET

# Release 0.1.0's schema, exactly as it created it (blobstore/manifests and filesvc/repo.py
# of that release).
RELEASE_0_1_0 = (
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
    """CREATE TABLE IF NOT EXISTS files (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        company_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        application_id TEXT,
        name TEXT,
        mime TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        thumbnails_status TEXT NOT NULL DEFAULT 'waiting',
        etag TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS files_company ON files(company_id)",
    """CREATE TABLE IF NOT EXISTS thumbnail_jobs (
        file_id TEXT PRIMARY KEY REFERENCES manifests(file_id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    )""",
)


def etag_0_1_0(chunks: list[tuple[str, int]]) -> str:
    h = xxhash.xxh3_128()
    for ref, size in chunks:
        h.update(f"{ref}:{size}\n".encode())
    return f'"{h.hexdigest()}"'


async def write_release_0_1_0(data_dir: Path, files: dict[str, list[bytes]]) -> dict[str, str]:
    """A data directory as 0.1.0 left it: its blobs through the (unchanged) local layout, its
    rows as 0.1.0's upload path wrote them.  Returns file name -> file id."""
    backend = await asyncio.to_thread(LocalBackend, layout.blobs_dir(data_dir))
    store = ContentStore(backend)
    ids: dict[str, str] = {}
    rows: list[tuple[str, str, list[tuple[str, int]], bool]] = []
    try:
        for name, chunks in files.items():
            puts = [await store.put_bytes(c) for c in chunks]
            file_id = str(uuid.uuid4())
            ids[name] = file_id
            complete = not name.startswith("partial")
            rows.append((file_id, name, [(p.ref, p.size) for p in puts], complete))
    finally:
        await backend.close()

    def write() -> None:
        now = int(time.time() * 1000)
        with sqlite3.connect(layout.db_path(data_dir)) as db:
            db.execute("PRAGMA journal_mode = WAL")
            for ddl in RELEASE_0_1_0:
                db.execute(ddl)
            for file_id, name, chunks, complete in rows:
                total = 3 if not complete else len(chunks)
                size = None if not complete else sum(s for _, s in chunks)
                db.execute(
                    "INSERT INTO manifests (file_id, owner, expected_chunks, expected_size,"
                    " complete, updated_at) VALUES (?, 'acme', ?, ?, ?, ?)",
                    (file_id, total, size, int(complete), now),
                )
                db.executemany(
                    "INSERT INTO manifest_entries (file_id, slot, idx, ref, size)"
                    " VALUES (?, 'chunk', ?, ?, ?)",
                    [(file_id, i, ref, n) for i, (ref, n) in enumerate(chunks, 1)],
                )
                db.execute(
                    "INSERT INTO files (file_id, company_id, user_id, name, mime, created_at,"
                    " updated_at, thumbnails_status, etag)"
                    " VALUES (?, 'acme', 'alice', ?, 'application/octet-stream', ?, ?, 'done', ?)",
                    (file_id, name, now, now, etag_0_1_0(chunks) if complete else None),
                )
                if complete:
                    db.execute(
                        "INSERT INTO thumbnail_jobs (file_id, generation, state, updated_at)"
                        " VALUES (?, 1, 'done', ?)",
                        (file_id, now),
                    )
        db.close()

    await asyncio.to_thread(write)
    return ids


@pytest.mark.sqlite_only
async def test_a_release_0_1_0_data_dir_is_migrated_and_serves_its_files(
    make_api: AppFactory, tmp_path: Path, engine: str | None
) -> None:
    data_dir = tmp_path / "old"
    files = {
        "one.bin": [os.urandom(70_000)],
        "chunked.bin": [os.urandom(5000), os.urandom(5000), b"tail"],
        "empty.txt": [b""],
        "partial.bin": [b"first of three"],
    }
    ids = await write_release_0_1_0(data_dir, files)

    api = await make_api(settings_=Settings(data_dir=data_dir, jwt_secret=SECRET))
    for name, chunks in files.items():
        meta = await api.meta(ids[name])
        assert meta.status == 200, await meta.text()
        resource = (await meta.json())["resource"]
        assert resource["metadata"]["name"] == name
        if name.startswith("partial"):
            assert resource["upload_data"]["complete"] is False
            continue
        assert await api.content(ids[name]) == b"".join(chunks)
    # An upload 0.1.0 left half done goes on with the new code.
    for number, data in ((2, b" second "), (3, b"third")):
        resp = await api.chunk(
            ids["partial.bin"], data, {"chunk_number": str(number), "total_chunks": "3"}
        )
        assert resp.status == 200, await resp.text()
    assert await api.content(ids["partial.bin"]) == b"first of three second third"

    db = Database(layout.db_path(data_dir))
    await db.open()
    try:
        assert [await current(db, t.component) for t in TRACKS] == [5, 4]
        assert await migrate(db, TRACKS) == []  # idempotent
    finally:
        await db.close()


async def test_migrations_apply_once_on_each_engine(tmp_path: Path, engine: str | None) -> None:
    target = parse_db_url(engine, tmp_path)
    db = make_engine(target)
    if isinstance(db, Database):
        await db.open()
    else:
        assert isinstance(db, PostgresEngine)
        await db.connect()
    try:
        first = await migrate(db, TRACKS)
        assert first == [
            ("blobstore", 1),
            ("blobstore", 2),
            ("blobstore", 3),
            ("blobstore", 4),
            ("blobstore", 5),
            ("filesvc", 1),
            ("filesvc", 2),
            ("filesvc", 3),
            ("filesvc", 4),
        ]
        again = await asyncio.gather(migrate(db, TRACKS), migrate(db, TRACKS))
        assert list(again) == [[], []]
        async with db.write() as tx:  # a newer release migrated this database
            await tx.execute(
                "INSERT INTO schema_version (component, step, description, applied_at)"
                " VALUES ('filesvc', 5, 'from the future', 0)"
            )
        with pytest.raises(SchemaTooNew, match="upgrade filesvc"):
            await migrate(db, TRACKS)
    finally:
        await db.close()
