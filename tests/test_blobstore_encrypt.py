"""``blobstore encrypt``: a store written without encryption keeps serving, and its plain blobs
are sealed online, resumably, with fsck clean at every stop (both metadata engines)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from blobstore import fsck, inline
from blobstore.encrypt import EncryptReport, encrypt_store, plain_refs
from blobstore.fsck import Kind
from blobstore.refs import is_sealed
from blobstore.sealed import SealedBackend
from filesvc.appkeys import DATABASE, STORE
from filesvc.settings import Settings
from tests.conftest import AppFactory
from tests.helpers import Api

MARKER = b"ENCRYPT-ME-PLAINTEXT-91b2"


async def files_of(api: Api, n: int, size: int) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        data = MARKER + os.urandom(size) + b"%d" % i
        out[(await api.upload(data))["id"]] = data
    return out


async def clean(api: Api) -> None:
    app = api.client.app
    checker = fsck.Checker(app[DATABASE], app[STORE].backend, rehash=fsck.rehash_all)
    damage = [
        f async for f in checker.run() if f.kind not in (Kind.ORPHAN_BLOB, Kind.TEMP_LEFTOVER)
    ]
    assert damage == []


async def test_old_plain_store_serves_then_encrypt_seals_it(
    make_api: AppFactory, settings: Settings
) -> None:
    plain_api = await make_api(settings_=dataclasses.replace(settings, encryption=False))
    files = await files_of(plain_api, 3, 200_000)
    files.update(await files_of(plain_api, 1, 1_000_000))
    files.update(await files_of(plain_api, 1, 3000))  # kept inline, in the database
    app = plain_api.client.app
    assert len(await plain_refs(app[DATABASE])) == 5
    await plain_api.client.close()

    api = await make_api()  # encryption on (the default), same data directory
    backend = api.client.app[STORE].backend
    assert isinstance(backend, SealedBackend) and backend.sealing
    for file_id, data in files.items():
        assert await api.content(file_id) == data  # old plain blobs keep serving
    new = await api.upload(MARKER + b"new")
    db = api.client.app[DATABASE]
    assert len(await plain_refs(db)) == 5  # the new one is sealed

    # Stopped after the first blob: fsck stays clean, a second run finishes the work.
    class Stop(Exception):
        pass

    def stop_after_one(done: int, total: int) -> None:
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        await encrypt_store(db, backend, progress=stop_after_one)
    await clean(api)
    assert len(await plain_refs(db)) == 4
    report = await encrypt_store(db, backend)
    assert report == EncryptReport(plain=4, sealed=4, sealed_bytes=report.sealed_bytes, removed=4)
    assert await plain_refs(db) == []
    assert all([is_sealed(info.ref) async for info in backend.scan()])
    async with db.read() as tx:
        assert all(is_sealed(ref) for ref in await inline.sizes(tx))  # no plain row is left
    for file_id, data in files.items():
        assert await api.content(file_id) == data
    assert await api.content(new["id"]) == MARKER + b"new"
    await clean(api)
    assert await encrypt_store(db, backend) == EncryptReport()
