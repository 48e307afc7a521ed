"""Open each blob backend for a test: in memory, on local disk, or on the run's SeaweedFS (with
and without the cache of small blobs the server gives it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from blobstore.blobcache import BlobCache
from blobstore.local import LocalBackend
from blobstore.memory import MemoryBackend
from blobstore.port import BlobBackend
from blobstore.refs import BlobRef
from blobstore.s3 import S3Backend
from blobstore.sealed import seal_backend
from tests.engines import key_ring

KINDS = ["memory", "local", "s3", "s3-cached"]


@asynccontextmanager
async def opened_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BlobBackend]:
    """The backend ``request.param`` names (one of :data:`KINDS`), closed after use."""
    chosen: BlobBackend
    if request.param == "memory":
        chosen = MemoryBackend()
    elif request.param == "s3":
        chosen = S3Backend(request.getfixturevalue("s3_location"))
    elif request.param == "s3-cached":
        chosen = S3Backend(request.getfixturevalue("s3_location"), cache=BlobCache(8 << 20))
    else:
        chosen = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        yield chosen
    finally:
        await chosen.close()


def local_backend_holding(root: Path, ref: BlobRef, content: bytes) -> LocalBackend:
    """A local backend at ``root`` whose blob ``ref`` is ``content``, written straight into its
    file (blocking: run it in a thread from a test)."""
    backend = LocalBackend(root)
    path = backend.local_path(ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return backend


@asynccontextmanager
async def local_backend(root: Path) -> AsyncIterator[LocalBackend]:
    """A local backend storing under ``root``, closed after use."""
    backend = await asyncio.to_thread(LocalBackend, root)
    try:
        yield backend
    finally:
        await backend.close()


@asynccontextmanager
async def plain_or_sealed(
    kind: str, inner: BlobBackend, data_dir: Path
) -> AsyncIterator[BlobBackend]:
    """``inner`` itself (``kind`` "plain"), or ``inner`` sealed under a fresh key ring whose
    data key is recorded in ``data_dir`` ("sealed")."""
    if kind == "plain":
        yield inner
        return
    async with key_ring(data_dir) as keys:
        yield seal_backend(inner, keys, sealing=True)
