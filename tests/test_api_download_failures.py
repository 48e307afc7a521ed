"""A blob that fails after the headers went out cuts the connection (never wrong or missing
bytes under a 200); a short small blob, read before any byte goes out, is an error status."""

from __future__ import annotations

import dataclasses
import os

import aiohttp
import pytest

from blobstore.port import LocalFiles
from filesvc.appkeys import SERVICE, STORE
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import Api, error_of


async def _chunked(api: Api, parts: list[bytes]) -> str:
    res = await api.upload(parts[0], params={"total_chunks": str(len(parts))})
    fid = str(res["id"])
    for k, part in enumerate(parts[1:], 2):
        resp = await api.chunk(fid, part, {"chunk_number": str(k), "total_chunks": str(len(parts))})
        assert resp.status == 200, await resp.text()
    return fid


async def test_a_blob_lost_after_the_headers_cuts_the_connection(api: Api) -> None:
    app = api.client.app
    assert app is not None
    parts = [os.urandom(700_000), os.urandom(700_000)]  # streamed: past 1 MiB
    fid = await _chunked(api, parts)
    view = await app[SERVICE].view("acme", fid)
    await app[STORE].backend.delete(view.chunks[1].ref)  # gc or an operator took it
    resp = await api.download(fid)
    assert resp.status == 200  # the first chunk was there: headers went out
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


# A sealed blob cut short fails its authentication (its trailer is gone): damage, said as such.
SHORT = "stored content of this file is shorter than recorded; an operator must run fsck"
DAMAGED = "stored content of this file is damaged; an operator must run fsck"


@pytest.mark.blob_files
@pytest.mark.local_blobs
@pytest.mark.parametrize("size", [4000, 500_000])  # read on the loop / in one thread hop
@pytest.mark.parametrize(("encryption", "message"), [(False, SHORT), (True, DAMAGED)])
async def test_a_short_small_blob_is_an_error_before_any_byte(
    make_api: AppFactory, settings: Settings, size: int, encryption: bool, message: str
) -> None:
    api = await make_api(settings_=dataclasses.replace(settings, encryption=encryption))
    app = api.client.app
    assert app is not None
    res = await api.upload(os.urandom(size))
    view = await app[SERVICE].view("acme", str(res["id"]))
    backend = app[STORE].backend
    assert isinstance(backend, LocalFiles)
    os.truncate(backend.local_path(view.chunks[0].ref), 100)
    resp = await api.download(str(res["id"]))
    assert await error_of(resp) == (500, message)


@pytest.mark.local_blobs
async def test_a_short_large_blob_cuts_the_connection(api: Api) -> None:
    app = api.client.app
    assert app is not None
    fid = await _chunked(api, [os.urandom(700_000), os.urandom(700_000)])
    view = await app[SERVICE].view("acme", fid)
    backend = app[STORE].backend
    assert isinstance(backend, LocalFiles)
    os.truncate(backend.local_path(view.chunks[1].ref), 150_000)
    resp = await api.download(fid)
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
