"""``start_seaweedfs`` hands over a SeaweedFS whose buckets answer signed requests: a test's first
request (a readiness probe, a listing) never meets the 404 `weed mini` gives while it is still
creating its buckets, after it already answers anonymous requests."""

from __future__ import annotations

from pathlib import Path

from bench.seaweedfs import KEY_ID, REGION, SECRET_KEY, start_seaweedfs
from blobstore.s3 import S3Backend, S3Location


async def test_buckets_answer_signed_requests_once_started(tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path, ["first-bucket", "second-bucket"])
    try:
        for bucket in ("first-bucket", "second-bucket"):
            location = S3Location(bucket, server.endpoint, REGION, KEY_ID, SECRET_KEY)
            backend = S3Backend(location)
            try:
                await backend.check()
            finally:
                await backend.close()
    finally:
        server.stop()
