"""Expect: 100-continue.  A client that asks before sending a large body (curl does
for anything over 1 MiB) must hear the refusal instead of "100 Continue" when the headers alone
decide it: a bad token, another company, a body over the limit."""

from __future__ import annotations

import asyncio
import json

from tests.helpers import PREFIX, Api, token


async def exchange(api: Api, head: str, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send the head, read the first answer; if it is 100 Continue, send the body and read the
    final answer too."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        if first.startswith(b"HTTP/1.1 100"):
            writer.write(body)
            await writer.drain()
            final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            return first, final + await read_body(reader, final)
        # A refusal: the server must not wait for a body it never invited (it may linger to
        # let the client read the answer, so read by Content-Length, not to EOF).
        assert b"\r\nConnection: close\r\n" in first, first
        return first, await read_body(reader, first)
    finally:
        writer.close()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return await asyncio.wait_for(reader.readexactly(int(value)), 2)
    raise AssertionError(head)


def head(auth: str | None, *, company: str = "acme", length: int = 5) -> str:
    lines = [
        f"POST {PREFIX}/companies/{company}/files?filename=a.txt HTTP/1.1",
        "Host: x",
        "Content-Type: application/octet-stream",
        f"Content-Length: {length}",
        "Expect: 100-continue",
        "Connection: close",
    ]
    if auth is not None:
        lines.append(f"Authorization: Bearer {auth}")
    return "\r\n".join(lines) + "\r\n\r\n"


def envelope(answer: bytes) -> dict[str, object]:
    return dict(json.loads(answer.partition(b"\r\n\r\n")[2]))


async def test_missing_token_is_refused_before_continue(api: Api) -> None:
    first, rest = await exchange(api, head(None))
    assert first.startswith(b"HTTP/1.1 401 Unauthorized"), first
    assert envelope(first + rest)["message"] == (
        "authentication required: send 'Authorization: Bearer <token>'"
    )


async def test_other_company_is_refused_before_continue(api: Api) -> None:
    first, _ = await exchange(api, head(token("other")))
    assert first.startswith(b"HTTP/1.1 403 Forbidden"), first


async def test_body_over_the_limit_is_refused_before_continue(api: Api) -> None:
    first, _ = await exchange(api, head(api.token, length=1 << 40))
    assert first.startswith(b"HTTP/1.1 413 Request Entity Too Large"), first


async def test_good_request_gets_continue_then_stores_the_body(api: Api) -> None:
    first, rest = await exchange(api, head(api.token), b"hello")
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK"), rest
    fid = json.loads(rest.partition(b"\r\n\r\n")[2])["resource"]["id"]
    assert await api.content(fid) == b"hello"
