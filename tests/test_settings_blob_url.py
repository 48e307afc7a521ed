"""`FILESVC_BLOB_URL`: parsed once, hostile values refused with one line and exit 2, by the
server and the `blobstore` command alike, and the configured backend opened by one function."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blobstore.backends import LocalLocation, open_backend
from blobstore.s3 import S3Backend, S3Location
from filesvc.settings import ConfigError, Settings
from tests.helpers import MASTER_KEY, SECRET

CREDS = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret-value"}
GOOD = "s3://bucket-1?endpoint=http://127.0.0.1:8333&region=eu-west-1"


def settings(url: str | None, tmp_path: Path, **env: str) -> Settings:
    # A store in a bucket is shared by instances: they all need the same master key.
    full = {"FILESVC_JWT_SECRET": SECRET, "FILESVC_MASTER_KEY": MASTER_KEY, **CREDS, **env}
    if url is not None:
        full["FILESVC_BLOB_URL"] = url
    return Settings.from_env(full, data_dir=tmp_path)


def test_default_is_the_data_directory(tmp_path: Path) -> None:
    assert settings(None, tmp_path).blob_location() == LocalLocation(tmp_path / "blobs")
    assert settings("", tmp_path).blob_location() == LocalLocation(tmp_path / "blobs")


def test_s3_url_with_prefix_and_credentials_from_the_environment(tmp_path: Path) -> None:
    loc = settings(
        "s3://bucket-1/tenant/a/?endpoint=http://127.0.0.1:8333/&region=eu-west-1", tmp_path
    ).blob_location()
    assert loc == S3Location(
        bucket="bucket-1",
        endpoint="http://127.0.0.1:8333",
        region="eu-west-1",
        access_key_id="key",
        secret_access_key="secret-value",
        prefix="tenant/a/",
    )
    assert "secret-value" not in repr(loc)
    no_region = settings("s3://bucket-1?endpoint=https://s3.example", tmp_path).blob_location()
    assert isinstance(no_region, S3Location) and no_region.region == "us-east-1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "/srv/blobs",
            "FILESVC_BLOB_URL must be s3://BUCKET?endpoint=http://HOST:PORT&region=R "
            "(or unset for the data directory)",
        ),
        (
            "gs://bucket-1?endpoint=http://h:1",
            "FILESVC_BLOB_URL must be s3://BUCKET?endpoint=http://HOST:PORT&region=R "
            "(or unset for the data directory)",
        ),
        (
            "s3://AK:SK@bucket-1?endpoint=http://h:1",
            "FILESVC_BLOB_URL must not carry credentials; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        (
            "s3://Bad_Bucket?endpoint=http://h:1",
            "FILESVC_BLOB_URL: 'Bad_Bucket' is not a valid S3 bucket name",
        ),
        ("s3://?endpoint=http://h:1", "FILESVC_BLOB_URL: '' is not a valid S3 bucket name"),
        ("s3://bucket-1", "FILESVC_BLOB_URL: endpoint must be http(s)://HOST[:PORT]"),
        (
            "s3://bucket-1?endpoint=ftp://h:1",
            "FILESVC_BLOB_URL: endpoint must be http(s)://HOST[:PORT]",
        ),
        (
            "s3://bucket-1?endpoint=http://h:1/path",
            "FILESVC_BLOB_URL: endpoint must be http(s)://HOST[:PORT]",
        ),
        ("s3://bucket-1?endpoint=http://h:99999", "FILESVC_BLOB_URL: endpoint has an invalid port"),
        (
            "s3://bucket-1?endpoint=http://u:p@h:1",
            "FILESVC_BLOB_URL: endpoint must be http(s)://HOST[:PORT]",
        ),
        (
            "s3://bucket-1?endpoint=http://h:1&acl=public",
            "FILESVC_BLOB_URL: unknown parameter 'acl'",
        ),
        (
            "s3://bucket-1?endpoint=http://h:1&endpoint=http://evil:2",
            "FILESVC_BLOB_URL: parameter 'endpoint' given twice",
        ),
        (
            "s3://bucket-1?endpoint=http://h:1&region=EU WEST",
            "FILESVC_BLOB_URL: 'EU WEST' is not a region name",
        ),
        (
            "s3://bucket-1/../x?endpoint=http://h:1",
            "FILESVC_BLOB_URL: the key prefix may hold only A-Z a-z 0-9 . _ - /",
        ),
        (
            "s3://bucket-1/a%00b?endpoint=http://h:1",
            "FILESVC_BLOB_URL: the key prefix may hold only A-Z a-z 0-9 . _ - /",
        ),
        ("s3://bucket-1?endpoint", "FILESVC_BLOB_URL is not a URL"),
    ],
)
def test_hostile_urls_are_one_line_errors(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        settings(url, tmp_path)
    assert str(err.value) == message
    assert "\n" not in message


def test_s3_without_credentials_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        settings(GOOD, tmp_path, AWS_SECRET_ACCESS_KEY="")
    assert str(err.value) == (
        "FILESVC_BLOB_URL is s3://: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


async def test_one_function_opens_each_backend(tmp_path: Path) -> None:
    local = await open_backend(settings(None, tmp_path).blob_location())
    assert type(local).__name__ == "LocalBackend" and (tmp_path / "blobs" / "tmp").is_dir()
    await local.close()
    remote = await open_backend(settings(GOOD, tmp_path).blob_location())
    assert isinstance(remote, S3Backend) and remote.location.bucket == "bucket-1"
    await remote.close()


BAD = "s3://bucket-1?endpoint=http://h:1&acl=public"


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CREDS, "FILESVC_JWT_SECRET": SECRET, "FILESVC_BLOB_URL": BAD}
    return subprocess.run(
        [str(Path(sys.executable).parent / argv[0]), *argv[1:], "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_server_with_a_bad_url_exits_2_with_one_line(tmp_path: Path) -> None:
    done = _run(["filesvc", "serve", "--port", "0"], tmp_path)
    assert done.returncode == 2
    assert done.stderr == "filesvc: FILESVC_BLOB_URL: unknown parameter 'acl'\n"


@pytest.mark.parametrize("command", ["fsck", "gc", "stat"])
def test_blobstore_with_a_bad_url_exits_2_with_one_line(command: str, tmp_path: Path) -> None:
    done = _run(["blobstore", command], tmp_path)
    assert done.returncode == 2
    assert done.stderr == "blobstore: FILESVC_BLOB_URL: unknown parameter 'acl'\n"
