"""Which blob backend is configured, and the one function that opens it.

``FILESVC_BLOB_URL`` names it: unset or empty, the local backend in the data directory
(``D/blobs``); ``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=R`` a bucket on an
S3-compatible engine, signed with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.  The server,
the ``blobstore`` command and the tests all go through :func:`parse_blob_url` and
:func:`open_backend`, so they cannot disagree about where the blobs are.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from blobstore import layout
from blobstore.local import PUMP_THREADS, LocalBackend
from blobstore.port import BlobBackend

# The region AWS assumes when none is named; SeaweedFS ignores it but signs with it.
DEFAULT_REGION = "us-east-1"
# S3 bucket naming rules: 3-63 of lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._/-]{0,512}$")
_REGION_RE = re.compile(r"^[a-z0-9-]{1,32}$")
_S3_PARAMS = {"endpoint", "region"}


@dataclass(frozen=True)
class S3Location:
    """Where the blobs live: a bucket on an endpoint, with the credentials to sign requests."""

    bucket: str
    endpoint: str
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    prefix: str = ""


@dataclass(frozen=True)
class LocalLocation:
    """Blobs as files under ``root``."""

    root: Path


BlobLocation = LocalLocation | S3Location


class BadBlobUrl(ValueError):
    """``FILESVC_BLOB_URL`` cannot be used; the message says why in one line, with no secret."""


def parse_blob_url(url: str | None, data_dir: Path, env: Mapping[str, str]) -> BlobLocation:
    """Where the blobs are: ``url`` validated, or the data directory when it is unset."""
    if url is None or url.strip() == "":
        return LocalLocation(layout.blobs_dir(data_dir))
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise BadBlobUrl("FILESVC_BLOB_URL is not a URL") from None
    if parts.scheme != "s3":
        raise BadBlobUrl(
            "FILESVC_BLOB_URL must be s3://BUCKET?endpoint=http://HOST:PORT&region=R "
            "(or unset for the data directory)"
        )
    if parts.username or parts.password or "@" in parts.netloc:
        raise BadBlobUrl(
            "FILESVC_BLOB_URL must not carry credentials; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket):
        raise BadBlobUrl(f"FILESVC_BLOB_URL: {bucket[:80]!r} is not a valid S3 bucket name")
    prefix = parts.path.strip("/")
    if not _PREFIX_RE.match(prefix) or ".." in prefix.split("/"):
        raise BadBlobUrl("FILESVC_BLOB_URL: the key prefix may hold only A-Z a-z 0-9 . _ - /")
    params: dict[str, str] = {}
    for key, value in query:
        if key not in _S3_PARAMS:
            raise BadBlobUrl(f"FILESVC_BLOB_URL: unknown parameter {key[:40]!r}")
        if key in params:
            raise BadBlobUrl(f"FILESVC_BLOB_URL: parameter {key!r} given twice")
        params[key] = value
    endpoint = params.get("endpoint", "")
    ep = urlsplit(endpoint)
    if ep.scheme not in ("http", "https") or not ep.hostname or ep.path not in ("", "/"):
        raise BadBlobUrl("FILESVC_BLOB_URL: endpoint must be http(s)://HOST[:PORT]")
    try:
        ep.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadBlobUrl("FILESVC_BLOB_URL: endpoint has an invalid port") from None
    if ep.username or ep.password or ep.query or ep.fragment:
        raise BadBlobUrl("FILESVC_BLOB_URL: endpoint must be http(s)://HOST[:PORT]")
    region = params.get("region") or DEFAULT_REGION
    if not _REGION_RE.match(region):
        raise BadBlobUrl(f"FILESVC_BLOB_URL: {region[:40]!r} is not a region name")
    key_id, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise BadBlobUrl(
            "FILESVC_BLOB_URL is s3://: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return S3Location(
        bucket=bucket,
        endpoint=endpoint.rstrip("/"),
        region=region,
        access_key_id=key_id,
        secret_access_key=secret,
        prefix=f"{prefix}/" if prefix else "",
    )


def describe(location: BlobLocation) -> str:
    """Where the blobs are, for a log line (no credentials)."""
    if isinstance(location, LocalLocation):
        return str(location.root)
    return f"s3://{location.bucket}/{location.prefix} at {location.endpoint}"


async def open_backend(
    location: BlobLocation,
    *,
    min_free_bytes: int = 0,
    cache_bytes: int = 0,
    pump_threads: int = PUMP_THREADS,
) -> BlobBackend:
    """The backend for ``location``; the caller closes it.  Opening an S3 backend sends no
    request (an engine down at start shows as StoreUnavailable on first use).
    ``min_free_bytes`` is the local backend's free-space floor (see LocalBackend); an S3 engine
    manages its own space.  ``cache_bytes`` bounds an S3 backend's cache of small blobs
    (:mod:`blobstore.blobcache`; 0: none); the local backend has the kernel's page cache.
    ``pump_threads`` bounds the local backend's downloads sent by a thread each at once."""
    if isinstance(location, LocalLocation):
        return await asyncio.to_thread(
            functools.partial(
                LocalBackend,
                location.root,
                min_free_bytes=min_free_bytes,
                pump_threads=pump_threads,
            )
        )
    # Imported here: the S3 client library costs a few MiB of memory to load, which the
    # embedded default does not need.
    from blobstore.blobcache import BlobCache
    from blobstore.s3 import S3Backend

    return S3Backend(location, cache=BlobCache(cache_bytes) if cache_bytes > 0 else None)
