"""A request body that stops making progress must not hold a handler forever.

aiohttp's parser, meeting a chunk-size line that is not hex after the handler started reading,
queues a 400 for "the next message" but never fails the current payload: the handler waits on
the body for ever, holding its staging file, and the client (which sent everything) waits for
an answer that never comes.  A plain slow-loris (a client that just stops) is the same hang.
The body reader's idle watchdog (``body_idle_timeout``, 1 s in tests) answers both with 408."""

from __future__ import annotations

import asyncio

from tests.helpers import PREFIX, Api


async def test_chunk_framing_broken_mid_body_is_answered(api: Api) -> None:
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"POST {PREFIX}/companies/acme/files HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {api.token}\r\nContent-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        writer.write(head + b"5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the handler is streaming the body by now
        writer.write(b"ZZ\r\nabc\r\n0\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 4"), status


async def test_a_client_that_stops_sending_gets_408_and_nothing_is_stored(api: Api) -> None:
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"POST {PREFIX}/companies/acme/files?filename=stall.bin HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {api.token}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    try:
        writer.write(head + b"x" * 1000)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:40]
    assert b"no bytes of the upload arrived for too long; send it again" in response
    resp = await api.client.get(
        f"{PREFIX}/companies/acme/files/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers=api.headers()
    )
    assert resp.status == 404
