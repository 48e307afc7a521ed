"""What aiohttp's own request parser refuses, on the real server over raw sockets: the JSON
envelope, the connection closed, and never the request line or the ``?token=`` echoed back."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PREFIX, token
from tests.server_proc import ServerProcess, start_server

TOKEN = token()
FILES = f"{PREFIX}/companies/acme/files"
LONG = "A" * 9000


@pytest.fixture(scope="module", params=["C parser", "Python parser"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The server with aiohttp's C parser (the default) and with its pure-Python fallback (what
    runs where the extension is not built): they raise different exceptions for one fault."""
    data: Path = tmp_path_factory.mktemp("parser") / "data"
    env = {"FILESVC_DISK_RESERVE_BYTES": "0"}
    if request.param == "Python parser":
        env["AIOHTTP_NO_EXTENSIONS"] = "1"
    proc = start_server(data, env=env)
    yield proc
    proc.stop()


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def head(line: str, *headers: str, body: str = "") -> bytes:
    return ("\r\n".join([line, "Host: localhost", *headers, "", ""]) + body).encode()


UPLOAD = (f"Authorization: Bearer {TOKEN}", "Content-Type: application/octet-stream")
CASES: dict[str, tuple[bytes, int, str]] = {
    "request line over 8 KiB": (
        head(f"GET {FILES}?token={TOKEN}&pad={LONG} HTTP/1.1"),
        400,
        "the request line or a header is longer than the server accepts (8 KiB)",
    ),
    "header over 8 KiB": (
        head(f"GET {FILES}?token={TOKEN} HTTP/1.1", f"X-Pad: {LONG}"),
        400,
        "the request line or a header is longer than the server accepts (8 KiB)",
    ),
    "Content-Length not a number": (
        head(f"POST {FILES}?token={TOKEN} HTTP/1.1", "Content-Length: 12abc"),
        400,
        "the Content-Length header is not valid",
    ),
    "negative Content-Length": (
        head(f"POST {FILES}?token={TOKEN} HTTP/1.1", "Content-Length: -5"),
        400,
        "the Content-Length header is not valid",
    ),
    "Content-Length with Transfer-Encoding": (
        head(
            f"POST {FILES}?token={TOKEN} HTTP/1.1",
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            body="0\r\n\r\n",
        ),
        400,
        "Content-Length and Transfer-Encoding must not be sent together",
    ),
    "raw 0xFF in the path": (
        f"GET {FILES}/".encode()
        + b"\xff"
        + f"?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        400,
        "the request target is not a valid URL",
    ),
    "Content-Encoding br": (
        head(f"POST {FILES} HTTP/1.1", *UPLOAD, "Content-Encoding: br", "Content-Length: 3")
        + b"abc",
        415,
        "this Content-Encoding is not supported: send the bytes as they are, or gzip",
    ),
    "Content-Encoding zstd": (
        head(f"POST {FILES} HTTP/1.1", *UPLOAD, "Content-Encoding: zstd", "Content-Length: 3")
        + b"abc",
        415,
        "this Content-Encoding is not supported: send the bytes as they are, or gzip",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parser_errors_answer_the_envelope_without_echo(server: ServerProcess, case: str) -> None:
    request, status, message = CASES[case]
    raw = exchange(server.port, request)
    header_block, _, body = raw.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    assert lines[0].split(" ", 2)[1] == str(status), raw[:300]
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    assert headers["content-type"].startswith("application/json")
    envelope = json.loads(body)
    assert envelope["statusCode"] == status and envelope["message"] == message
    assert set(envelope) == {"statusCode", "error", "message"}
    assert TOKEN.encode() not in raw and b"token" not in raw
    assert b"AAAA" not in raw and FILES.encode() not in raw
    # Nor is it written to the server's log.
    assert TOKEN not in server.log.read_text(errors="replace")


def test_ordinary_errors_still_answer_from_the_routes(server: ServerProcess) -> None:
    raw = exchange(server.port, head(f"GET {FILES}/nope HTTP/1.1", "Connection: close"))
    assert raw.startswith(b"HTTP/1.1 401")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["statusCode"] == 401
