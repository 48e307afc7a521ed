"""Range edge cases RFC 9110 pins down."""

from __future__ import annotations

import pytest

from tests.helpers import Api, error_of


@pytest.mark.parametrize("header", ["bytes=-5", "bytes=-1", "bytes=0-", "bytes=0-0"])
async def test_any_range_of_an_empty_file_is_416(api: Api, header: str) -> None:
    # RFC 9110 14.1.1: a suffix range of a zero-length representation is unsatisfiable; the
    # code answered 206 with the impossible "Content-Range: bytes 0--1/0".
    res = await api.upload(b"")
    resp = await api.download(res["id"], Range=header)
    assert await error_of(resp) == (416, "the range is outside the file's 0 bytes")
    assert resp.headers["Content-Range"] == "bytes */0"


async def test_416_carries_the_unsatisfied_content_range(api: Api) -> None:
    # RFC 9110 15.5.17: a 416 SHOULD say the current length as "bytes */N".
    res = await api.upload(b"0123456789")
    resp = await api.download(res["id"], Range="bytes=10-")
    assert (await error_of(resp))[0] == 416
    assert resp.headers["Content-Range"] == "bytes */10"


@pytest.mark.parametrize(
    "header", ["bytes=\u0661-\u0662", "bytes=-\u0663", "bytes=\uff11-", "bytes=+1-2"]
)
async def test_non_ascii_digits_make_an_invalid_range_that_is_ignored(
    api: Api, header: str
) -> None:
    # RFC 9110 14.1.1: positions are ASCII DIGITs; an invalid Range header is ignored (200).
    res = await api.upload(b"0123456789")
    resp = await api.download(res["id"], Range=header)
    assert resp.status == 200 and await resp.read() == b"0123456789"
