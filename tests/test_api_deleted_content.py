"""A deleted file's content is never served again, even by a server that keeps small blobs in
memory (the S3 configuration's cache): a download reads the manifest first, so once the file is
gone and gc has taken its blob elsewhere, the server answers 404; the same content uploaded again
is stored in the engine again, not taken for present because a process still remembers it."""

from __future__ import annotations

import os

import pytest

from blobstore import gc
from blobstore.backends import open_backend
from blobstore.blobcache import BlobCache
from blobstore.refs import BlobRef
from filesvc.appkeys import DATABASE, STORE
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import error_of


@pytest.mark.blob_files
async def test_a_deleted_and_collected_file_is_not_served_from_memory(
    make_api: AppFactory, settings: Settings
) -> None:
    api = await make_api()
    data = os.urandom(4096)
    file_id = (await api.upload(data))["id"]
    assert await api.content(file_id) == data
    assert await api.content(file_id) == data  # from the cache, where the server has one
    backend = api.client.app[STORE].backend
    cache = getattr(getattr(backend, "inner", None), "cache", None)
    if settings.blob is not None:  # on S3 the server keeps it in memory
        assert isinstance(cache, BlobCache) and len(cache) == 1 and cache.stats.hits >= 1

    resp = await api.client.delete(f"{api.files()}/{file_id}", headers=api.headers())
    assert resp.status == 200
    # gc in another process (the blobstore command): this server's memory is not told.
    collector = await open_backend(settings.blob_location())
    try:
        report = await gc.collect(api.client.app[DATABASE], collector, grace=0)
        assert report.freed == 1
        refs = [info.ref async for info in collector.scan()]
        assert refs == []
    finally:
        await collector.close()

    for resp in (await api.download(file_id), await api.meta(file_id)):
        assert await error_of(resp) == (404, "no such file in this company")

    # The same bytes again: stored in the engine anew, and served.
    again = (await api.upload(data))["id"]
    collector = await open_backend(settings.blob_location())
    try:
        stored = [info.ref async for info in collector.scan()]
        assert len(stored) == 1
        assert await collector.stat(BlobRef(stored[0])) is not None
    finally:
        await collector.close()
    assert await api.content(again) == data
