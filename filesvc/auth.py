"""Bearer tokens: HS256 JWTs verified strictly with PyJWT."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from filesvc.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
# Longest token accepted.  Real tokens are a few hundred bytes; this bounds the work on garbage.
MAX_TOKEN_LENGTH = 4096
# Verified tokens remembered per process: the callers active in the last minutes of a busy
# instance, at a few hundred bytes each (about 2 MiB at most).
TOKEN_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Caller:
    """Who is calling, from the verified token."""

    user_id: str
    companies: frozenset[str]
    application_id: str | None

    def require_company(self, company_id: str) -> None:
        """403 unless the caller belongs to ``company_id``."""
        if company_id not in self.companies:
            raise Forbidden("your token does not grant access to this company")


def bearer_from_header(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header (None when the header is absent)."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def verify(token: str, secret: str) -> Caller:
    """Verify signature, algorithm and expiry; return the caller.  Any defect is a 401."""
    return verify_until(token, secret)[0]


def verify_until(token: str, secret: str) -> tuple[Caller, float]:
    """:func:`verify`, also returning the token's expiry (seconds since the epoch)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the token is too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthorized("the token is malformed") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(f"the token must be signed with {ALGORITHM}")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"the token lacks the '{exc.claim}' claim") from None
    except jwt.PyJWTError:
        raise Unauthorized("the token is invalid") from None
    caller = _caller(claims)
    exp = claims["exp"]  # required above, and a number (_caller checked it)
    assert isinstance(exp, int | float)
    return caller, float(exp)


class VerifiedTokens:
    """A bounded LRU of verified tokens, keyed by their exact text, each valid until its expiry.

    Verifying an HS256 token costs base64, JSON and an HMAC on every request, while clients send
    the same token for an hour.  Only tokens that verified are kept, so a forged or altered token
    (other bytes) always goes through PyJWT; an entry is dropped, and the token verified again
    (and refused as expired), once its ``exp`` is reached.  Per process: nothing is shared
    between workers or instances, and a token needs no revocation the signature does not give."""

    def __init__(
        self, secret: str, *, size: int = TOKEN_CACHE_SIZE, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> Caller:
        """The caller of a valid token (as :func:`verify`); 401 for any defect."""
        hit = self._entries.get(token)
        if hit is not None:
            caller, exp = hit
            # PyJWT refuses a token once now >= exp (no leeway): the same bound here.
            if self._clock() < exp:
                self._entries.move_to_end(token)
                return caller
            del self._entries[token]
        caller, exp = verify_until(token, self._secret)
        self._entries[token] = (caller, exp)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return caller


# RFC 7519 2: NumericDate claims are JSON numbers.  PyJWT runs int() on them, so without this
# check a string "exp" (or a boolean) would pass as a date.
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _caller(claims: dict[str, object]) -> Caller:
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Unauthorized(f"the token's '{name}' claim must be a number")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("the token's 'sub' claim must be a non-empty string")
    _check_text("sub", sub)
    companies = claims.get("companies", [])
    if not isinstance(companies, list) or not all(isinstance(c, str) for c in companies):
        raise Unauthorized("the token's 'companies' claim must be a list of strings")
    for company in companies:
        _check_text("companies", company)
    app = claims.get("application_id")
    if app is not None and (not isinstance(app, str) or not app):
        raise Unauthorized("the token's 'application_id' claim must be a non-empty string")
    if app is not None:
        _check_text("application_id", app)
    return Caller(sub, frozenset(str(c) for c in companies), app)


def _check_text(claim: str, value: str) -> None:
    """JSON may encode a lone surrogate (``"\\ud800"``); such an id can be neither stored nor
    compared as text, so the token is refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Unauthorized(f"the token's '{claim}' claim is not valid Unicode text") from None


def mint(
    secret: str,
    *,
    company: str,
    user: str | None = None,
    app: str | None = None,
    ttl: int = 3600,
) -> str:
    """A token for trying the service out (``filesvc token``) and for tests."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": app or user or "user",
        "companies": [company],
        "iat": now,
        "exp": now + ttl,
    }
    if app is not None:
        claims["application_id"] = app
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
