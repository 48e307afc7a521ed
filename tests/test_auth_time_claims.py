"""Time claims are NumericDates (RFC 7519 2): a string or a boolean is refused, not
coerced.  PyJWT runs int() on them, so exp "9999999999" passed as a valid expiry."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.helpers import SECRET, Api, bearer, error_of


def signed(claims: dict[str, object]) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("kind", ["string", "bool"])
async def test_time_claims_must_be_numbers(api: Api, claim: str, kind: str) -> None:
    now = int(time.time())
    good: dict[str, object] = {"exp": now + 600, "nbf": now - 60, "iat": now - 60}
    value: object = str(good[claim]) if kind == "string" else True
    tok = signed({"sub": "alice", "companies": ["acme"], **good, claim: value})
    resp = await api.client.post(api.files(), params={"filename": "x"}, headers=bearer(tok))
    status, message = await error_of(resp)
    assert status == 401, message
    if (claim, kind) != ("exp", "bool"):  # PyJWT reads True as 1: "expired" comes first
        assert message == f"the token's '{claim}' claim must be a number"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_numeric_time_claims_still_pass(api: Api) -> None:
    now = int(time.time())
    tok = signed(
        {"sub": "alice", "companies": ["acme"], "exp": now + 600.5, "nbf": now - 1, "iat": now}
    )
    resp = await api.client.post(api.files(), params={"filename": "x"}, headers=bearer(tok))
    assert resp.status == 200, await resp.text()
