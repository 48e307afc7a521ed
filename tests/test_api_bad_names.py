"""Bytes that are not text, in file names and token claims: refused with the envelope, never a
500 at the database insert and never stored as U+FFFD or as no name at all."""

from __future__ import annotations

import time

import jwt
import pytest
from yarl import URL

from tests.helpers import SECRET, Api, error_of

BOUNDARY = "B0undary"


def form(disposition: bytes, data: bytes = b"hello") -> bytes:
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; '
        + disposition
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

BAD_FILENAMES = {
    "raw invalid UTF-8": (
        b'filename="\xff\xfe.txt"',
        "the file part's filename is not valid UTF-8",
    ),
    "raw encoded surrogate": (
        b'filename="\xed\xa0\x80.txt"',
        "the file part's filename is not valid UTF-8",
    ),
    "filename* invalid UTF-8": (
        b"filename*=UTF-8''%ff%fe.txt",
        "the file part's filename* is not valid: send charset''percent-encoded UTF-8",
    ),
    "filename* encoded surrogate": (
        b"filename*=UTF-8''%ED%A0%80.txt",
        "the file part's filename* is not valid: send charset''percent-encoded UTF-8",
    ),
    "filename* unknown charset": (
        b"filename*=no-such-charset''abc.txt",
        "the file part's filename* is not valid: send charset''percent-encoded UTF-8",
    ),
}


@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionParam")
@pytest.mark.parametrize("case", sorted(BAD_FILENAMES))
async def test_multipart_filename_that_is_not_text_is_400(api: Api, case: str) -> None:
    disposition, message = BAD_FILENAMES[case]
    resp = await api.client.post(
        api.files(), data=form(disposition), headers=api.headers(**HEADERS)
    )
    assert await error_of(resp) == (400, message)
    pending = await api.create({"total_chunks": "2"})
    resp = await api.client.post(
        f"{api.files()}/{pending['id']}",
        data=form(disposition),
        params={"chunk_number": "1"},
        headers=api.headers(**HEADERS),
    )
    assert await error_of(resp) == (400, message)


async def test_valid_extended_filename_is_decoded(api: Api) -> None:
    resp = await api.client.post(
        api.files(), data=form(b"filename*=UTF-8''caf%C3%A9.txt"), headers=api.headers(**HEADERS)
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["resource"]["metadata"]["name"] == "café.txt"


@pytest.mark.parametrize(
    "query",
    ["filename=%ff%fe.txt", "filename=%ED%A0%80.txt", "resumableFilename=a%C3", "type=%ff/x"],
)
async def test_query_parameter_that_is_not_utf8_is_400(api: Api, query: str) -> None:
    name = query.split("=", 1)[0]
    url = URL(str(api.client.make_url(api.files())) + "?" + query, encoded=True)
    resp = await api.client.session.post(url, headers=api.headers())
    assert await error_of(resp) == (400, f"query parameter '{name}' is not valid UTF-8")


async def test_replacement_character_sent_as_such_is_a_name(api: Api) -> None:
    url = URL(str(api.client.make_url(api.files())) + "?filename=%EF%BF%BD.txt", encoded=True)
    resp = await api.client.session.post(url, headers=api.headers())
    assert resp.status == 200
    assert (await resp.json())["resource"]["metadata"]["name"] == "\ufffd.txt"


def _token(**claims: object) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": "alice", "companies": ["acme"], "iat": now, "exp": now + 60, **claims},
        SECRET,
        algorithm="HS256",
    )


@pytest.mark.parametrize("claim", ["sub", "application_id"])
async def test_token_claim_with_lone_surrogate_is_401(api: Api, claim: str) -> None:
    tok = _token(**{claim: "bot\ud800"})
    resp = await api.client.post(api.files(), headers=api.headers(tok))
    assert await error_of(resp) == (401, f"the token's '{claim}' claim is not valid Unicode text")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await api.client.post(
        api.files(), data=form(b'filename="a.txt"'), headers=api.headers(tok, **HEADERS)
    )
    assert (await error_of(resp))[0] == 401


async def test_company_claim_with_lone_surrogate_is_401(api: Api) -> None:
    resp = await api.client.get(
        f"{api.files()}/00000000-0000-0000-0000-000000000000",
        headers=api.headers(_token(companies=["acme", "\udcff"])),
    )
    assert await error_of(resp) == (401, "the token's 'companies' claim is not valid Unicode text")
