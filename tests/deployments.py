"""The environments real-server tests run ``filesvc serve`` in: the embedded default (nothing to
set), S3 blobs, and PostgreSQL + S3, the scaled-out deployment that several instances share."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

from bench.pgserver import PgServer
from bench.seaweedfs import SeaweedFS
from blobstore.s3 import S3Location
from tests.helpers import MASTER_KEY


def s3_url(loc: S3Location) -> str:
    """The ``FILESVC_BLOB_URL`` of a test's corner of the bucket."""
    prefix = f"/{loc.prefix.rstrip('/')}" if loc.prefix else ""
    return f"s3://{loc.bucket}{prefix}?endpoint={loc.endpoint}&region={loc.region}"


def s3_env(seaweedfs: SeaweedFS, loc: S3Location) -> dict[str, str]:
    """Blobs in S3 (metadata stays in the data directory's SQLite), and the master key every
    instance and the blobstore command share."""
    return {**seaweedfs.env, "FILESVC_BLOB_URL": s3_url(loc), "FILESVC_MASTER_KEY": MASTER_KEY}


def scaled_env(pg: PgServer, seaweedfs: SeaweedFS, loc: S3Location) -> dict[str, str]:
    """PostgreSQL (a new, empty database) + S3: what every instance of one service shares."""
    return {**s3_env(seaweedfs, loc), "FILESVC_DB_URL": pg.new_database()}


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.HTTPError, OSError):
        return False


async def wait_ready(base_url: str, timeout: float = 60.0) -> None:
    """Until ``/readyz`` answers 200 (PostgreSQL connected and migrated, S3 answering)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_ready, base_url):
        if time.monotonic() > deadline:
            raise AssertionError(f"{base_url} not ready within {timeout:g} s")
        await asyncio.sleep(0.1)
