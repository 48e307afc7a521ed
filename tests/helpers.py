"""A thin client for the files API, so tests read as the contract does."""

from __future__ import annotations

import io
from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from filesvc.auth import mint

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
# The master key of servers that share a store (PostgreSQL or S3): 32 bytes in base64.
MASTER_KEY = "dGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODlhYmNkZWY="
PREFIX = "/internal/services/files/v1"


def token(company: str = "acme", *, user: str = "alice", app: str | None = None) -> str:
    return mint(SECRET, company=company, user=user, app=app)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def multipart(
    data: bytes, filename: str = "file.bin", ctype: str | None = None
) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(
        "file", data, filename=filename, content_type=ctype or "application/octet-stream"
    )
    return form


class Api:
    """Calls with a default user token of company ``acme``."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.token = token()

    def files(self, company: str = "acme") -> str:
        return f"{PREFIX}/companies/{company}/files"

    def headers(self, tok: str | None = None, **extra: str) -> dict[str, str]:
        return {**bearer(tok or self.token), **extra}

    async def upload(
        self,
        data: bytes,
        *,
        filename: str = "file.bin",
        tok: str | None = None,
        params: dict[str, str] | None = None,
        company: str = "acme",
    ) -> dict[str, Any]:
        """Single-request upload; asserts 200 and returns the resource."""
        resp = await self.client.post(
            self.files(company),
            data=multipart(data, filename),
            params=params or {},
            headers=self.headers(tok),
        )
        assert resp.status == 200, await resp.text()
        return cast(dict[str, Any], (await resp.json())["resource"])

    async def create(
        self, params: dict[str, str], *, tok: str | None = None, company: str = "acme"
    ) -> dict[str, Any]:
        resp = await self.client.post(self.files(company), params=params, headers=self.headers(tok))
        assert resp.status == 200, await resp.text()
        return cast(dict[str, Any], (await resp.json())["resource"])

    async def chunk(
        self,
        file_id: str,
        data: bytes,
        params: dict[str, str],
        *,
        tok: str | None = None,
        raw: bool = True,
        company: str = "acme",
    ) -> aiohttp.ClientResponse:
        url = f"{self.files(company)}/{file_id}"
        if raw:
            return await self.client.post(
                url,
                data=data,
                params=params,
                headers=self.headers(tok, **{"Content-Type": "application/octet-stream"}),
            )
        return await self.client.post(
            url, data=multipart(data), params=params, headers=self.headers(tok)
        )

    async def download(
        self, file_id: str, *, tok: str | None = None, company: str = "acme", **headers: str
    ) -> aiohttp.ClientResponse:
        return await self.client.get(
            f"{self.files(company)}/{file_id}/download", headers=self.headers(tok, **headers)
        )

    async def content(self, file_id: str) -> bytes:
        resp = await self.download(file_id)
        assert resp.status == 200, await resp.text()
        return await resp.read()

    async def meta(self, file_id: str, *, tok: str | None = None) -> aiohttp.ClientResponse:
        return await self.client.get(f"{self.files()}/{file_id}", headers=self.headers(tok))


async def error_of(resp: aiohttp.ClientResponse) -> tuple[int, str]:
    """Assert the error envelope and return (status, message)."""
    body = await resp.json()
    assert set(body) == {"statusCode", "error", "message"}, body
    assert body["statusCode"] == resp.status
    assert body["error"] == resp.reason
    assert "Traceback" not in body["message"]
    return resp.status, str(body["message"])


async def upload_raw(base_url: str, content: bytes, filename: str = "big.bin") -> str:
    """Upload ``content`` as a raw body to a running server at ``base_url`` (company acme,
    alice's token), streamed from a file-like object; the new file's id."""
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base_url}{PREFIX}/companies/acme/files",
            data=io.BytesIO(content),
            params={"filename": filename},
            headers={**bearer(token()), "Content-Type": "application/octet-stream"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return cast(str, (await resp.json())["resource"]["id"])
