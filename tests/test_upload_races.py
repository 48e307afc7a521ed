"""Races between requests on one file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from blobstore.store import PutResult
from filesvc.appkeys import SERVICE
from tests.helpers import Api, error_of

OCTETS = {"Content-Type": "application/octet-stream"}


async def test_user_chunk_overtaken_by_completion_is_409(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumable.js retry of the last chunk, still streaming while the first copy completes
    the file: docs/api.md lists the overwrite race as a 409 (the code's own comment says "conflict"),
    not the 403 a user gets for deliberately overwriting a complete file."""
    store = api.client.app[SERVICE].store
    real_put = store.put
    entered = asyncio.Event()
    release = asyncio.Event()

    async def put(
        stream: AsyncIterator[bytes],
        *,
        max_size: int | None = None,
        scope: str | None = None,
        inline: bool = False,
        defer_name_check: bool = False,
        size: int | None = None,
    ) -> PutResult:
        entered.set()
        return await real_put(
            stream,
            max_size=max_size,
            scope=scope,
            inline=inline,
            defer_name_check=defer_name_check,
            size=size,
        )

    monkeypatch.setattr(store, "put", put)
    fid = (await api.create({"filename": "x", "total_chunks": "1", "total_size": "5"}))["id"]

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"he"
        await release.wait()
        yield b"llo"

    late = asyncio.create_task(
        api.client.post(
            f"{api.files()}/{fid}",
            data=slow_body(),
            params={"chunk_number": "1"},
            headers=api.headers(**OCTETS),
        )
    )
    await asyncio.wait_for(entered.wait(), 5)
    first = await api.chunk(fid, b"hello", {"chunk_number": "1"})
    assert first.status == 200
    release.set()
    resp = await asyncio.wait_for(late, 5)
    assert await error_of(resp) == (
        409,
        "the file was completed by another request while this chunk was uploading",
    )
    assert await api.content(fid) == b"hello"
