"""Two server processes sharing the metadata and the blobs (one data directory on the embedded
default; two data directories on one PostgreSQL + S3, as two instances): a read on one never
returns what a 2xx overwrite or delete on the other replaced (docs/design.md, invariant 8),
however warm the reader is.  Reads keep no per-file state between requests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from filesvc.auth import mint
from tests.helpers import PREFIX, SECRET, bearer, token
from tests.server_proc import ServerProcess, start_server


@pytest.fixture
def pair(
    tmp_path: Path, engine: str | None, blob_kind: str, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env: dict[str, str] = {}
    dirs = [tmp_path / "data", tmp_path / "data"]
    if engine is not None:
        env["FILESVC_DB_URL"] = engine
        dirs = [tmp_path / "one", tmp_path / "two"]
    if blob_kind == "s3":
        loc = request.getfixturevalue("s3_location")
        env["FILESVC_BLOB_URL"] = (
            f"s3://{loc.bucket}/{loc.prefix}?endpoint={loc.endpoint}&region={loc.region}"
        )
        env["AWS_ACCESS_KEY_ID"] = loc.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = loc.secret_access_key
    # Ready, not only listening: on PostgreSQL a server answers 503 until it has connected.
    first = start_server(dirs[0], env=env, ready=True)
    try:
        second = start_server(dirs[1], env=env, ready=True)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


async def test_reads_on_one_server_follow_writes_on_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    writer, reader = pair
    user = bearer(token())
    app = bearer(mint(SECRET, company="acme", app="sync"))
    files = f"{PREFIX}/companies/acme/files"
    async with aiohttp.ClientSession() as s:
        old = os.urandom(4096)
        async with s.post(
            writer.url + files,
            data=old,
            params={"filename": "a.bin"},
            headers={**user, "Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            fid = (await resp.json())["resource"]["id"]

        async def read() -> tuple[int, bytes, dict[str, Any] | None]:
            async with s.get(f"{reader.url}{files}/{fid}/download", headers=user) as resp:
                body = await resp.read()
            async with s.get(f"{reader.url}{files}/{fid}", headers=user) as meta:
                doc = await meta.json() if meta.status == 200 else None
            return resp.status, body, doc

        for _ in range(3):  # warm whatever the reader might keep
            assert (await read())[:2] == (200, old)
        new = os.urandom(5000)
        async with s.post(
            f"{writer.url}{files}/{fid}",
            data=new,
            params={"chunk_number": "1", "total_chunks": "1"},
            headers={**app, "Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        status, body, doc = await read()
        assert (status, body) == (200, new)
        assert doc is not None and doc["resource"]["upload_data"]["uploaded_size"] == 5000
        async with s.delete(f"{writer.url}{files}/{fid}", headers=user) as resp:
            assert resp.status == 200
        status, _, doc = await read()
        assert status == 404 and doc is None
        async with s.get(f"{reader.url}{files}/{fid}/thumbnails/0", headers=user) as resp:
            assert resp.status == 404
