"""What a large upload asks of the S3 engine: a raw body with a Content-Length goes up as one PUT
(sealed, as by default), a body whose length is not known before its first byte (chunked, or
gzip, which the server decodes) as a multipart upload; every file reads back the same."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from blobstore.s3 import DATA, PART_SIZE, S3Location
from filesvc.app import create_app
from filesvc.settings import Settings
from tests.helpers import SECRET, Api
from tests.s3_counting_proxy import Seen, counting_proxy

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
MiB = 1 << 20


def data_writes(seen: Seen, location: S3Location) -> list[str]:
    """The methods of the requests that wrote the data objects (``POST ?uploads`` starts a
    multipart upload, ``PUT`` sends bytes)."""
    prefix = f"/{location.bucket}/{location.prefix}{DATA}"
    return [
        "multipart" if "uploads" in path else method
        for method, path, _ in seen.requests
        if method in ("PUT", "POST") and path.startswith(prefix) and "uploadId" not in path
    ]


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
async def test_a_large_upload_is_one_put_only_when_its_length_is_known(
    s3_location: S3Location, tmp_path: Path, aiohttp_client: ClientFactory, framing: str
) -> None:
    content = os.urandom(PART_SIZE + 3 * MiB)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(content), MiB):
            yield content[i : i + MiB]

    body: object = {
        "length": io.BytesIO(content),
        "chunked": pieces(),
        "gzip": io.BytesIO(gzip.compress(content, 1)),
    }[framing]
    extra = {"Content-Encoding": "gzip"} if framing == "gzip" else {}
    async with counting_proxy(s3_location.endpoint) as (endpoint, seen):
        location = replace(s3_location, endpoint=endpoint)
        settings = Settings(data_dir=tmp_path / "data", jwt_secret=SECRET, blob=location)
        api = Api(await aiohttp_client(create_app(settings)))
        resp = await api.client.post(
            api.files(),
            data=body,
            params={"filename": "big.bin"},
            headers=api.headers(**{"Content-Type": "application/octet-stream", **extra}),
        )
        assert resp.status == 200, await resp.text()
        expected = ["PUT"] if framing == "length" else ["multipart"]
        assert data_writes(seen, location) == expected
        assert await api.content((await resp.json())["resource"]["id"]) == content
