"""Small helpers for tus tests: the endpoint, headers, metadata encoding."""

from __future__ import annotations

import base64

from tests.helpers import PREFIX, token

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_TYPE = {"Content-Type": "application/offset+octet-stream"}


def uploads(company: str = "acme") -> str:
    return f"{PREFIX}/companies/{company}/uploads"


def auth(company: str = "acme", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(company)}", **TUS, **extra}


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())
