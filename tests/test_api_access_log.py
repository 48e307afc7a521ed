"""The access log: one structured line per request, a request id, never a token."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re

import pytest

from filesvc.accesslog import format_text
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import Api

PREFIX = "/internal/services/files/v1"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines written, in order (the lines of one turn of the event loop share a record)."""
    records = [r.getMessage() for r in caplog.records if r.name == "filesvc.access"]
    return [line for text in records for line in text.split("\n")]


async def wait_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The line is written once the handler is done, which may be just after the client has
    read the last byte."""
    for _ in range(200):
        if len(lines(caplog)) >= count:
            break
        await asyncio.sleep(0.01)
    return lines(caplog)


def fields(line: str) -> dict[str, str]:
    return {
        k: json.loads(v) if v.startswith('"') else v
        for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)
    }


async def test_one_key_value_line_per_request_with_its_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "filesvc.access")
    res = await api.upload(b"0123456789")
    resp = await api.client.get(f"{api.files()}/{res['id']}/download", params={"token": api.token})
    assert await resp.read() == b"0123456789"
    upload_line, download_line = await wait_lines(caplog, 2)
    up, down = fields(upload_line), fields(download_line)
    assert list(down) == [
        "time",
        "request_id",
        "method",
        "route",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "company",
        "file_id",
    ]
    assert down["request_id"] == resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", down["request_id"])
    assert up["request_id"] != down["request_id"]
    assert (down["method"], down["status"], down["bytes_in"], down["bytes_out"]) == (
        "GET",
        "200",
        "0",
        "10",
    )
    assert down["route"] == PREFIX + "/companies/{company_id}/files/{file_id}/download"
    assert (down["company"], down["file_id"]) == ("acme", res["id"])
    assert (up["method"], up["status"], up["file_id"]) == ("POST", "200", res["id"])
    assert int(up["bytes_in"]) > 10 and int(up["bytes_out"]) > 100
    assert float(down["duration_ms"]) >= 0
    for line in (upload_line, download_line):
        assert api.token not in line and api.token.split(".")[2] not in line


async def test_json_lines_and_errors_carry_an_id_too(
    make_api: AppFactory, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "filesvc.access")
    api = await make_api(settings_=dataclasses.replace(settings, access_log="json"))
    resp = await api.client.get(f"{api.files()}/not-a-uuid", headers=api.headers())
    assert resp.status == 400
    [line] = await wait_lines(caplog, 1)
    record = json.loads(line)
    assert record["request_id"] == resp.headers["X-Request-Id"]
    assert record["status"] == 400 and record["file_id"] is None and record["company"] == "acme"
    missing = await api.client.get("/nowhere")
    assert missing.status == 404 and "X-Request-Id" in missing.headers
    assert json.loads((await wait_lines(caplog, 2))[-1])["route"] == "unmatched"


async def test_probes_are_not_logged_unless_asked(
    make_api: AppFactory, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "filesvc.access")
    api = await make_api()
    for path in ("/healthz", "/readyz", "/health", "/metrics"):
        assert (await api.client.get(path)).status == 200
    assert lines(caplog) == []
    chatty = await make_api(settings_=dataclasses.replace(settings, access_log_probes=True))
    assert (await chatty.client.get("/healthz")).status == 200
    assert len(await wait_lines(caplog, 1)) == 1
    off = await make_api(settings_=dataclasses.replace(settings, access_log="off"))
    await off.upload(b"x")
    assert len(lines(caplog)) == 1


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("proxy-id-0123456789", True),
        ("short", False),
        ("x" * 65, False),
        ("id with spaces 12345", False),
        ('quote"id"0123456789', False),
        ("\u00e9t\u00e9-0123456789", False),
    ],
)
async def test_incoming_request_id_is_kept_only_when_plain(
    api: Api, caplog: pytest.LogCaptureFixture, incoming: str, kept: bool
) -> None:
    caplog.set_level(logging.INFO, "filesvc.access")
    resp = await api.client.get(
        f"{api.files()}/00000000-0000-0000-0000-000000000000",
        headers=api.headers(**{"X-Request-Id": incoming.encode().decode("latin-1")}),
    )
    assert resp.status == 404
    assert (resp.headers["X-Request-Id"] == incoming) is kept
    assert fields((await wait_lines(caplog, 1))[-1])["request_id"] == resp.headers["X-Request-Id"]


async def test_hostile_path_values_never_reach_the_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "filesvc.access")
    resp = await api.client.get(
        f"{PREFIX}/companies/evil%20company%0Aforged=1/files/x%22y", headers=api.headers()
    )
    assert resp.status in (400, 403)
    [line] = await wait_lines(caplog, 1)
    assert "\n" not in line and "forged" not in line and "evil" not in line
    assert fields(line)["company"] == "-" and fields(line)["file_id"] == "-"


def test_text_values_are_quoted_when_not_plain() -> None:
    assert format_text({"a": "plain", "b": "two words", "c": None, "d": 'q"x'}) == (
        'a=plain b="two words" c=- d="q\\"x"'
    )
    # A line break never splits a line, not even at the end of a value.
    assert (
        format_text({"e": "end\n", "f": "k=v", "g": 3, "h": 1.5}) == 'e="end\\n" f="k=v" g=3 h=1.5'
    )


async def test_requests_answered_together_each_get_their_own_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "filesvc.access")
    await asyncio.gather(*(api.upload(b"together %d" % i) for i in range(8)))
    written = await wait_lines(caplog, 8)
    assert len(written) == 8
    assert len({fields(line)["request_id"] for line in written}) == 8
    assert all(fields(line)["status"] == "200" for line in written)
