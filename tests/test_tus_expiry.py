"""Expiration: an idle tus upload answers Upload-Expires, and ``blobstore gc`` sweeps it like any
abandoned upload (404 after, its blobs freed); a complete tus file is never expired."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from blobstore import gc
from filesvc.appkeys import DATABASE, STORE
from tests.helpers import Api
from tests.tus_helpers import PATCH_TYPE, auth, uploads


async def test_gc_sweeps_an_idle_tus_upload_and_keeps_a_complete_one(api: Api) -> None:
    idle = (await api.client.post(uploads(), headers=auth(**{"Upload-Length": "100"}))).headers[
        "Location"
    ]
    resp = await api.client.patch(
        idle, data=b"idle bytes" * 5, headers=auth(**PATCH_TYPE, **{"Upload-Offset": "0"})
    )
    expires = parsedate_to_datetime(resp.headers["Upload-Expires"]).timestamp()
    assert 23 * 3600 < expires - time.time() <= 24 * 3600 + 1
    done = await api.client.post(
        uploads(), data=b"done", headers=auth(**PATCH_TYPE, **{"Upload-Length": "4"})
    )
    assert "Upload-Expires" not in done.headers
    app = api.client.app
    assert app is not None
    # gc run a minute later, taking uploads idle for 30 s and blobs older than 30 s
    report = await gc.collect(
        app[DATABASE],
        app[STORE].backend,
        grace=30,
        abandon_after=30,
        clock=lambda: time.time() + 60,
    )
    assert [u.file_id for u in report.expired] == [idle.rsplit("/", 1)[1]]
    assert report.freed == 1
    assert (await api.client.head(idle, headers=auth())).status == 404
    done_id = done.headers["Location"].rsplit("/", 1)[1]
    assert await api.content(done_id) == b"done"
