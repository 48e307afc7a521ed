"""Prometheus metrics, in a registry of the app's own (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The service's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "filesvc_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "filesvc_request_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
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
        self.thumbnail_jobs = Counter(
            "filesvc_thumbnail_jobs",
            "Thumbnail jobs finished, by outcome: thumbnails made, none (not previewable or"
            " refused by a limit), error (the file could not be rendered)",
            ["outcome"],
            registry=self.registry,
        )
        self.thumbnail_seconds = Histogram(
            "filesvc_thumbnail_job_seconds",
            "Time from a thumbnail job's start to its result",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.thumbnail_queue = Gauge(
            "filesvc_thumbnail_queue",
            "Thumbnail jobs not finished yet, in every process sharing the database",
            registry=self.registry,
        )
