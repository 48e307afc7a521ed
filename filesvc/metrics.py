"""Prometheus metrics, in a registry of the app's own (tests build many apps in one process).

Names follow Prometheus' conventions: a ``filesvc_`` prefix, base units (seconds, bytes) in the
name, ``_total`` on counters.  No ``_created`` series: they double the series count and no
dashboard of ours reads them.  Process metrics (CPU seconds, resident and virtual memory, open
and maximum descriptors, start time) come from the client library's process collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blobstore.blobcache import BlobCache

# The client library leaves this one untyped.
_disable_created: Callable[[], None] = disable_created_metrics

# Request latency buckets, seconds: 1 ms (a metadata read) to 30 s (a large upload's last chunk).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Thumbnail job buckets, seconds: a header-only refusal takes milliseconds, a 10-page PDF or a
# large PNG seconds, and a job is killed at FILESVC_THUMB_JOB_TIMEOUT (60 s by default).
THUMBNAIL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Request series whose children are kept looked up (routes x methods x statuses in use).
REQUEST_SERIES_KEPT = 1024


class BlobCacheCollector(Collector):
    """The S3 backend's cache of small blobs, read at each scrape (its counters are plain ints
    on the request path)."""

    def __init__(self, cache: BlobCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        cache, stats = self._cache, self._cache.stats
        yield CounterMetricFamily(
            "filesvc_blob_cache_hits", "Blob reads served from the cache", value=stats.hits
        )
        yield CounterMetricFamily(
            "filesvc_blob_cache_misses",
            "Blob reads the cache did not hold (read from the store)",
            value=stats.misses,
        )
        yield CounterMetricFamily(
            "filesvc_blob_cache_evictions",
            "Blobs dropped from the cache to stay within its bound",
            value=stats.evictions,
        )
        yield GaugeMetricFamily(
            "filesvc_blob_cache_bytes", "Bytes held by the blob cache", value=cache.size
        )
        yield GaugeMetricFamily(
            "filesvc_blob_cache_blobs", "Blobs held by the blob cache", value=len(cache)
        )


class Metrics:
    """The service's counters, histograms and gauges."""

    def __init__(self) -> None:
        _disable_created()  # process-wide; every registry of ours wants it
        # auto_describe off: it would read /proc on the event loop to learn the process
        # collector's names at registration.
        self.registry = CollectorRegistry(auto_describe=False)
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "filesvc_http_requests_total",
            "HTTP requests by route template, method and status (499: the client went away)",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "filesvc_http_request_duration_seconds",
            "Time from the request's headers to the handler's answer, by route template",
            ["route", "method"],
            registry=self.registry,
            buckets=REQUEST_BUCKETS,
        )
        self.received_bytes = Counter(
            "filesvc_http_received_bytes_total",
            "Request body bytes received, on every route",
            registry=self.registry,
        )
        self.sent_bytes = Counter(
            "filesvc_http_sent_bytes_total",
            "Response body bytes sent, on every route",
            registry=self.registry,
        )
        self.uploads = Counter(
            "filesvc_uploads_total", "Chunks and single uploads stored", registry=self.registry
        )
        self.upload_bytes = Counter(
            "filesvc_upload_bytes_total", "Bytes received in stored uploads", registry=self.registry
        )
        self.download_bytes = Counter(
            "filesvc_download_bytes_total", "Bytes of file content sent", registry=self.registry
        )
        self.dedup_hits = Counter(
            "filesvc_dedup_hits_total",
            "Uploads whose bytes were already stored",
            registry=self.registry,
        )
        self.thumbnail_queue = Gauge(
            "filesvc_thumbnail_jobs_queued",
            "Thumbnail jobs waiting for a worker",
            registry=self.registry,
        )
        self.thumbnail_jobs = Counter(
            "filesvc_thumbnail_jobs_total",
            "Thumbnail jobs finished, by outcome (done, error, superseded)",
            ["outcome"],
            registry=self.registry,
        )
        self.thumbnail_duration = Histogram(
            "filesvc_thumbnail_job_duration_seconds",
            "Time a thumbnail job took, by outcome",
            ["outcome"],
            registry=self.registry,
            buckets=THUMBNAIL_BUCKETS,
        )

    def request_series(self, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        """The request counter and latency children of one (route, method, status), looked up
        once: ``labels()`` takes a lock and builds its key on every call.  Routes and statuses
        are few; past REQUEST_SERIES_KEPT combinations (odd methods) they are not kept."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            if len(self._series) < REQUEST_SERIES_KEPT:
                self._series[key] = series
        return series

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """Read the thumbnail queue's depth at each scrape."""
        self.thumbnail_queue.set_function(depth)

    def watch_blob_cache(self, cache: BlobCache) -> None:
        """Report the blob cache's counters at each scrape."""
        self.registry.register(BlobCacheCollector(cache))

    def thumbnail_job(self, outcome: str, seconds: float) -> None:
        """Count one finished thumbnail job."""
        self.thumbnail_jobs.labels(outcome).inc()
        self.thumbnail_duration.labels(outcome).observe(seconds)
