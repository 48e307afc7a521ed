"""A thumbnail index is ASCII digits; other Unicode "digits" are a 400, never a 500
and never an alias of another index."""

from __future__ import annotations

import pytest

from tests.helpers import Api, error_of
from tests.test_api_thumbnails import SYNC, jpeg


@pytest.mark.parametrize("index", ["\u00b2", "\u0661", "\u0660", "\uff10"])
async def test_non_ascii_digit_index_is_400(api: Api, index: str) -> None:
    res = await api.upload(jpeg(120, 80), filename="p.jpg", params=SYNC)
    assert len(res["thumbnails"]) == 1  # the lookup only runs when there is a thumbnail
    resp = await api.client.get(
        f"{api.files()}/{res['id']}/thumbnails/{index}", headers=api.headers()
    )
    assert await error_of(resp) == (400, "thumbnail index must be a whole number")
