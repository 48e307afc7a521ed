"""Integers past what the metadata store holds are a 400, never a 500."""

from __future__ import annotations

import pytest

from tests.helpers import Api, error_of

HUGE = "9" * 19  # passes a 19-digit check, but is past 2**63 - 1, SQLite's largest integer


@pytest.mark.parametrize("name", ["total_size", "resumableTotalSize", "totalSize"])
async def test_total_size_past_int64_is_400(api: Api, name: str) -> None:
    resp = await api.client.post(
        api.files(), params={"filename": "x", name: HUGE}, headers=api.headers()
    )
    assert await error_of(resp) == (
        400,
        f"query parameter '{name}' must be at most {2**63 - 1}, got {HUGE}",
    )


async def test_test_chunks_with_huge_chunk_number_is_400(api: Api) -> None:
    fid = (await api.create({"filename": "x"}))["id"]
    resp = await api.client.get(
        f"{api.files()}/{fid}", params={"resumableChunkNumber": HUGE}, headers=api.headers()
    )
    assert await error_of(resp) == (
        400,
        f"query parameter 'resumableChunkNumber' must be at most {2**63 - 1}, got {HUGE}",
    )


async def test_largest_int64_total_size_is_stored(api: Api) -> None:
    res = await api.create({"filename": "x", "total_size": str(2**63 - 1)})
    assert res["upload_data"]["size"] == 2**63 - 1
