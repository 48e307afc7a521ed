"""No cross-tenant oracle: nothing company B observes tells whether company A stores some content.

The attack: B guesses a document, uploads it, and looks for any sign of a dedup hit: the
``filesvc_dedup_hits_total`` metric, a field or ETag of the answer, an error, or the store
skipping the write (which is what makes a dedup hit faster).  Dedup is scoped per company, so a
guess that A holds and a guess nobody holds look exactly alike to B.  See docs/security.md.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from blobstore import inline, layout, manifests
from blobstore.cli import main as blobstore_main
from blobstore.refs import ref_scope
from blobstore.sealed import SealedBackend
from blobstore.store import ContentStore
from filesvc.app import create_app
from filesvc.appkeys import DATABASE, SCOPES, STORE
from filesvc.settings import Settings
from tests.helpers import Api, error_of, token
from tests.helpers import multipart as form
from tests.test_api_thumbnails import jpeg

A_TOKEN = token("acme", user="alice")
B_TOKEN = token("evil", user="mallory")
SECRET_DOC = b"acme's merger memo, draft 3 " * 40


async def dedup_hits(api: Api) -> float:
    text = await (await api.client.get("/metrics")).text()
    m = re.search(r"^filesvc_dedup_hits_total (\S+)$", text, re.M)
    assert m is not None, text
    return float(m.group(1))


async def blob_count(api: Api) -> int:
    """Blobs in the store, whichever backend it is, and inline rows: a dedup hit writes none."""
    async with api.client.app[DATABASE].read() as tx:
        rows = await inline.sizes(tx)
    return len(rows) + len([info async for info in api.client.app[STORE].backend.scan()])


async def observe(api: Api, content: bytes) -> tuple[Any, ...]:
    """Everything B sees when uploading ``content``, with what must differ anyway (ids, times)
    taken out."""
    hits = await dedup_hits(api)
    blobs = await blob_count(api)
    resp = await api.client.post(
        api.files("evil"), data=form(content, "guess.txt"), headers=api.headers(B_TOKEN)
    )
    body = await resp.json()
    res = body["resource"]
    fid = res.pop("id")
    res.pop("created_at"), res.pop("updated_at")
    download = await api.client.get(
        f"{api.files('evil')}/{fid}/download", headers=api.headers(B_TOKEN)
    )
    etag = download.headers["ETag"]
    return (
        resp.status,
        res,
        sorted(k for k in resp.headers if k not in ("Date", "Content-Length")),
        await dedup_hits(api) - hits,
        await blob_count(api) - blobs,
        download.status,
        len(etag),
        etag,
    )


async def test_guess_and_check_reveals_nothing_across_companies(api: Api) -> None:
    held = await api.upload(SECRET_DOC, tok=A_TOKEN)
    a_etag = (await api.download(held["id"], tok=A_TOKEN)).headers["ETag"]

    # Control: the metric and the store do see a same-company duplicate.
    before = await dedup_hits(api)
    blobs = await blob_count(api)
    await api.upload(SECRET_DOC, tok=A_TOKEN)
    assert await dedup_hits(api) == before + 1
    assert await blob_count(api) == blobs

    # B's guess that A holds, and a guess of the same size that nobody holds.
    right = await observe(api, SECRET_DOC)
    wrong = await observe(api, os.urandom(len(SECRET_DOC)))
    assert right[:7] == wrong[:7], (right, wrong)
    assert right[3] == 0 and right[4] == 1  # no dedup hit; a new blob was written
    # B's ETag for the same bytes is not A's: ETags cannot be compared across companies.
    assert right[7] != a_etag

    # B's second upload of its own guess is B's own dedup hit (B knows it has it).
    again = await observe(api, SECRET_DOC)
    assert again[3] == 1 and again[4] == 0

    # Each company's blob is in its own scope.
    async with api.client.app[DATABASE].read() as conn:
        a_ref = (await manifests.entries(conn, held["id"], "chunk"))[0].ref
    scopes = api.client.app[SCOPES]
    assert ref_scope(a_ref) == scopes.of("acme") != scopes.of("evil")
    assert "acme" not in a_ref


@pytest.mark.blob_files
@pytest.mark.local_blobs
@pytest.mark.sqlite_only  # the command runs on the data directory's own database
async def test_fsck_rehashes_scoped_blobs(api: Api, settings: Settings) -> None:
    """The scope rides in the ref beside the content hash: fsck --full still checks content."""
    held = await api.upload(SECRET_DOC, tok=A_TOKEN)
    async with api.client.app[DATABASE].read() as conn:
        a_ref = (await manifests.entries(conn, held["id"], "chunk"))[0].ref
    assert ref_scope(a_ref) is not None
    data_dir = settings.data_dir
    fsck = ["fsck", "--data-dir", str(data_dir), "--full"]
    assert await asyncio.to_thread(blobstore_main, fsck) == 0
    blob_path = layout.blobs_dir(data_dir) / a_ref[9:11] / a_ref[11:13] / a_ref
    await asyncio.to_thread(blob_path.write_bytes, b"X" * len(SECRET_DOC))
    assert await asyncio.to_thread(blobstore_main, fsck) == 1


async def test_thumbnails_are_stored_in_their_company_scope(api: Api) -> None:
    """A thumbnail shared across companies would make thumbnail_sync's timing the oracle."""
    image = jpeg(640, 480)
    made = {}
    for company, tok in (("acme", A_TOKEN), ("evil", B_TOKEN)):
        res = await api.upload(
            image, filename="p.jpg", params={"thumbnail_sync": "1"}, tok=tok, company=company
        )
        assert res["metadata"]["thumbnails_status"] == "done" and res["thumbnails"]
        async with api.client.app[DATABASE].read() as conn:
            made[company] = (await manifests.entries(conn, res["id"], "thumb"))[0].ref
    scopes = api.client.app[SCOPES]
    assert ref_scope(made["acme"]) == scopes.of("acme")
    assert ref_scope(made["evil"]) == scopes.of("evil")


async def test_files_stored_before_scopes_stay_readable(api: Api) -> None:
    """A ref without a scope (every blob written before dedup was scoped) is still served."""
    res = await api.upload(b"placeholder")
    # An older release wrote plain, unscoped blobs: put one past the sealing layer.
    backend = api.client.app[STORE].backend
    assert isinstance(backend, SealedBackend)
    old = await ContentStore(backend.inner).put_bytes(b"written by an older release")
    assert ref_scope(old.ref) is None
    async with api.client.app[DATABASE].write() as conn:
        await conn.execute(
            "UPDATE manifest_entries SET ref = ?, size = ? WHERE file_id = ?",
            old.ref,
            old.size,
            res["id"],
        )
    assert await api.content(res["id"]) == b"written by an older release"


async def test_metrics_token_guards_metrics_when_set(
    aiohttp_client: Any, settings: Settings
) -> None:
    guarded = Settings(
        data_dir=settings.data_dir,
        jwt_secret=settings.jwt_secret,
        disk_reserve_bytes=0,
        metrics_token="scraper-secret-123",
    )
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(guarded))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {A_TOKEN}"}):
        resp = await client.get("/metrics", headers=headers)
        assert await error_of(resp) == (
            401,
            "the metrics need 'Authorization: Bearer <metrics token>'",
        )
    resp = await client.get("/metrics", headers={"Authorization": "Bearer scraper-secret-123"})
    assert resp.status == 200 and "filesvc_dedup_hits_total" in await resp.text()
    # Health and readiness stay open to probes.
    assert (await client.get("/readyz")).status == 200
