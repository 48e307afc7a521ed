"""What interrupted writes leave in the bucket, found for ``blobstore fsck`` and removed by
``--repair``.

A large blob streams to ``data/<name>`` (one PUT, or a multipart upload) and is named by a
pointer at its ref at the end (:mod:`blobstore.s3`).  A process killed mid-way leaves either an
**incomplete multipart upload** (its parts take space but no listing of objects shows them; a
cut PUT leaves nothing) or a **data object no pointer names** (completed, never published, or
its blob deleted by gc between the pointer and the bytes).  Data objects are listed with
obstore; multipart uploads need ListMultipartUploads, ListParts and AbortMultipartUpload, which
obstore does not offer, so those three go through botocore's client, in a thread (they are
maintenance calls, never on a request's path).

A leftover's age is counted from the last bytes added to it (its newest part, or the object's
modification time), so an upload that is still streaming is not taken for a dead one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import obstore
from obstore.exceptions import BaseError

from blobstore.backends import S3Location
from blobstore.errors import StorageFailure, StoreUnavailable
from blobstore.port import Leftover
from blobstore.s3_errors import RETRY_AFTER_S

if TYPE_CHECKING:
    from obstore.store import S3Store

STAGED_OBJECT = "data object of an interrupted (or running) upload, named by no blob"
MULTIPART = "incomplete multipart upload of an interrupted (or running) upload"


def object_name(location: S3Location, key: str) -> str:
    return f"s3://{location.bucket}/{key}"


def upload_name(location: S3Location, key: str, upload_id: str) -> str:
    return f"s3://{location.bucket}/{key}?uploadId={upload_id}"


def parse_name(location: S3Location, name: str, staging_prefix: str) -> tuple[str, str | None]:
    """(key, upload id or None) of a leftover's name; refuses anything outside the staging keys
    of this location, so a repair can never remove a blob."""
    parts = urlsplit(name)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or parts.netloc != location.bucket:
        raise ValueError(f"not a leftover of this bucket: {name[:200]!r}")
    if not key.startswith(staging_prefix) or "/" in key[len(staging_prefix) :]:
        raise ValueError(f"not a staging key: {name[:200]!r}")
    ids = parse_qs(parts.query).get("uploadId")
    return key, ids[0] if ids else None


async def staged_objects(
    store: S3Store, location: S3Location, staging_prefix: str, named: set[str]
) -> list[Leftover]:
    """Objects under ``staging_prefix`` whose name no blob's pointer holds (``named``)."""
    out: list[Leftover] = []
    try:
        async for batch in obstore.list(store, prefix=staging_prefix, chunk_size=1000):
            for meta in batch:
                if meta["path"][len(staging_prefix) :] in named:
                    continue
                out.append(
                    Leftover(
                        object_name(location, meta["path"]),
                        STAGED_OBJECT,
                        int(meta["size"]),
                        meta["last_modified"].timestamp(),
                    )
                )
    except (BaseError, OSError) as exc:
        raise _unavailable(exc) from None
    return out


def _client(location: S3Location) -> Any:
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=location.endpoint,
        region_name=location.region,
        aws_access_key_id=location.access_key_id,
        aws_secret_access_key=location.secret_access_key,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def _unavailable(exc: BaseException) -> Exception:
    return StoreUnavailable(
        f"the blob store cannot be reached ({type(exc).__name__})", retry_after=RETRY_AFTER_S
    )


def _translate(exc: Exception) -> Exception:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status >= 500 or status == 429:
            return _unavailable(exc)
        code = exc.response.get("Error", {}).get("Code", "?")
        return StorageFailure(f"the blob store refused a request ({code}, HTTP {status})")
    if isinstance(exc, BotoCoreError):
        return _unavailable(exc)
    return exc


def _uploads_sync(location: S3Location, staging_prefix: str) -> list[Leftover]:
    client = _client(location)
    out: list[Leftover] = []
    pages = client.get_paginator("list_multipart_uploads")
    for page in pages.paginate(Bucket=location.bucket, Prefix=staging_prefix):
        for upload in page.get("Uploads", []):
            key, upload_id = upload["Key"], upload["UploadId"]
            written, size = upload["Initiated"].timestamp(), 0
            parts = client.get_paginator("list_parts")
            for part_page in parts.paginate(Bucket=location.bucket, Key=key, UploadId=upload_id):
                for part in part_page.get("Parts", []):
                    size += int(part["Size"])
                    written = max(written, part["LastModified"].timestamp())
            out.append(Leftover(upload_name(location, key, upload_id), MULTIPART, size, written))
    return out


async def multipart_uploads(location: S3Location, staging_prefix: str) -> list[Leftover]:
    try:
        return await asyncio.to_thread(_uploads_sync, location, staging_prefix)
    except Exception as exc:
        raise _translate(exc) from None


def _abort_sync(location: S3Location, key: str, upload_id: str) -> None:
    from botocore.exceptions import ClientError

    try:
        _client(location).abort_multipart_upload(
            Bucket=location.bucket, Key=key, UploadId=upload_id
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise


async def remove(store: S3Store, location: S3Location, name: str, staging_prefix: str) -> None:
    key, upload_id = parse_name(location, name, staging_prefix)
    if upload_id is None:
        try:
            await obstore.delete_async(store, key)
        except (BaseError, OSError) as exc:
            raise _unavailable(exc) from None
        return
    try:
        await asyncio.to_thread(_abort_sync, location, key, upload_id)
    except Exception as exc:
        raise _translate(exc) from None
