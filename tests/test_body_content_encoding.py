"""Request bodies whose encoding the server cannot honour are a 4xx, never a 500, and
never stored still encoded."""

from __future__ import annotations

import gzip

import pytest

from tests.helpers import Api, error_of

OCTETS = {"Content-Type": "application/octet-stream"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=XyZ"}


def one_part(data: bytes, *extra_headers: bytes) -> bytes:
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    return head + b"".join(h + b"\r\n" for h in extra_headers) + b"\r\n" + data + b"\r\n--XyZ--\r\n"


@pytest.mark.parametrize("ctype", [OCTETS, MULTIPART])
async def test_body_that_is_not_the_gzip_it_claims_is_400(api: Api, ctype: dict[str, str]) -> None:
    resp = await api.client.post(
        api.files(),
        data=b"this is not gzip",
        headers=api.headers(**ctype, **{"Content-Encoding": "gzip"}),
    )
    assert await error_of(resp) == (
        400,
        "the request body could not be decoded as its Content-Encoding says",
    )


async def test_gzip_body_is_stored_decoded(api: Api) -> None:
    data = b"hello " * 1000
    resp = await api.client.post(
        api.files(),
        data=gzip.compress(data),
        params={"filename": "a.txt", "total_size": str(len(data))},
        headers=api.headers(**OCTETS, **{"Content-Encoding": "gzip"}),
    )
    assert resp.status == 200, await resp.text()
    assert await api.content((await resp.json())["resource"]["id"]) == data


@pytest.mark.parametrize("encoding", ["x-bogus", "gzip, gzip", "compress", "x-gzip"])
async def test_unknown_content_encoding_is_415_not_stored_encoded(api: Api, encoding: str) -> None:
    resp = await api.client.post(
        api.files(), data=b"hello", headers=api.headers(**OCTETS, **{"Content-Encoding": encoding})
    )
    assert await error_of(resp) == (
        415,
        f"Content-Encoding {encoding!r} is not supported: send the bytes as they are, or gzip",
    )


@pytest.mark.parametrize("cte", [b"base64", b"quoted-printable", b"x-uuencode"])
async def test_part_transfer_encoding_is_415_not_stored_encoded(api: Api, cte: bytes) -> None:
    body = one_part(b"aGVsbG8=", b"Content-Transfer-Encoding: " + cte)
    resp = await api.client.post(api.files(), data=body, headers=api.headers(**MULTIPART))
    assert await error_of(resp) == (
        415,
        f"the file part's Content-Transfer-Encoding {cte.decode()!r} is not supported:"
        " send its bytes as binary",
    )


@pytest.mark.parametrize("cte", [b"binary", b"8bit", b"7BIT"])
async def test_identity_transfer_encodings_are_fine(api: Api, cte: bytes) -> None:
    body = one_part(b"hello", b"Content-Transfer-Encoding: " + cte)
    resp = await api.client.post(api.files(), data=body, headers=api.headers(**MULTIPART))
    assert resp.status == 200, await resp.text()
    assert await api.content((await resp.json())["resource"]["id"]) == b"hello"
