"""Video and office previews through the API, and thumbnail failures made visible: the reason in
the resource (``thumbnails_error``), in the log, and counted in metrics."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest
import pyvips

from blobstore import layout
from filesvc.settings import Settings
from filesvc.thumbnails.converter import resolve_converter
from tests.conftest import AppFactory
from tests.helpers import Api, token
from tests.office_media import text_document
from tests.thumbnail_media import make_video

SYNC = {"thumbnail_sync": "1"}


async def test_video_gets_a_thumbnail_of_its_first_frame(api: Api) -> None:
    data = make_video("mp4", "libx264", 1280, 720, frames=3)
    res = await api.upload(data, filename="clip.bin", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "done"
    assert res["metadata"]["thumbnails_error"] is None
    [thumb] = res["thumbnails"]
    assert (thumb["type"], thumb["width"], thumb["height"]) == ("image/jpeg", 600, 338)
    resp = await api.client.get(thumb["url"], headers=api.headers())
    image = pyvips.Image.new_from_buffer(await resp.read(), "")
    assert image.get("vips-loader") == "jpegload_buffer"


@pytest.fixture
def with_converter(settings: Settings) -> Settings:
    assert resolve_converter("soffice") is not None, "LibreOffice is installed by make test"
    # A worker's first conversion starts LibreOffice cold: the settings fixture's long
    # thumbnail_sync wait (tests/conftest.py) covers it.
    return dataclasses.replace(settings, office_converter="soffice")


async def test_office_document_gets_its_pages(
    make_api: AppFactory, with_converter: Settings
) -> None:
    api = await make_api(settings_=with_converter)
    res = await api.upload(text_document("Minutes", pages=2), filename="x", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "done"
    assert [(t["type"], t["width"], t["height"]) for t in res["thumbnails"]] == [
        ("image/jpeg", 283, 400),
        ("image/jpeg", 283, 400),
    ]


async def test_without_a_converter_office_documents_are_settled_at_upload(api: Api) -> None:
    # The default test settings have no converter (the app logged that it is absent at start).
    res = await api.upload(text_document("Minutes"), filename="minutes.odt", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "done" and res["thumbnails"] == []
    res = await api.upload(b"plain notes\n", filename="notes.txt", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "done"


async def test_a_failure_is_stored_logged_and_counted(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_video("matroska", "libx264", 64, 64)
    caplog.set_level(logging.INFO, logger="filesvc.thumbnails.jobs")
    res = await api.upload(good[: len(good) // 3], filename="cut.webm", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "error"
    reason = res["metadata"]["thumbnails_error"]
    assert reason in ("video header could not be read", "no decodable video frame")
    meta = await (await api.meta(res["id"])).json()
    assert meta["resource"]["metadata"]["thumbnails_error"] == reason
    assert any(reason in r.getMessage() and res["id"] in r.getMessage() for r in caplog.records)

    await api.upload(good, filename="ok.webm", params=SYNC)
    text = await (await api.client.get("/metrics")).text()
    assert 'filesvc_thumbnail_jobs_total{outcome="error"} 1.0' in text
    assert 'filesvc_thumbnail_jobs_total{outcome="done"} 1.0' in text
    assert 'filesvc_thumbnail_job_duration_seconds_count{outcome="error"} 1.0' in text

    # New content clears the old failure.
    resp = await api.chunk(res["id"], good, {**SYNC}, tok=token(app="bot"), raw=False)
    fixed = (await resp.json())["resource"]["metadata"]
    assert (fixed["thumbnails_status"], fixed["thumbnails_error"]) == ("done", None)


@pytest.mark.sqlite_only
async def test_a_database_from_before_thumbnails_error_is_upgraded(
    make_api: AppFactory, settings: Settings
) -> None:
    api = await make_api()
    res = await api.upload(b"hello", filename="a.txt")
    await api.client.close()
    # Make it look like the earlier schema (filesvc step 3): no thumbnails_error column.
    path: Path = layout.db_path(settings.data_dir)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE files DROP COLUMN thumbnails_error")
        conn.execute("DELETE FROM schema_version WHERE component = 'filesvc' AND step = 4")
    again = await make_api()
    meta = await (await again.meta(res["id"])).json()
    assert meta["resource"]["metadata"]["thumbnails_error"] is None
