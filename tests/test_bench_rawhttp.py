"""The bench's lean read client (bench/rawhttp.py) counts a body only when the response is what
was asked for, and fails loudly on anything else: a wrong status, length or Content-Range, a
chunked body, a connection cut mid-body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench.client import WorkloadError
from bench.rawhttp import Expect, RawClient, download

BODY = bytes(range(256)) * 4096  # 1 MiB


async def _bytes(request: web.Request) -> web.StreamResponse:
    rng = request.http_range
    if request.headers.get("Range"):
        start, stop = rng.start or 0, rng.stop or len(BODY)
        part = BODY[start:stop]
        headers = {"Content-Range": f"bytes {start}-{stop - 1}/{len(BODY)}"}
        return web.Response(status=206, body=part, headers=headers)
    return web.Response(body=BODY)


async def _lying_range(request: web.Request) -> web.Response:
    return web.Response(status=206, body=BODY[:10], headers={"Content-Range": "bytes 5-14/99"})


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b"x" * 100)
    await resp.write_eof()
    return resp


async def _cut(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.content_length = len(BODY)
    await resp.prepare(request)
    await resp.write(BODY[:1000])
    assert request.transport is not None
    request.transport.close()
    return resp


async def _missing(request: web.Request) -> web.Response:
    return web.json_response({"message": "no such file"}, status=404)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/bytes", _bytes)
    app.router.add_get("/lying-range", _lying_range)
    app.router.add_get("/chunked", _chunked)
    app.router.add_get("/cut", _cut)
    app.router.add_get("/missing", _missing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_counts_a_whole_body_and_a_range_on_one_kept_alive_connection(base_url: str) -> None:
    raw = RawClient(base_url, 1)
    try:
        assert await raw.get("/bytes", [], Expect(200, len(BODY))) == len(BODY)
        rng = [("Range", "bytes=100-1123")]
        assert await raw.get("/bytes", rng, Expect(206, 1024, (100, 1123, len(BODY)))) == 1024
        assert len(raw._idle) == 1  # the same connection, kept
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("path", "headers", "expect", "message"),
    [
        ("/missing", [], Expect(200, 10), 'HTTP 404, expected 200: {"message": "no such file"}'),
        ("/bytes", [], Expect(200, 10), f"Content-Length {len(BODY)}, expected 10"),
        ("/bytes", [], Expect(206, len(BODY), (0, 9, None)), "HTTP 200, expected 206"),
        ("/lying-range", [], Expect(206, 10, (0, 9, None)), "Content-Range bytes 5-14/99"),
        ("/chunked", [], Expect(200, 100), "unexpected Transfer-Encoding b'chunked'"),
        ("/cut", [], Expect(200, len(BODY)), "before the response ended"),
    ],
)
async def test_anything_unexpected_fails_loudly(
    base_url: str, path: str, headers: list[tuple[str, str]], expect: Expect, message: str
) -> None:
    raw = RawClient(base_url, 1)
    try:
        with pytest.raises(WorkloadError) as caught:
            await asyncio.wait_for(raw.get(path, headers, expect), 10)
        assert message in str(caught.value)
        assert not raw._idle  # a connection that failed is never reused
    finally:
        raw.close()


async def test_download_checks_the_size(base_url: str) -> None:
    assert await download(f"{base_url}/bytes", [], len(BODY)) == len(BODY)
    with pytest.raises(WorkloadError, match="expected 5"):
        await download(f"{base_url}/bytes", [], 5)
