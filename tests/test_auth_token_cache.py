"""Verified tokens are remembered by their exact bytes until their expiry, in a bounded LRU:
an expired token is refused even while remembered, a forged one is never taken for a
remembered one, and the cache never grows past its bound."""

from __future__ import annotations

import time

import jwt
import pytest

from filesvc import auth
from filesvc.auth import VerifiedTokens, mint
from filesvc.errors import Unauthorized
from tests.helpers import SECRET


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_remembered_token_is_verified_again_once_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = auth.verify_until

    def counting(token: str, secret: str) -> tuple[auth.Caller, float]:
        calls.append(token)
        return real(token, secret)

    monkeypatch.setattr(auth, "verify_until", counting)
    clock = Clock()
    tokens = VerifiedTokens(SECRET, clock=clock)
    tok = mint(SECRET, company="acme", user="alice", ttl=60)
    exp = jwt.decode(tok, SECRET, algorithms=["HS256"])["exp"]
    assert tokens.verify(tok).user_id == "alice"
    clock.now = exp - 1
    assert tokens.verify(tok).user_id == "alice"
    assert len(calls) == 1  # the second came from the cache
    clock.now = exp  # PyJWT's bound: expired once now >= exp
    monkeypatch.setattr(auth, "verify_until", _expired)
    with pytest.raises(Unauthorized) as exc:
        tokens.verify(tok)
    assert exc.value.message == "the token has expired"
    assert len(tokens) == 0


def _expired(token: str, secret: str) -> tuple[auth.Caller, float]:
    """What PyJWT answers for the token at the clock's time (the real clock is an hour behind)."""
    raise Unauthorized("the token has expired")


def test_an_expired_token_is_never_remembered() -> None:
    tokens = VerifiedTokens(SECRET)
    expired = jwt.encode(
        {"sub": "alice", "companies": ["acme"], "exp": int(time.time()) - 5}, SECRET, "HS256"
    )
    for _ in range(2):
        with pytest.raises(Unauthorized) as exc:
            tokens.verify(expired)
        assert exc.value.message == "the token has expired"
    assert len(tokens) == 0


def test_a_token_differing_in_one_byte_is_verified_on_its_own() -> None:
    tokens = VerifiedTokens(SECRET)
    tok = mint(SECRET, company="acme", user="alice")
    tokens.verify(tok)
    head, payload, sig = tok.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(Unauthorized) as exc:
        tokens.verify(f"{head}.{payload}.{flipped}")
    assert exc.value.message == "the token's signature is invalid"
    forged = jwt.encode({"sub": "mallory", "companies": ["acme"], "exp": 2**40}, "x" * 32, "HS256")
    with pytest.raises(Unauthorized):
        tokens.verify(forged)
    assert len(tokens) == 1


def test_the_cache_keeps_at_most_its_bound_and_drops_the_least_recent() -> None:
    tokens = VerifiedTokens(SECRET, size=3)
    minted = [mint(SECRET, company="acme", user=f"u{i}") for i in range(4)]
    for tok in minted[:3]:
        tokens.verify(tok)
    tokens.verify(minted[0])  # now the most recent
    tokens.verify(minted[3])  # evicts minted[1]
    assert len(tokens) == 3
    assert minted[1] not in tokens._entries
    assert minted[0] in tokens._entries
