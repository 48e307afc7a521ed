"""Thumbnails through the API: made on completion, served, resumed after restart, bounded."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path

import pytest
import pyvips
from aiohttp.test_utils import TestClient, TestServer

from filesvc.app import create_app
from filesvc.settings import Settings
from filesvc.thumbnails.pool import PixelBudget
from filesvc.thumbnails.result import Rendered
from filesvc.thumbnails.sniff import may_have_thumbnails
from tests.conftest import AppFactory
from tests.helpers import SECRET, Api, error_of, token

SYNC = {"thumbnail_sync": "1"}


def jpeg(width: int, height: int) -> bytes:
    image = pyvips.Image.xyz(width, height)[0].cast("uchar").bandjoin([64, 128])
    return bytes(image.jpegsave_buffer(Q=70))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose header declares a huge image: only the header may ever be read."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def test_jpeg_thumbnail_made_and_served(api: Api) -> None:
    res = await api.upload(jpeg(1200, 900), filename="photo.jpg", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "done"
    [thumb] = res["thumbnails"]
    assert (thumb["index"], thumb["type"], thumb["width"], thumb["height"]) == (
        0,
        "image/jpeg",
        533,
        400,
    )
    resp = await api.client.get(thumb["url"], headers=api.headers())
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
    data = await resp.read()
    assert len(data) == thumb["size"]
    decoded = pyvips.Image.new_from_buffer(data, "")
    assert (decoded.width, decoded.height) == (533, 400)
    # Exactly the contract's path: clients of the reference append ?token= to it.
    assert thumb["url"] == f"{api.files()}/{res['id']}/thumbnails/0"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    etag = resp.headers["ETag"]
    assert etag == f'"{thumb["id"]}"'
    again = await api.client.get(thumb["url"], headers=api.headers(**{"If-None-Match": etag}))
    assert again.status == 304 and again.headers["ETag"] == etag
    by_query = await api.client.get(thumb["url"] + "?token=" + api.token)
    assert by_query.status == 200 and await by_query.read() == data
    meta = await (await api.meta(res["id"])).json()
    assert meta["resource"]["thumbnails"] == res["thumbnails"]


async def test_chunked_upload_gets_thumbnails_too(api: Api) -> None:
    image = bytes(
        pyvips.Image.black(800, 800, bands=4)
        .draw_rect([255, 0, 0, 128], 10, 10, 50, 50)
        .pngsave_buffer()
    )
    half = len(image) // 2
    res = await api.create(
        {"filename": "a.png", "total_chunks": "2", "total_size": str(len(image))}
    )
    await api.chunk(res["id"], image[half:], {"chunk_number": "2"})
    resp = await api.chunk(res["id"], image[:half], {"chunk_number": "1", **SYNC})
    body = (await resp.json())["resource"]
    assert body["metadata"]["thumbnails_status"] == "done"
    [thumb] = body["thumbnails"]
    assert (thumb["type"], thumb["width"], thumb["height"]) == ("image/png", 400, 400)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"just some text, named .jpg", "done"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "error"),
        (b"", "done"),
    ],
)
async def test_non_images_and_broken_images_never_fail_the_upload(
    api: Api, content: bytes, status: str
) -> None:
    res = await api.upload(content, filename="photo.jpg", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == status
    assert res["thumbnails"] == []
    assert await api.content(res["id"]) == content


async def test_truncated_jpeg_is_error(api: Api) -> None:
    data = jpeg(1000, 800)
    res = await api.upload(data[: len(data) // 2], filename="cut.jpg", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "error" and res["thumbnails"] == []


async def test_decompression_bomb_is_not_decoded(api: Api) -> None:
    res = await api.upload(png_bomb(), filename="bomb.png", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "done"
    assert res["thumbnails"] == []


async def test_small_images_are_not_upscaled(api: Api) -> None:
    res = await api.upload(jpeg(120, 80), filename="tiny.jpg", params=SYNC)
    [thumb] = res["thumbnails"]
    assert (thumb["width"], thumb["height"]) == (120, 80)


async def test_thumbnail_sync_waits_at_most_the_timeout(
    make_api: AppFactory, settings: Settings
) -> None:
    release = asyncio.Event()

    async def slow(path: Path) -> Rendered:
        await release.wait()
        return Rendered("done")

    quick = Settings(data_dir=settings.data_dir, jwt_secret=SECRET, thumb_sync_timeout=0.2)
    api = await make_api(settings_=quick, renderer=slow)
    res = await api.upload(jpeg(50, 50), params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "waiting"
    release.set()
    for _ in range(100):
        meta = (await (await api.meta(res["id"])).json())["resource"]
        if meta["metadata"]["thumbnails_status"] == "done":
            break
        await asyncio.sleep(0.02)
    assert meta["metadata"]["thumbnails_status"] == "done"


async def test_pending_jobs_resume_after_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    never = asyncio.Event()

    async def stuck(path: Path) -> Rendered:
        await never.wait()
        return Rendered("done")

    first = create_app(Settings(data_dir=data_dir, jwt_secret=SECRET), renderer=stuck)
    async with TestClient(TestServer(first)) as client:
        res = await Api(client).upload(jpeg(900, 600), filename="later.jpg")
        assert res["metadata"]["thumbnails_status"] == "waiting"
    # A new process on the same data: the job recorded with the upload is taken up again.
    second = create_app(Settings(data_dir=data_dir, jwt_secret=SECRET))
    async with TestClient(TestServer(second)) as client:
        api = Api(client)
        for _ in range(200):
            meta = (await (await api.meta(res["id"])).json())["resource"]
            if meta["metadata"]["thumbnails_status"] != "waiting":
                break
            await asyncio.sleep(0.05)
        assert meta["metadata"]["thumbnails_status"] == "done"
        assert meta["thumbnails"][0]["width"] == 600


async def test_job_time_limit_gives_error(make_api: AppFactory, settings: Settings) -> None:
    tight = Settings(data_dir=settings.data_dir, jwt_secret=SECRET, thumb_job_timeout=0.001)
    api = await make_api(settings_=tight)
    res = await api.upload(jpeg(2000, 1500), filename="slow.jpg", params=SYNC)
    assert res["metadata"]["thumbnails_status"] == "error"
    assert await api.content(res["id"]) != b""


async def test_many_uploads_at_once_all_get_thumbnails(api: Api) -> None:
    images = [jpeg(700 + i, 500) for i in range(8)]
    results = await asyncio.gather(
        *(api.upload(img, filename=f"{i}.jpg", params=SYNC) for i, img in enumerate(images))
    )
    assert all(r["metadata"]["thumbnails_status"] == "done" for r in results)
    for i, r in enumerate(results):
        thumb = r["thumbnails"][0]
        assert thumb["height"] == 400 and abs(thumb["width"] - (700 + i) * 0.8) <= 1


async def test_pixel_budget_bounds_concurrent_work() -> None:
    budget = PixelBudget(100)
    peak = 0

    async def job(pixels: int) -> None:
        nonlocal peak
        async with budget.hold(pixels):
            peak = max(peak, budget.in_use)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(job(p) for p in [60, 50, 40, 30, 30, 70, 10, 20]))
    assert peak <= 100 and budget.in_use == 0
    await job(500)  # larger than the budget: admitted alone, never deadlocks
    assert peak == 500


@pytest.mark.parametrize("office", [False, True])
def test_sniff_sends_only_possible_previews_to_workers(office: bool) -> None:
    def sniff(head: bytes) -> bool:
        return may_have_thumbnails(head, office=office)

    assert sniff(b"\xff\xd8\xff\xe0")
    assert sniff(b"\x89PNG\r\n\x1a\n....")
    assert sniff(b"II+\x00") and sniff(b"MM\x00+")  # BigTIFF
    assert sniff(b"....ftypavif") and sniff(b"\x00\x00\x00\x18ftypmp42")
    assert sniff(b"\x1a\x45\xdf\xa3 webm") and sniff(b"RIFF....AVI LIST")
    assert sniff(b"\xef\xbb\xbf  <svg>")
    assert sniff(b"junk%PDF-1.7")
    assert not sniff(bytes(range(256)))
    # Office documents and plain text only when a converter is installed.
    assert sniff(b"hello world") == office
    assert sniff(b"PK\x03\x04 zip") == office
    assert sniff(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 doc") == office
    assert sniff(b"{\\rtf1\\ansi hello}") == office


async def test_overwrite_remakes_thumbnails(api: Api) -> None:
    res = await api.upload(jpeg(1200, 600), filename="a.jpg", params=SYNC)
    assert res["thumbnails"][0]["height"] == 300
    app_tok = token(app="bot")
    resp = await api.chunk(res["id"], jpeg(400, 800), {**SYNC}, tok=app_tok, raw=False)
    body = (await resp.json())["resource"]
    assert body["metadata"]["thumbnails_status"] == "done"
    assert (body["thumbnails"][0]["width"], body["thumbnails"][0]["height"]) == (200, 400)
    assert body["thumbnails"][0]["url"] == res["thumbnails"][0]["url"]
    # A client revalidating its cached copy of the old thumbnail gets the new one, never a 304.
    old_etag = f'"{res["thumbnails"][0]["id"]}"'
    fresh = await api.client.get(
        res["thumbnails"][0]["url"], headers=api.headers(**{"If-None-Match": old_etag})
    )
    assert fresh.status == 200 and fresh.headers["Cache-Control"] == "private, no-cache"
    assert fresh.headers["ETag"] == f'"{body["thumbnails"][0]["id"]}"' != old_etag
    image = pyvips.Image.new_from_buffer(await fresh.read(), "")
    assert (image.width, image.height) == (200, 400)


async def test_thumbnail_of_unknown_index_is_404(api: Api) -> None:
    res = await api.upload(jpeg(300, 200), params=SYNC)
    resp = await api.client.get(res["thumbnails"][0]["url"][:-1] + "5", headers=api.headers())
    assert await error_of(resp) == (404, "this file has no thumbnail with that index")


async def test_a_job_that_keeps_crashing_is_given_up(tmp_path: Path) -> None:
    import sqlite3

    data_dir = tmp_path / "data"
    never = asyncio.Event()

    async def stuck(path: Path) -> Rendered:
        await never.wait()
        return Rendered("done")

    async with TestClient(
        TestServer(create_app(Settings(data_dir=data_dir, jwt_secret=SECRET), renderer=stuck))
    ) as client:
        res = await Api(client).upload(jpeg(300, 200), filename="poison.jpg")

    def crashed_three_times() -> None:
        with sqlite3.connect(data_dir / "meta.sqlite3") as db:
            db.execute("UPDATE thumbnail_jobs SET attempts = 3, state = 'running'")

    await asyncio.to_thread(crashed_three_times)
    async with TestClient(
        TestServer(create_app(Settings(data_dir=data_dir, jwt_secret=SECRET)))
    ) as client:
        for _ in range(100):  # the restarted runner claims it (a 4th attempt) and gives up
            meta = (await (await Api(client).meta(res["id"])).json())["resource"]
            if meta["metadata"]["thumbnails_status"] != "waiting":
                break
            await asyncio.sleep(0.05)
    assert meta["metadata"]["thumbnails_status"] == "error"


async def test_killing_an_overrunning_worker_harms_no_other_upload(
    make_api: AppFactory, settings: Settings
) -> None:
    """A job past its time limit has its worker killed; uploads running meanwhile (whose
    descriptors a careless kill could close) all succeed, byte-identical."""
    import os

    tight = Settings(data_dir=settings.data_dir, jwt_secret=SECRET, thumb_job_timeout=0.05)
    api = await make_api(settings_=tight)
    image = jpeg(1500, 1000)
    others = [os.urandom(70_000 + i) for i in range(24)]

    async def image_upload(i: int) -> None:
        res = await api.upload(image + bytes([i]), filename=f"{i}.jpg", params=SYNC)
        assert res["metadata"]["thumbnails_status"] in ("error", "done")

    async def plain_upload(data: bytes) -> None:
        res = await api.upload(data)
        assert await api.content(res["id"]) == data

    await asyncio.gather(*(image_upload(i) for i in range(6)), *(plain_upload(d) for d in others))
