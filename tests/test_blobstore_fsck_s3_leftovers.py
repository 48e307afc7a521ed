"""What an interrupted large upload leaves in S3 (a real SeaweedFS): an incomplete multipart
upload, or a data object that no blob's pointer names.  fsck reports both as temp
leftovers (hints, with size and age), ``--repair`` aborts or deletes the old ones and leaves the
young ones, and a leftover's name can never make the repair touch anything but staging keys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blobstore.engine.base import Engine
from blobstore.fsck import Checker, Kind, Severity
from blobstore.repair import Repairer
from blobstore.s3 import DATA, PART_SIZE, S3Backend, S3Location, S3Staging
from blobstore.s3_leftovers import MULTIPART, STAGED_OBJECT, parse_name
from tests.engines import migrated


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Engine]:
    async with migrated(None, tmp_path) as engine:
        yield engine


async def interrupted(backend: S3Backend, *, staged: bool) -> S3Staging:
    """A large blob's staging as a kill leaves it: past one part, never published."""
    staging = await backend.stage()
    await staging.write(os.urandom(PART_SIZE + 4096))
    if staged:
        await staging._finish_upload()
    else:
        await staging.write(os.urandom(PART_SIZE))  # a part goes up; the upload stays open
    return staging


async def leftovers(db: Engine, backend: S3Backend) -> list[tuple[str, str, int]]:
    found = [f async for f in Checker(db, backend).run() if f.kind is Kind.TEMP_LEFTOVER]
    assert all(f.severity is Severity.HINT and (f.age or 0) < 600 for f in found)
    return sorted((f.message, f.path or "", f.size or 0) for f in found)


async def test_fsck_finds_and_repair_removes_what_a_killed_upload_left(
    db: Engine, s3_backend: S3Backend
) -> None:
    await interrupted(s3_backend, staged=True)
    await interrupted(s3_backend, staged=False)
    found = await leftovers(db, s3_backend)
    [(what_staged, _, staged_size), (what_upload, _, upload_size)] = found
    assert (what_staged, staged_size) == (STAGED_OBJECT, PART_SIZE + 4096)
    # The parts go up in the background, some in flight at once: a kill leaves the whole parts
    # that landed; the rest was still in memory.
    assert what_upload == MULTIPART
    assert upload_size in (PART_SIZE, 2 * PART_SIZE)
    staged, upload = found[0][1], found[1][1]
    assert staged.startswith(f"s3://{s3_backend.location.bucket}/{s3_backend.key(DATA, '')}")
    assert "?uploadId=" in upload and "?" not in staged

    findings = [f async for f in Checker(db, s3_backend).run()]
    young = await Repairer(db, s3_backend, quarantine=Path("/nonexistent")).apply(findings)
    assert young.removed_temp == 0 and len(young.left) == 2
    assert len(await leftovers(db, s3_backend)) == 2

    report = await Repairer(db, s3_backend, quarantine=Path("/nonexistent"), temp_min_age=0).apply(
        findings
    )
    assert (report.removed_temp, report.removed_temp_bytes) == (2, staged_size + upload_size)
    assert await leftovers(db, s3_backend) == []
    # Removing again is not an error (another repair got there first).
    for _, name, _ in found:
        await s3_backend.remove_leftover(name)


@pytest.mark.parametrize(
    "name",
    [
        "s3://other-bucket/data/abc",
        "s3://filesvc-test/blobs/xxh3_128-00000000000000000000000000000000",
        "s3://filesvc-test/data/../blobs/x",
        "s3://filesvc-test/data/a/b",
        "file:///etc/passwd",
    ],
)
def test_a_leftover_name_outside_the_staging_keys_is_refused(name: str) -> None:
    location = S3Location("filesvc-test", "http://127.0.0.1:1", "us-east-1", "k", "s")
    with pytest.raises(ValueError, match="not a"):
        parse_name(location, name, "data/")
