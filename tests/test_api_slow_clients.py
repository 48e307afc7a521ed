"""Slow and idle clients, with real sockets against the real server process.

Connections that send nothing or trickle their head are closed at the head deadline, an idle
keep-alive connection at the keep-alive timeout; a body slower than the minimum rate is answered
408 (envelope, connection closed) and its chunk stored nowhere; one caller cannot take every
upload slot; and other clients' uploads succeed while all of that is being shed, after which the
server's descriptors are back near their baseline.  The limits are passed small through the
environment, so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import PREFIX, bearer, token
from tests.raw_clients import (
    DRIP,
    DRIPS,
    body_head,
    client_sockets,
    descriptors,
    quiet_descriptors,
    read_response,
    settle_descriptors,
    trickle,
)
from tests.server_proc import ServerProcess, start_server

BLOBSTORE = Path(sys.executable).parent / "blobstore"
FILES = f"{PREFIX}/companies/acme/files"

# Seconds instead of the defaults' tens of seconds.  The body idle timeout keeps its default
# (60 s): only the rate rule can shed a client that trickles.
LIMITS = {
    "FILESVC_HEAD_TIMEOUT": "1",
    "FILESVC_KEEPALIVE_TIMEOUT": "4",
    "FILESVC_BODY_MIN_RATE": "1024",
    "FILESVC_BODY_RATE_WINDOW": "1",
    "FILESVC_BODY_RATE_GRACE": "0.5",
    "FILESVC_MAX_UPLOADS_PER_CALLER": "4",
    "FILESVC_MAX_CONCURRENT_UPLOADS": "16",
    "FILESVC_THUMB_WORKERS": "1",
}
# Descriptors the server may gain without any client: each of its SQLite readers opens the WAL
# file on its first use.  Client sockets are counted apart, and must all be gone.
FD_SLACK = 4
TOO_SLOW = {
    "statusCode": 408,
    "error": "Request Timeout",
    "message": "the upload arrived slower than 1024 bytes a second; send it again over a faster"
    " connection",
}


Serve = Callable[..., ServerProcess]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Starts ``filesvc serve`` with LIMITS and the given overrides; stops it after the test."""
    started: list[ServerProcess] = []

    def start(**overrides: str) -> ServerProcess:
        server = start_server(tmp_path / "data", env={**LIMITS, **overrides})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def test_connections_that_send_nothing_or_trickle_their_head_are_closed(
    serve: Serve,
) -> None:
    server = serve()
    baseline = await quiet_descriptors(server)

    async def polite_slow_head() -> int:
        """A head in three pieces, all within the deadline: served."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for piece in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.2)
            return (await read_response(reader))[0]
        finally:
            writer.close()

    idle = [trickle(server.port, b"") for _ in range(20)]
    heads = [
        trickle(server.port, b"GET /health HTTP/1.1\r\n", b"X-Slow: " + b"a" * 100)
        for _ in range(20)
    ]
    gathered = asyncio.gather(*idle, *heads)
    polite = asyncio.ensure_future(polite_slow_head())
    await asyncio.sleep(0.5)
    during = descriptors(server)
    outcomes = await gathered
    after = await settle_descriptors(server, baseline + FD_SLACK)

    assert await polite == 200
    assert client_sockets(server) == 0
    assert during >= baseline + 40
    for outcome in outcomes:
        # Closed, with no answer, well before the DRIPS bound of the trickle.
        assert outcome.closed and outcome.response == b""
        assert outcome.ended - outcome.started < DRIP * DRIPS / 2
    assert after <= baseline + FD_SLACK, (baseline, during, after)


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    serve: Serve,
) -> None:
    server = serve(FILESVC_KEEPALIVE_TIMEOUT="3")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(request)
        assert (await read_response(reader))[0] == 200
        # Idle longer than the head deadline: waiting between requests is not a late head.
        await asyncio.sleep(1.6)
        writer.write(request)
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def create_two_chunk_file(session: aiohttp.ClientSession, base: str, tok: str) -> str:
    """A file of two chunks whose first chunk is stored; returns its id."""
    async with session.post(
        base + FILES, params={"filename": "f.bin", "total_chunks": "2"}, headers=bearer(tok)
    ) as resp:
        assert resp.status == 200, await resp.text()
        fid: str = (await resp.json())["resource"]["id"]
    async with session.post(
        f"{base}{FILES}/{fid}",
        params={"chunk_number": "1", "total_chunks": "2"},
        data=b"first chunk",
        headers={**bearer(tok), "Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    return fid


async def test_a_body_slower_than_the_minimum_rate_gets_408_and_its_chunk_is_discarded(
    serve: Serve,
) -> None:
    server = serve(FILESVC_BODY_RATE_WINDOW="2")  # room for a loaded machine's hiccups
    slow, fair = token(user="mallory"), token(user="bob")
    async with aiohttp.ClientSession() as session:
        fids = [await create_two_chunk_file(session, server.url, slow) for _ in range(4)]
        tricklers = [
            trickle(
                server.port,
                body_head(
                    f"{FILES}/{fid}?chunk_number=2&total_chunks=2", slow, multipart=i % 2 == 1
                ),
                b"x",
            )
            for i, fid in enumerate(fids)
        ]

        async def steady() -> int:
            """120 KiB at 40 KiB/s, past the grace and a window: above the rate, so served."""

            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(30):
                    await asyncio.sleep(0.1)
                    yield b"s" * 4096

            async with session.post(
                server.url + FILES,
                params={"filename": "steady.bin"},
                data=pieces(),
                headers={**bearer(fair), "Content-Type": "application/octet-stream"},
            ) as resp:
                return resp.status

        async def slow_start() -> int:
            """Silent for most of the grace period, then fast: served."""

            async def pieces() -> AsyncIterator[bytes]:
                await asyncio.sleep(0.4)
                yield b"q" * 200_000

            async with session.post(
                server.url + FILES,
                params={"filename": "late.bin"},
                data=pieces(),
                headers={**bearer(fair), "Content-Type": "application/octet-stream"},
            ) as resp:
                return resp.status

        fair_uploads = asyncio.gather(steady(), slow_start())
        outcomes = await asyncio.gather(*tricklers)
        assert list(await fair_uploads) == [200, 200]
        for outcome in outcomes:
            head, _, body = outcome.response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), outcome.response[:80]
            assert b"\r\nConnection: close" in head
            assert json.loads(body) == TOO_SLOW
            assert outcome.closed
        for fid in fids:
            async with session.get(f"{server.url}{FILES}/{fid}", headers=bearer(slow)) as resp:
                upload = (await resp.json())["resource"]["upload_data"]
            assert (upload["uploaded_chunks"], upload["uploaded_size"], upload["complete"]) == (
                1,
                len(b"first chunk"),
                False,
            )
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "Unhandled exception" not in log
    assert list((server.data_dir / "blobs" / "tmp").iterdir()) == []
    fsck = subprocess.run(
        [str(BLOBSTORE), "fsck", "--data-dir", str(server.data_dir), "--full", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


async def post_raw(
    session: aiohttp.ClientSession, base: str, tok: str, data: bytes = b"payload"
) -> aiohttp.ClientResponse:
    async with session.post(
        base + FILES,
        params={"filename": "x.bin"},
        data=data,
        headers={**bearer(tok), "Content-Type": "application/octet-stream"},
    ) as resp:
        await resp.read()
        return resp


async def test_one_caller_cannot_take_every_upload_slot(serve: Serve) -> None:
    # No rate rule here: the held uploads below just wait, as large uploads in progress do.
    server = serve(FILESVC_BODY_MIN_RATE="0")
    alice = token(user="alice")
    release = asyncio.Event()
    holding: list[asyncio.Event] = []

    async def held(session: aiohttp.ClientSession) -> int:
        started = asyncio.Event()
        holding.append(started)

        async def pieces() -> AsyncIterator[bytes]:
            yield b"first half "
            started.set()
            await release.wait()
            yield b"second half"

        async with session.post(
            server.url + FILES,
            params={"filename": "held.bin"},
            data=pieces(),
            headers={**bearer(alice), "Content-Type": "application/octet-stream"},
        ) as resp:
            return resp.status

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        uploads = [asyncio.ensure_future(held(session)) for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in holding)), 5)
        await asyncio.sleep(0.2)  # the server is reading all four bodies by now

        refused = await post_raw(session, server.url, alice)
        body = json.loads(await refused.text())
        assert (refused.status, refused.headers.get("Retry-After")) == (429, "1")
        assert body == {
            "statusCode": 429,
            "error": "Too Many Requests",
            "message": "you already have 4 uploads in progress, the most allowed at once;"
            " retry when one of them has finished",
        }
        # Other callers: another user, an application, the same user in another company.
        assert (await post_raw(session, server.url, token(user="bob"))).status == 200
        assert (await post_raw(session, server.url, token(app="sync"))).status == 200
        async with session.post(
            f"{server.url}{PREFIX}/companies/globex/files",
            params={"filename": "x.bin"},
            data=b"payload",
            headers={**bearer(token("globex")), "Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 200
        release.set()
        assert await asyncio.gather(*uploads) == [200] * 4
        assert (await post_raw(session, server.url, alice)).status == 200


async def test_other_clients_upload_while_slow_clients_are_shed(serve: Serve) -> None:
    """The attack of the issue, scaled down: 30 idle connections, 30 header tricklers and 30
    body tricklers from three callers; meanwhile another caller uploads 12 files."""
    server = serve(FILESVC_BODY_RATE_GRACE="2")
    port = server.port
    carol = token(user="carol")
    async with aiohttp.ClientSession() as session:  # warm up: database, store, thumbnailer
        assert (await post_raw(session, server.url, carol)).status == 200
    baseline = await quiet_descriptors(server)
    async with aiohttp.ClientSession() as session:
        attackers = [token(user=f"mallory{i}") for i in range(3)]
        idle = [asyncio.ensure_future(trickle(port, b"")) for _ in range(30)]
        heads = [
            asyncio.ensure_future(trickle(port, b"GET /health HTTP/1.1\r\n", b"X-Slow: aaaaaaaa"))
            for _ in range(30)
        ]
        bodies = [
            asyncio.ensure_future(
                trickle(port, body_head(FILES + "?filename=s", attackers[i % 3], multipart=False))
            )
            for i in range(30)
        ]
        await asyncio.sleep(0.3)  # every attacker is connected, the admitted ones hold slots
        during = descriptors(server)

        statuses = []
        for _ in range(4):
            batch = [post_raw(session, server.url, carol, b"w" * 65536) for _ in range(3)]
            statuses += [resp.status for resp in await asyncio.gather(*batch)]
        good_done = time.monotonic()
        holding = sum(not task.done() for task in bodies)

        body_outcomes = await asyncio.gather(*bodies)
        others = await asyncio.gather(*idle, *heads)
    after = await settle_descriptors(server, baseline + FD_SLACK)
    sockets_after = client_sockets(server)

    status_of = [o.response[9:12].decode() for o in body_outcomes]
    figures = {
        "descriptors": {"baseline": baseline, "during": during, "after": after},
        "client sockets after": sockets_after,
        "idle and head tricklers closed without an answer": sum(
            o.closed and o.response == b"" for o in others
        ),
        "body tricklers answered 408": status_of.count("408"),
        "body tricklers refused 429": status_of.count("429"),
        "body tricklers still holding slots when the other uploads were done": holding,
        "other caller's upload statuses": statuses,
    }
    print("slow-client figures:", json.dumps(figures))
    assert statuses == [200] * 12
    # Those uploads were served while the admitted tricklers held their slots.
    assert holding == 12
    assert status_of.count("408") == 12 and status_of.count("429") == 18
    assert good_done < min(o.ended for o in body_outcomes if o.response[9:12] == b"408")
    assert all(o.closed and o.response == b"" for o in others)
    assert all(o.closed for o in body_outcomes if o.response[9:12] == b"408")
    assert during >= baseline + 60 and after <= baseline + FD_SLACK and sockets_after == 0, figures
