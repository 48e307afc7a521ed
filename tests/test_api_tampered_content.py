"""Stored bytes changed behind the service's back (flipped, cut, reordered, swapped for another
blob's) are never served: a download answers 500 before the first byte, or, when the damage is
past what was already sent, the connection is cut; no wrong byte goes out.  Runs on both
deployed configurations (SQLite + local disk, PostgreSQL + S3)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import aiohttp
import pytest

from blobstore import inline
from blobstore.port import BlobBackend
from blobstore.refs import BlobRef, is_sealed
from blobstore.sealed import SealedBackend
from blobstore.sealing import SEALED_SEGMENT, TRAILER
from filesvc.appkeys import DATABASE, STORE
from tests.helpers import Api, error_of

LARGE = 6 << 20  # several read pieces: damage far in is found after the first bytes went out


async def create_raw(api: Api, data: bytes) -> str:
    created = await api.create(
        {"filename": "f.bin", "total_chunks": "1", "total_size": str(len(data))}
    )
    resp = await api.client.post(
        f"{api.files()}/{created['id']}",
        data=io.BytesIO(data),
        params={"chunk_number": "1", "total_chunks": "1"},
        headers=api.headers(**{"Content-Type": "application/octet-stream"}),
    )
    assert resp.status == 200, await resp.text()
    return str(created["id"])


async def ref_of(api: Api, file_id: str) -> BlobRef:
    async with api.client.app[DATABASE].read() as tx:
        row = await tx.fetchrow(
            "SELECT ref FROM manifest_entries WHERE file_id = ? AND slot = 'chunk'", file_id
        )
    assert row is not None
    return BlobRef(str(row[0]))


def inner(api: Api) -> BlobBackend:
    backend = api.client.app[STORE].backend
    assert isinstance(backend, SealedBackend)
    return backend.inner


async def stored(api: Api, ref: BlobRef) -> bytes:
    return b"".join([p async for p in inner(api).read(ref)])


async def overwrite(api: Api, ref: BlobRef, data: bytes) -> None:
    backend = inner(api)
    await backend.delete(ref)
    staging = await backend.stage()
    await staging.write(data)
    assert await staging.publish(ref)


def flip(at: Callable[[int], int]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        out = bytearray(data)
        out[at(len(data))] ^= 0x04
        return bytes(out)

    return change


EARLY: dict[str, Callable[[bytes], bytes]] = {
    "flip in the first segment": flip(lambda n: 10),
    "flip in the trailer": flip(lambda n: n - 5),
    "cut short": lambda d: d[:-1000],
    "cut at a segment boundary": lambda d: d[: len(d) - TRAILER - SEALED_SEGMENT] + d[-TRAILER:],
    "first two segments swapped": lambda d: (
        d[SEALED_SEGMENT : 2 * SEALED_SEGMENT] + d[:SEALED_SEGMENT] + d[2 * SEALED_SEGMENT :]
    ),
}


@pytest.mark.parametrize("damage", list(EARLY))
async def test_damage_answers_500_before_the_first_byte(api: Api, damage: str) -> None:
    data = os.urandom(LARGE)
    file_id = await create_raw(api, data)
    ref = await ref_of(api, file_id)
    assert is_sealed(ref)
    # Read once while intact, so the server remembers the blob's verified trailer.
    resp = await api.download(file_id, Range="bytes=3000000-3000099")
    assert resp.status == 206 and await resp.read() == data[3000000:3000100]
    await overwrite(api, ref, EARLY[damage](await stored(api, ref)))
    status, message = await error_of(await api.download(file_id))
    assert (status, message) == (
        500,
        "stored content of this file is damaged; an operator must run fsck",
    )
    # A range in the untouched middle: refused when the trailer no longer vouches for the blob
    # (size, identity), else served, and then it is the right bytes (its segments verify).
    resp = await api.download(file_id, Range="bytes=3000000-3000099")
    if damage in ("flip in the trailer", "cut short", "cut at a segment boundary"):
        assert resp.status == 500
    else:
        assert resp.status == 206 and await resp.read() == data[3000000:3000100]


async def test_blob_swapped_for_another_of_the_same_company_is_refused(api: Api) -> None:
    one, two = os.urandom(LARGE), os.urandom(LARGE)
    id_one, id_two = await create_raw(api, one), await create_raw(api, two)
    ref_one, ref_two = await ref_of(api, id_one), await ref_of(api, id_two)
    ranged = {"Range": "bytes=1000-1048575"}  # a body read whole
    assert await (await api.download(id_one, **ranged)).read() == one[1000:1048576]
    await overwrite(api, ref_one, await stored(api, ref_two))
    status, _ = await error_of(await api.download(id_one))
    assert status == 500
    status, _ = await error_of(await api.download(id_one, **ranged))
    assert status == 500
    assert await api.content(id_two) == two


async def test_damage_far_in_cuts_the_connection_after_only_good_bytes(api: Api) -> None:
    data = os.urandom(LARGE)
    file_id = await create_raw(api, data)
    ref = await ref_of(api, file_id)
    await overwrite(
        api, ref, flip(lambda n: n - TRAILER - 3 * SEALED_SEGMENT)(await stored(api, ref))
    )
    resp = await api.download(file_id)
    assert resp.status == 200  # the headers went out with the first good piece
    got = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for piece in resp.content.iter_any():
            got += piece
    assert len(got) < len(data)
    assert bytes(got) == data[: len(got)]  # every byte sent was right


@pytest.mark.blob_files
async def test_small_file_flipped_answers_500(api: Api) -> None:
    res = await api.upload(b"a short document")
    ref = await ref_of(api, res["id"])
    assert await api.content(res["id"]) == b"a short document"
    await overwrite(api, ref, flip(lambda n: 3)(await stored(api, ref)))
    status, _ = await error_of(await api.download(res["id"]))
    assert status == 500


async def test_small_file_flipped_in_its_inline_row_answers_500(api: Api) -> None:
    """The default keeps a small file's blob as a row of the metadata database: a flipped
    byte there fails the row's authentication, before any byte is sent; and a server that
    reads rows through its blob cache (S3) never caches the damaged bytes, so it fails again."""
    res = await api.upload(b"a short document")
    ref = await ref_of(api, res["id"])
    db = api.client.app[DATABASE]
    row = await inline.lookup(db, ref)
    assert row is not None and is_sealed(ref)
    async with db.write() as tx:
        await tx.execute(
            "UPDATE inline_blobs SET data = ? WHERE ref = ?", flip(lambda n: 3)(row.data), ref
        )
    for _ in range(2):
        status, _ = await error_of(await api.download(res["id"]))
        assert status == 500
