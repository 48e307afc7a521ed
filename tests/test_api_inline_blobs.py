"""Small files through the HTTP API under the default FILESVC_INLINE_MAX: their blobs are rows of
the metadata database, and planted hash collisions (a hasher that names every content alike)
never make a file serve another file's bytes, whether the uploads come one after another or race
for one name.  Where the server keeps a blob cache (S3), rows are read through it."""

from __future__ import annotations

import asyncio
import os

import pytest

from blobstore import inline, manifests
from blobstore.refs import BlobRef, ref_variant
from filesvc.appkeys import DATABASE, SERVICE, STORE
from filesvc.settings import Settings
from tests.helpers import Api, error_of


class Planted:
    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 32


async def chunk_ref(api: Api, file_id: str) -> BlobRef:
    async with api.client.app[DATABASE].read() as tx:
        return (await manifests.entries(tx, file_id, "chunk"))[0].ref


async def test_planted_collisions_one_after_another_each_keep_their_bytes(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.client.app[STORE], "_hasher", Planted)
    ids = [(await api.upload(b"content %d" % i))["id"] for i in range(3)]
    refs = [await chunk_ref(api, file_id) for file_id in ids]
    assert [ref_variant(r) for r in refs] == [0, 1, 2]
    for i, (file_id, ref) in enumerate(zip(ids, refs, strict=True)):
        assert await inline.lookup(api.client.app[DATABASE], ref) is not None
        assert await api.content(file_id) == b"content %d" % i


async def test_planted_collisions_racing_for_one_name_never_cross(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.client.app[STORE], "_hasher", Planted)
    contents = [b"racing content %d" % (i % 4) for i in range(12)]
    resps = await asyncio.gather(
        *(
            api.client.post(
                api.files(),
                data=c,
                params={"filename": "r.bin"},
                headers=api.headers(**{"Content-Type": "application/octet-stream"}),
            )
            for c in contents
        )
    )
    refused = []
    for content, resp in zip(contents, resps, strict=True):
        if resp.status == 503:
            assert await error_of(resp) == (
                503,
                "another upload took this content's name meanwhile: nothing was saved;"
                " send it again",
            )
            refused.append(content)
            continue
        assert resp.status == 200, await resp.text()
        file_id = (await resp.json())["resource"]["id"]
        assert await api.content(file_id) == content
    assert len(refused) < len(contents)
    for content in refused:  # sent again, each takes a name of its own (or its content's)
        assert await api.content((await api.upload(content))["id"]) == content


async def test_a_backend_blob_under_a_new_small_files_name_is_found_by_its_commit(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file's small blob may take a free name without asking the backend (the group
    commit checks): a blob already there under it, of the same content or another, is never
    shadowed by a row."""
    store = api.client.app[STORE]
    monkeypatch.setattr(store, "_hasher", Planted)
    scope = api.client.app[SERVICE].scope_of("acme")
    held = await store.put_bytes(b"kept in the backend", scope=scope)  # no row: a blob
    assert held.inline is None and ref_variant(held.ref) == 0
    same = (await api.upload(b"kept in the backend"))["id"]
    assert await chunk_ref(api, same) == held.ref  # a dedup hit on the backend's blob
    assert await inline.lookup(api.client.app[DATABASE], held.ref) is None
    other = (await api.upload(b"another content"))["id"]
    ref = await chunk_ref(api, other)
    assert ref_variant(ref) == 1  # the next name: never the backend blob's
    assert await api.content(same) == b"kept in the backend"
    assert await api.content(other) == b"another content"


async def test_a_small_files_row_is_read_through_the_blob_cache_where_the_server_has_one(
    api: Api, settings: Settings
) -> None:
    data = os.urandom(4096)
    file_id = (await api.upload(data))["id"]
    store = api.client.app[STORE]
    ref = await chunk_ref(api, file_id)
    assert await inline.lookup(api.client.app[DATABASE], ref) is not None
    assert await api.content(file_id) == data
    if settings.blob is None:  # local disk: no cache of ours, the row comes with the view
        assert store.cache is None
        return
    assert store.cache is not None and ref in store.cache
    hits = store.cache.stats.hits
    assert await api.content(file_id) == data
    assert store.cache.stats.hits == hits + 1
    # The cache holds bytes, never the file: a deleted file is not found, on the next request.
    resp = await api.client.delete(f"{api.files()}/{file_id}", headers=api.headers())
    assert resp.status == 200
    status, _ = await error_of(await api.download(file_id))
    assert status == 404
