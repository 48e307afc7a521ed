"""/metrics: Prometheus naming, no _created series, process, thumbnail, byte and blob cache
counters."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import pyvips
from prometheus_client.parser import text_string_to_metric_families

from filesvc.settings import Settings
from filesvc.thumbnails.result import Rendered
from tests.conftest import AppFactory
from tests.helpers import Api

SYNC = {"thumbnail_sync": "1"}


def jpeg(width: int, height: int) -> bytes:
    return bytes(pyvips.Image.black(width, height).jpegsave_buffer())


async def scrape(api: Api) -> tuple[str, dict[str, float]]:
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return text, samples


async def test_names_units_and_no_created_series(api: Api) -> None:
    await api.upload(b"counted")
    text, samples = await scrape(api)
    assert "_created" not in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert name in samples, name
    for family in text_string_to_metric_families(text):
        if family.name.startswith("filesvc_") and family.type == "counter":
            assert family.documentation, family.name
        # Base units only: no milliseconds, kilobytes or the like in a name.
        assert not any(unit in family.name for unit in ("_ms", "millis", "_kb", "_mb")), family.name
    assert samples["filesvc_uploads_total"] == 1
    assert (
        samples[
            'filesvc_http_requests_total{method="POST",route="/internal/services/files/v1/companies/{company_id}/files",status="200"}'
        ]
        == 1
    )


async def test_bytes_in_and_out_are_counted(api: Api) -> None:
    body = b"x" * 5000
    first_text, first = await scrape(api)
    res = await api.upload(body)
    resp = await api.download(res["id"])
    assert await resp.read() == body
    _, second = await scrape(api)
    received = (
        second["filesvc_http_received_bytes_total"] - first["filesvc_http_received_bytes_total"]
    )
    assert len(body) < received < len(body) + 1000  # the multipart framing around it
    sent = second["filesvc_http_sent_bytes_total"] - first["filesvc_http_sent_bytes_total"]
    upload_answer = len(str(res)) // 2  # a JSON resource: a few hundred bytes
    assert sent > len(first_text.encode()) + len(body) + upload_answer
    assert second["filesvc_download_bytes_total"] == len(body)


@pytest.mark.blob_files
async def test_the_blob_cache_is_counted_where_the_store_has_one(
    api: Api, settings: Settings
) -> None:
    first = (await api.upload(b"a" * 3000))["id"]
    second = (await api.upload(b"b" * 3000))["id"]
    for file_id in (first, first, second):
        assert len(await api.content(file_id)) == 3000
    _, samples = await scrape(api)
    if settings.blob is None:  # local disk: the kernel's page cache, no cache of ours
        assert not any(name.startswith("filesvc_blob_cache") for name in samples)
        return
    # Both were kept on upload; every download was served from memory.
    assert samples["filesvc_blob_cache_hits_total"] == 3
    assert samples["filesvc_blob_cache_misses_total"] == 0
    assert samples["filesvc_blob_cache_evictions_total"] == 0
    assert samples["filesvc_blob_cache_blobs"] == 2
    assert samples["filesvc_blob_cache_bytes"] > 6000  # sealed: the stored bytes, a tag more


async def test_thumbnail_jobs_by_outcome_with_durations(api: Api) -> None:
    await api.upload(jpeg(300, 200), params=SYNC)
    await api.upload(b"\xff\xd8\xff\xe0" + b"\x00" * 100, filename="broken.jpg", params=SYNC)
    _, samples = await scrape(api)
    assert samples['filesvc_thumbnail_jobs_total{outcome="done"}'] == 1
    assert samples['filesvc_thumbnail_jobs_total{outcome="error"}'] == 1
    assert samples['filesvc_thumbnail_job_duration_seconds_count{outcome="done"}'] == 1
    assert samples['filesvc_thumbnail_job_duration_seconds_sum{outcome="done"}'] > 0
    assert samples["filesvc_thumbnail_jobs_queued"] == 0


async def test_thumbnail_queue_depth(make_api: AppFactory, settings: Settings) -> None:
    release = asyncio.Event()

    async def stuck(path: Path) -> Rendered:
        await release.wait()
        return Rendered("done")

    one_worker = dataclasses.replace(settings, thumb_workers=1)
    api = await make_api(settings_=one_worker, renderer=stuck)
    for width in (100, 101, 102):
        await api.upload(jpeg(width, 50))
    for _ in range(100):
        _, samples = await scrape(api)
        if samples["filesvc_thumbnail_jobs_queued"] == 2:
            break
        await asyncio.sleep(0.02)
    assert samples["filesvc_thumbnail_jobs_queued"] == 2  # one with the worker, two waiting
    release.set()
