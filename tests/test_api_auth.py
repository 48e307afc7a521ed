"""Authentication, company isolation and overwrite rules."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import jwt
import pytest

from filesvc.auth import mint
from tests.helpers import PREFIX, SECRET, Api, bearer, error_of, multipart, token


def b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def forged(kind: str) -> str:
    now = int(time.time())
    claims = {"sub": "mallory", "companies": ["acme"], "exp": now + 60}
    if kind == "none":
        return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    if kind == "wrong-secret":
        return jwt.encode(claims, "another-secret-0123456789abcdef-0123456789", algorithm="HS256")
    if kind == "expired":
        return jwt.encode({**claims, "exp": now - 10}, SECRET, algorithm="HS256")
    if kind == "no-exp":
        return jwt.encode({"sub": "x", "companies": ["acme"]}, SECRET, algorithm="HS256")
    if kind == "no-sub":
        return jwt.encode({"companies": ["acme"], "exp": now + 60}, SECRET, algorithm="HS256")
    if kind == "hs512":
        return jwt.encode(claims, SECRET * 2, algorithm="HS512")
    if kind == "companies-not-list":
        return jwt.encode({**claims, "companies": "acme"}, SECRET, algorithm="HS256")
    if kind == "garbage":
        return "not.a.jwt"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("none", "the token must be signed with HS256"),
        ("wrong-secret", "the token's signature is invalid"),
        ("expired", "the token has expired"),
        ("no-exp", "the token lacks the 'exp' claim"),
        ("no-sub", "the token lacks the 'sub' claim"),
        ("hs512", "the token must be signed with HS256"),
        ("companies-not-list", "the token's 'companies' claim must be a list of strings"),
        ("garbage", "the token is malformed"),
    ],
)
async def test_bad_tokens_are_401(api: Api, kind: str, message: str) -> None:
    resp = await api.client.post(
        api.files(), params={"filename": "x"}, headers=bearer(forged(kind))
    )
    assert await error_of(resp) == (401, message)
    assert "Bearer" in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer"])
async def test_missing_or_malformed_header_is_401(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await api.client.get(
        f"{api.files()}/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=headers
    )
    status, _ = await error_of(resp)
    assert status == 401


async def test_every_route_requires_a_token(api: Api) -> None:
    res = await api.upload(b"x")
    fid = res["id"]
    base = f"{PREFIX}/companies/acme/files"
    for method, url in [
        ("POST", base),
        ("POST", f"{base}/{fid}"),
        ("GET", f"{base}/{fid}"),
        ("GET", f"{PREFIX}/acme/files/{fid}"),
        ("GET", f"{base}/{fid}/download"),
        ("HEAD", f"{base}/{fid}/download"),
        ("GET", f"{base}/{fid}/thumbnails/0"),
        ("DELETE", f"{base}/{fid}"),
    ]:
        resp = await api.client.request(method, url)
        assert resp.status == 401, (method, url)


async def test_other_company_is_403_and_foreign_file_is_404(api: Api) -> None:
    res = await api.upload(b"acme secret", tok=token("acme"))
    outsider = token("globex")
    resp = await api.client.get(f"{api.files('acme')}/{res['id']}", headers=bearer(outsider))
    assert await error_of(resp) == (403, "your token does not grant access to this company")
    # Same file id asked for under the caller's own company: it does not exist there.
    for method, suffix in [
        ("GET", ""),
        ("GET", "/download"),
        ("DELETE", ""),
        ("GET", "/thumbnails/0"),
    ]:
        resp = await api.client.request(
            method, f"{api.files('globex')}/{res['id']}{suffix}", headers=bearer(outsider)
        )
        assert resp.status == 404, (method, suffix)
    resp = await api.chunk(
        res["id"], b"overwrite!", {}, tok=mint(SECRET, company="globex", app="a"), company="globex"
    )
    assert resp.status == 404
    assert await api.content(res["id"]) == b"acme secret"


async def test_token_query_parameter_only_on_byte_routes(api: Api) -> None:
    res = await api.upload(b"linkable")
    tok = api.token
    url = f"{api.files()}/{res['id']}"
    resp = await api.client.get(f"{url}/download", params={"token": tok})
    assert resp.status == 200 and await resp.read() == b"linkable"
    resp = await api.client.get(url, params={"token": tok})
    assert resp.status == 401
    resp = await api.client.get(f"{url}/download", params={"token": forged("expired")})
    assert await error_of(resp) == (401, "the token has expired")


async def test_user_cannot_overwrite_a_complete_file(api: Api) -> None:
    res = await api.upload(b"original")
    resp = await api.chunk(res["id"], b"mine now", {"chunk_number": "1"})
    assert await error_of(resp) == (
        403,
        "this file is complete: only an application may overwrite it",
    )
    assert await api.content(res["id"]) == b"original"


async def test_application_overwrite_is_atomic(api: Api, app_token: str) -> None:
    old = os.urandom(200_000)
    res = await api.upload(old)
    fid = res["id"]
    new = [os.urandom(100_000) for _ in range(3)]
    for k, part in enumerate(new[:2], 1):
        resp = await api.chunk(
            fid, part, {"chunk_number": str(k), "total_chunks": "3"}, tok=app_token
        )
        assert resp.status == 200, await resp.text()
        # Readers still see the old bytes, whole, while the overwrite is incomplete.
        assert await api.content(fid) == old
    resp = await api.chunk(fid, new[2], {"chunk_number": "3", "total_chunks": "3"}, tok=app_token)
    assert resp.status == 200
    assert await api.content(fid) == b"".join(new)


async def test_readers_never_see_a_mix_during_overwrites(api: Api, app_token: str) -> None:
    versions = [bytes([v]) * 300_000 for v in range(5)]
    res = await api.upload(versions[0])
    fid = res["id"]

    async def overwrite() -> None:
        for v in versions[1:]:
            resp = await api.client.post(
                f"{api.files()}/{fid}", data=multipart(v), headers=bearer(app_token)
            )
            assert resp.status == 200

    async def read() -> None:
        for _ in range(15):
            body = await api.content(fid)
            assert body in versions

    await asyncio.gather(overwrite(), read(), read())
    assert await api.content(fid) == versions[-1]


async def test_two_applications_cannot_feed_one_overwrite(api: Api) -> None:
    res = await api.upload(b"original")
    fid = res["id"]
    first, second = token(app="app-one"), token(app="app-two")
    params = {"total_chunks": "2"}
    assert (await api.chunk(fid, b"A1", {**params, "chunk_number": "1"}, tok=first)).status == 200
    resp = await api.chunk(fid, b"B1", {**params, "chunk_number": "1"}, tok=second)
    assert await error_of(resp) == (
        409,
        "another application is overwriting this file; retry when it is done",
    )
    assert (await api.chunk(fid, b"A2", {**params, "chunk_number": "2"}, tok=first)).status == 200
    assert await api.content(fid) == b"A1A2"
    # Once the first overwrite is swapped in, the second application may start its own.
    assert (await api.chunk(fid, b"B", {"total_chunks": "1"}, tok=second)).status == 200
    assert await api.content(fid) == b"B"
