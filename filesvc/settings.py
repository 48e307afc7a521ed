"""Settings: one frozen object, built once from flags and ``FILESVC_*`` environment variables.

Nothing else in the service reads the environment.  Every limit is a named constant with the
reason for its value.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from blobstore.backends import BadBlobUrl, BlobLocation, LocalLocation, parse_blob_url
from blobstore.engine import DbTarget, parse_db_url
from blobstore.engine.base import BadDatabaseUrl
from blobstore.layout import blobs_dir
from filesvc.thumbnails.limits import (
    DEFAULT_BOX_HEIGHT,
    DEFAULT_BOX_WIDTH,
    DEFAULT_MAX_PIXELS,
)

# Largest single upload (one request's file part or raw body).  Large enough for any video a
# workplace shares, small enough that one client cannot fill the disk by accident.
DEFAULT_MAX_UPLOAD_BYTES = 16 << 30
# resumable.js splits into 1 MiB+ chunks; 100k chunks is a 100 GiB file: far past any real use,
# and it bounds the size of one manifest.
MAX_TOTAL_CHUNKS = 100_000
DEFAULT_THUMB_BOX = (DEFAULT_BOX_WIDTH, DEFAULT_BOX_HEIGHT)
# API.md: thumbnail_sync waits at most 10 seconds by default.
DEFAULT_THUMB_SYNC_TIMEOUT = 10.0
DEFAULT_THUMB_MAX_PIXELS = DEFAULT_MAX_PIXELS
# Pixels being decoded at once across thumbnail jobs (a semaphore counted in pixels): two images
# at the pixel limit, or many phone photos.  Decoded RGBA costs 4 bytes a pixel at worst.
DEFAULT_THUMB_PIXEL_BUDGET = 200_000_000
# Worker processes for thumbnails: one per core on the 2-core machines this runs on.
DEFAULT_THUMB_WORKERS = 2
# A thumbnail job that takes longer than this is abandoned (status error) and its worker killed:
# no image, video frame or office conversion (which stops itself at 30 s) needs more.
DEFAULT_THUMB_JOB_TIMEOUT = 60.0
# tus uploads not written to for this long expire (gc --abandon-after defaults to the same day).
DEFAULT_TUS_EXPIRY = 24 * 60 * 60.0
# The LibreOffice program that converts office documents, looked up on PATH; "" turns office
# previews off.
DEFAULT_OFFICE_CONVERTER = "soffice"
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
# A body read that waits longer than this for the client fails the upload with 408: long enough
# for a phone on a bad network to stall and recover, short enough that a dead client does not pin
# a handler and a temp file.
DEFAULT_BODY_IDLE_TIMEOUT = 60.0
# Uploads streaming at once before new ones are refused with 503: each holds up to two 1 MiB
# write batches, a temp file and a socket, so 256 bound that to about half a GiB.
DEFAULT_MAX_CONCURRENT_UPLOADS = 256
# A thumbnail job's lease outlives its time limit by this much, so a live claimer always finishes
# (or is killed at the limit) before another process may take the job over.
THUMB_LEASE_MARGIN = 30.0
# Below this much free space on the data directory's file system new uploads are refused (507)
# before a byte is written, leaving room for the metadata writes (commits, deletes, thumbnails) of
# what is already stored; a quarter GiB is far more than those need and little on any real disk.
DEFAULT_MIN_FREE_BYTES = 256 << 20
# Space preallocated in <data>/space-reserve and given back only when free space is exhausted, so
# a DELETE can always commit.  A DELETE writes a few database pages (measured under 1 MiB on a full
# disk, see tests/test_api_full_disk.py); 16 MiB covers that many times over, and a crash recovery.
DEFAULT_DISK_RESERVE_BYTES = 16 << 20
# Uploads one caller (a company and a user or application) may stream at once before its next one
# is refused with 429: a quarter of the slots, so no fewer than four callers can take them all,
# while an application importing in bulk keeps the 64 parallel uploads `bench` measures with (a
# browser never opens more than 6 connections to a host).
DEFAULT_MAX_UPLOADS_PER_CALLER = 64
# A request's line and headers must have arrived this long after its first byte (after the
# connection opened, for a connection's first request), or the connection is closed: a real head
# is one packet, and 20 s covers a phone's retransmissions on a bad link (Apache's default is
# 20-40 s) while a client trickling header bytes holds its socket no longer.
DEFAULT_HEAD_TIMEOUT = 20.0
# A keep-alive connection with no request in progress is closed after this long: above the 60 s
# idle timeout of nginx's upstream keepalive and of common load balancers, so a proxy never reuses
# a connection the moment we close it, and far below aiohttp's own default of an hour.
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
# Slowest body accepted, in bytes a second over the window below: a few times below the uplink of
# the slowest mobile data still in use (GPRS, a few KB/s), yet holding an upload slot now costs a
# client real bandwidth instead of one byte a second.
DEFAULT_BODY_MIN_RATE = 1024
# The body rate is measured over this much time spent waiting for the client, so a stall of up to
# about 25 s inside an otherwise working upload passes.
DEFAULT_BODY_RATE_WINDOW = 30.0
# Waiting time at the start of a body that is never judged (TCP slow start, a radio waking up);
# the first window is measured after it.
DEFAULT_BODY_RATE_GRACE = 10.0
# Server processes `filesvc serve` runs on one port.  One: measured on this 2-core machine, a
# second process on the same data directory added no throughput (they serialise on the SQLite
# writer and the shared sync), see README.  Past 64 is a typo, not a machine.
DEFAULT_WORKERS = 1
MAX_WORKERS = 64
SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name, not a secret


class ConfigError(Exception):
    """A setting cannot be used; the message is one line for the operator, with no secret.
    ``filesvc serve`` prints it and exits with status 2."""


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{key} must be an integer, got {raw!r}") from None


def _size(env: Mapping[str, str], key: str, default: int) -> int:
    value = _int(env, key, default)
    if value < 0:
        raise SystemExit(f"{key} must be a byte count of 0 or more, got {value}")
    return value


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{key} must be a number, got {raw!r}") from None


def _origins(raw: str) -> tuple[str, ...]:
    """``FILESVC_CORS_ORIGINS``: comma-separated origins (``https://app.example``) or ``*``."""
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def _check_slow_client_limits(settings: Settings) -> None:
    """A zero deadline or window would close every connection or divide by zero."""
    for key, value, low in (
        ("FILESVC_MAX_UPLOADS_PER_CALLER", settings.max_uploads_per_caller, 1),
        ("FILESVC_HEAD_TIMEOUT", settings.head_timeout, 0.1),
        ("FILESVC_KEEPALIVE_TIMEOUT", settings.keepalive_timeout, 0.1),
        ("FILESVC_BODY_MIN_RATE", settings.body_min_rate, 0),  # 0 turns the rate rule off
        ("FILESVC_BODY_RATE_WINDOW", settings.body_rate_window, 0.1),
        ("FILESVC_BODY_RATE_GRACE", settings.body_rate_grace, 0),
    ):
        if value < low:
            raise SystemExit(f"{key} must be at least {low:g}, got {value:g}")


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with."""

    data_dir: Path
    jwt_secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    max_uploads_per_caller: int = DEFAULT_MAX_UPLOADS_PER_CALLER
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    body_min_rate: int = DEFAULT_BODY_MIN_RATE
    body_rate_window: float = DEFAULT_BODY_RATE_WINDOW
    body_rate_grace: float = DEFAULT_BODY_RATE_GRACE
    sqlite_synchronous: str = "FULL"
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    disk_reserve_bytes: int = DEFAULT_DISK_RESERVE_BYTES
    # When set, GET /metrics needs "Authorization: Bearer <this>" (scrapers only, never tenants).
    metrics_token: str | None = field(default=None, repr=False)
    thumb_box: tuple[int, int] = DEFAULT_THUMB_BOX
    thumb_sync_timeout: float = DEFAULT_THUMB_SYNC_TIMEOUT
    thumb_max_pixels: int = DEFAULT_THUMB_MAX_PIXELS
    thumb_workers: int = DEFAULT_THUMB_WORKERS
    thumb_pixel_budget: int = DEFAULT_THUMB_PIXEL_BUDGET
    thumb_job_timeout: float = DEFAULT_THUMB_JOB_TIMEOUT
    # The LibreOffice program for office documents (a name on PATH or a path; resolved at start);
    # None: turned off.
    office_converter: str | None = None
    # Where blobs live (``FILESVC_BLOB_URL``); None: the data directory's ``blobs/``.
    blob: BlobLocation | None = None
    # Server processes on one port, and which one this is (None: not started by a supervisor).
    workers: int = DEFAULT_WORKERS
    worker_index: int | None = None
    tus_expiry: float = DEFAULT_TUS_EXPIRY
    cors_origins: tuple[str, ...] = ()

    def blob_location(self) -> BlobLocation:
        """The configured blob backend's location."""
        return self.blob or LocalLocation(blobs_dir(self.data_dir))

    # FILESVC_DB_URL; None: SQLite in the data directory.
    db_url: str | None = field(default=None, repr=False)

    @property
    def db_target(self) -> DbTarget:
        """The metadata engine (raises BadDatabaseUrl for a URL that names none)."""
        return parse_db_url(self.db_url, self.data_dir)

    @property
    def thumb_lease(self) -> float:
        """How long a claimed thumbnail job is this process's before others may take it."""
        return self.thumb_job_timeout + THUMB_LEASE_MARGIN

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        data_dir: Path | None = None,
        workers: int | None = None,
    ) -> Settings:
        """Flags win over ``FILESVC_*`` variables, which win over defaults.  Resolves the JWT
        secret: ``FILESVC_JWT_SECRET``, else a random one kept in the data directory (0600).
        Raises ConfigError for a ``FILESVC_BLOB_URL`` that cannot be used."""
        env = os.environ if env is None else env
        directory = (data_dir or Path(env.get("FILESVC_DATA_DIR") or "./data")).absolute()
        db_url = env.get("FILESVC_DB_URL") or None
        try:  # a bad URL fails here, before anything is created
            parse_db_url(db_url, directory)
        except BadDatabaseUrl as exc:
            raise ConfigError(str(exc)) from None
        try:
            blob = parse_blob_url(env.get("FILESVC_BLOB_URL"), directory, env)
        except BadBlobUrl as exc:
            raise ConfigError(str(exc)) from None
        count = workers if workers is not None else _int(env, "FILESVC_WORKERS", DEFAULT_WORKERS)
        if not 1 <= count <= MAX_WORKERS:
            raise ConfigError(f"FILESVC_WORKERS (--workers) must be 1 to {MAX_WORKERS}")
        raw_index = env.get("FILESVC_WORKER_INDEX")
        index = int(raw_index) if raw_index and raw_index.isdigit() else None
        secret = env.get("FILESVC_JWT_SECRET") or load_or_create_secret(directory)
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise SystemExit(f"FILESVC_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
        settings = cls(
            data_dir=directory,
            jwt_secret=secret,
            host=host or env.get("FILESVC_HOST") or "127.0.0.1",
            port=port if port is not None else _int(env, "FILESVC_PORT", 8080),
            max_upload_bytes=_int(env, "FILESVC_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES),
            body_idle_timeout=_float(env, "FILESVC_BODY_IDLE_TIMEOUT", DEFAULT_BODY_IDLE_TIMEOUT),
            max_concurrent_uploads=_int(
                env, "FILESVC_MAX_CONCURRENT_UPLOADS", DEFAULT_MAX_CONCURRENT_UPLOADS
            ),
            sqlite_synchronous=env.get("FILESVC_SQLITE_SYNCHRONOUS") or "FULL",
            min_free_bytes=_size(env, "FILESVC_MIN_FREE_BYTES", DEFAULT_MIN_FREE_BYTES),
            disk_reserve_bytes=_size(env, "FILESVC_DISK_RESERVE_BYTES", DEFAULT_DISK_RESERVE_BYTES),
            metrics_token=env.get("FILESVC_METRICS_TOKEN") or None,
            thumb_sync_timeout=_float(
                env, "FILESVC_THUMB_SYNC_TIMEOUT", DEFAULT_THUMB_SYNC_TIMEOUT
            ),
            thumb_max_pixels=_int(env, "FILESVC_THUMB_MAX_PIXELS", DEFAULT_THUMB_MAX_PIXELS),
            thumb_workers=_int(env, "FILESVC_THUMB_WORKERS", DEFAULT_THUMB_WORKERS),
            thumb_pixel_budget=_int(env, "FILESVC_THUMB_PIXEL_BUDGET", DEFAULT_THUMB_PIXEL_BUDGET),
            thumb_job_timeout=_float(env, "FILESVC_THUMB_JOB_TIMEOUT", DEFAULT_THUMB_JOB_TIMEOUT),
            db_url=db_url,
            office_converter=env.get("FILESVC_OFFICE_CONVERTER", DEFAULT_OFFICE_CONVERTER) or None,
            max_uploads_per_caller=_int(
                env, "FILESVC_MAX_UPLOADS_PER_CALLER", DEFAULT_MAX_UPLOADS_PER_CALLER
            ),
            head_timeout=_float(env, "FILESVC_HEAD_TIMEOUT", DEFAULT_HEAD_TIMEOUT),
            keepalive_timeout=_float(env, "FILESVC_KEEPALIVE_TIMEOUT", DEFAULT_KEEPALIVE_TIMEOUT),
            body_min_rate=_int(env, "FILESVC_BODY_MIN_RATE", DEFAULT_BODY_MIN_RATE),
            body_rate_window=_float(env, "FILESVC_BODY_RATE_WINDOW", DEFAULT_BODY_RATE_WINDOW),
            body_rate_grace=_float(env, "FILESVC_BODY_RATE_GRACE", DEFAULT_BODY_RATE_GRACE),
            tus_expiry=_float(env, "FILESVC_TUS_EXPIRY", DEFAULT_TUS_EXPIRY),
            cors_origins=_origins(env.get("FILESVC_CORS_ORIGINS", "")),
            blob=blob,
            workers=count,
            worker_index=index,
        )
        _check_slow_client_limits(settings)
        return settings


def load_or_create_secret(data_dir: Path) -> str:
    """The secret kept in ``data_dir``, created (random, mode 0600) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
        f.flush()
        os.fsync(f.fileno())
    return secret
