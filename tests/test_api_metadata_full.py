"""When SQLite cannot commit for lack of space ("database or disk is full"), every write answers
507 with the envelope, never 500, and nothing acknowledged is lost.

SQLite's own page limit (``PRAGMA max_page_count``) raises exactly the SQLITE_FULL error a full
disk does, at exactly the commit that needs a new page, so each kind of write meets it
deterministically: a create without body, an upload whose blob was written but whose commit
failed, a chunk commit.  DELETE still works (it frees pages).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from blobstore.cli import main as blobstore_main
from blobstore.engine.sqlite import Database
from filesvc.appkeys import DATABASE
from filesvc.settings import Settings
from tests.helpers import Api, error_of, multipart

# It limits the SQLite file's pages itself.
pytestmark = pytest.mark.sqlite_only

LONG = "n" * 1000  # a 1000-character name fills a database page in four rows
ATTEMPTS = 40


async def _limit_pages(api: Api) -> None:
    db = api.client.app[DATABASE]
    assert isinstance(db, Database)
    writer = db._writer
    assert writer is not None
    async with writer.execute("PRAGMA page_count") as cur:
        row = await cur.fetchone()
    assert row is not None
    # Fetched to the end: a statement left active would keep the writer's read snapshot open,
    # and its next BEGIN IMMEDIATE would fail once the unit connection has committed.
    await writer.execute_fetchall(f"PRAGMA max_page_count = {int(row[0])}")
    # The group commit of new files writes through the engine's unit connection.
    units = db._units
    assert units is not None
    await units.pragma(f"PRAGMA max_page_count = {int(row[0])}")


@pytest.mark.local_blobs
async def test_every_write_that_cannot_commit_is_507(api: Api, settings: Settings) -> None:
    # Incomplete files made while there is room, for the chunk commits later.
    pending = [
        (await api.create({"total_chunks": "2", "filename": "p"}))["id"] for _ in range(ATTEMPTS)
    ]
    kept = await api.upload(b"kept before the disk filled")
    await _limit_pages(api)

    acked: dict[str, bytes] = {kept["id"]: b"kept before the disk filled"}
    seen: dict[str, set[int]] = {"create": set(), "upload": set(), "chunk": set()}
    for i in range(ATTEMPTS):
        resp = await api.client.post(
            api.files(), params={"filename": f"{LONG}{i}"}, headers=api.headers()
        )
        seen["create"].add(resp.status)
        if resp.status != 200:
            assert await error_of(resp) == (
                507,
                "the file store is full: nothing was saved; retry once space is freed",
            )

        data = os.urandom(100) + bytes([i])
        resp = await api.client.post(
            api.files(),
            data=multipart(data, f"{LONG}{i}"),
            headers=api.headers(),
        )
        seen["upload"].add(resp.status)
        if resp.status == 200:
            acked[(await resp.json())["resource"]["id"]] = data
        else:
            assert (await error_of(resp))[0] == 507

        resp = await api.chunk(pending[i], b"c" * 10, {"chunk_number": "1", "filename": LONG})
        seen["chunk"].add(resp.status)
        if resp.status != 200:
            assert (await error_of(resp))[0] == 507
    assert all(507 in statuses and statuses <= {200, 507} for statuses in seen.values()), seen

    # DELETE frees pages: it works on the full database.
    victim = next(iter(acked))
    resp = await api.client.delete(f"{api.files()}/{victim}", headers=api.headers())
    assert resp.status == 200, await resp.text()
    del acked[victim]

    for fid, data in acked.items():
        assert await api.content(fid) == data
    # The blobs of refused uploads are orphans (hints), not damage.
    fsck = ["fsck", "--data-dir", str(settings.data_dir), "--full"]
    assert await asyncio.to_thread(blobstore_main, fsck) == 0
