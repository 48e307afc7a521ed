"""Settings: one frozen object, built once from flags, ``FILESVC_*`` variables and a TOML file.

Every setting is declared once, as a field of :class:`Settings` made with :func:`setting`: its
variable name (also its key in the TOML file), its parser, which validates, and its help text.
The command-line flags, ``filesvc serve --help``, ``filesvc config`` and the validation all come
from those declarations, so adding a setting is one field.  Precedence, highest first: a
command-line flag, the environment, the ``--config`` file, the default.  Nothing else in the
service reads the environment, and every invalid value stops the start with one line naming the
setting and where the value came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any

from blobstore.backends import BadBlobUrl, BlobLocation, LocalLocation, parse_blob_url
from blobstore.engine import DbTarget, parse_db_url
from blobstore.engine.base import BadDatabaseUrl
from blobstore.inline import CEILING as INLINE_CEILING
from blobstore.layout import blobs_dir
from blobstore.masterkey import load_master_key
from filesvc.secret_file import resolve_master_key, secret_from_data_dir
from filesvc.setting_defaults import (
    DEFAULT_BLOB_CACHE_BYTES,
    DEFAULT_BODY_IDLE_TIMEOUT,
    DEFAULT_BODY_MIN_RATE,
    DEFAULT_BODY_RATE_GRACE,
    DEFAULT_BODY_RATE_WINDOW,
    DEFAULT_DISK_RESERVE_BYTES,
    DEFAULT_DOWNLOAD_THREADS,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_INLINE_MAX,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_UPLOADS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOADS_PER_CALLER,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_OFFICE_CONVERTER,
    DEFAULT_SEND_STALL_TIMEOUT,
    DEFAULT_THUMB_BOX,
    DEFAULT_THUMB_JOB_TIMEOUT,
    DEFAULT_THUMB_MAX_PIXELS,
    DEFAULT_THUMB_PIXEL_BUDGET,
    DEFAULT_THUMB_SYNC_TIMEOUT,
    DEFAULT_THUMB_WORKERS,
    DEFAULT_TUS_EXPIRY,
    DEFAULT_WORKERS,
    MAX_WORKERS,
    THUMB_LEASE_MARGIN,
)
from filesvc.setting_parsers import (
    MIN_SECRET_BYTES,
    boolean,
    choice,
    converter,
    directory,
    host,
    integer,
    jwt_secret,
    key_file,
    master_key_text,
    origins,
    seconds,
    text,
)
from filesvc.setting_parsers import (
    ConfigError as ConfigError,
)
from filesvc.setting_sources import Spec, resolve_fields, setting, specs_of
from filesvc.setting_sources import default_of as default_of


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with."""

    data_dir: Path = setting(
        Path("data"),
        "FILESVC_DATA_DIR",
        directory,
        "blobs (blobs/), database (meta.sqlite3) and the generated secret",
    )
    jwt_secret: str = setting(
        "",
        "FILESVC_JWT_SECRET",
        jwt_secret,
        f"HS256 token secret, at least {MIN_SECRET_BYTES} bytes; unset: a random one kept in "
        "<data dir>/jwt-secret (0600)",
        secret=True,
        flag=False,
    )
    encryption: bool = setting(
        True,
        "FILESVC_ENCRYPTION",
        boolean,
        "seal new blobs (AES-256-GCM, a key per company); off: store them plain (volumes"
        " encrypted below, or dedup across companies); sealed blobs stay readable either way",
    )
    master_key: str | None = setting(
        None,
        "FILESVC_MASTER_KEY",
        master_key_text,
        "32 bytes in base64, wrapping the companies' data keys; unset: FILESVC_MASTER_KEY_FILE,"
        " else <data dir>/master-key (0600), generated once (a shared store needs one of the two)",
        secret=True,
        flag=False,
    )
    master_key_file: Path | None = setting(
        None,
        "FILESVC_MASTER_KEY_FILE",
        key_file,
        "a file holding the master key in base64 (a container secret, a systemd credential)",
    )
    host: str = setting("127.0.0.1", "FILESVC_HOST", host, "address to bind")
    port: int = setting(8080, "FILESVC_PORT", integer(0, 65535), "TCP port (0: any free one)")
    inline_max: int = setting(
        DEFAULT_INLINE_MAX,
        "FILESVC_INLINE_MAX",
        integer(0, INLINE_CEILING),
        "blobs of at most this many stored bytes (sealed size when encryption is on) are kept"
        " in the metadata database, committed with their file's rows, not written to the blob"
        " store; 0: none",
    )
    max_upload_bytes: int = setting(
        DEFAULT_MAX_UPLOAD_BYTES,
        "FILESVC_MAX_UPLOAD_BYTES",
        integer(1),
        "largest request body in bytes (413 past it)",
    )
    body_idle_timeout: float = setting(
        DEFAULT_BODY_IDLE_TIMEOUT,
        "FILESVC_BODY_IDLE_TIMEOUT",
        seconds(0),
        "seconds a body read waits for the client before 408",
    )
    send_stall_timeout: float = setting(
        DEFAULT_SEND_STALL_TIMEOUT,
        "FILESVC_SEND_STALL_TIMEOUT",
        seconds(0.1, inclusive=True),
        "seconds a download may wait for the client to take bytes before its connection is cut",
    )
    download_threads: int = setting(
        DEFAULT_DOWNLOAD_THREADS,
        "FILESVC_DOWNLOAD_THREADS",
        integer(0, 1024),
        "large plain downloads sent by a thread each at once (0: none, all by the event loop)",
    )
    max_concurrent_uploads: int = setting(
        DEFAULT_MAX_CONCURRENT_UPLOADS,
        "FILESVC_MAX_CONCURRENT_UPLOADS",
        integer(1, 1_000_000),
        "uploads streaming at once; past it 503 with Retry-After",
    )
    max_uploads_per_caller: int = setting(
        DEFAULT_MAX_UPLOADS_PER_CALLER,
        "FILESVC_MAX_UPLOADS_PER_CALLER",
        integer(1, 1_000_000),
        "uploads one caller (company and user or app) may stream at once; past it 429",
    )
    head_timeout: float = setting(
        DEFAULT_HEAD_TIMEOUT,
        "FILESVC_HEAD_TIMEOUT",
        seconds(0.1, inclusive=True),
        "seconds a request's line and headers may take to arrive",
    )
    keepalive_timeout: float = setting(
        DEFAULT_KEEPALIVE_TIMEOUT,
        "FILESVC_KEEPALIVE_TIMEOUT",
        seconds(0.1, inclusive=True),
        "seconds an idle keep-alive connection stays open",
    )
    body_min_rate: int = setting(
        DEFAULT_BODY_MIN_RATE,
        "FILESVC_BODY_MIN_RATE",
        integer(0),
        "slowest body accepted, bytes a second over the window (0: no rate rule); 408 below",
    )
    body_rate_window: float = setting(
        DEFAULT_BODY_RATE_WINDOW,
        "FILESVC_BODY_RATE_WINDOW",
        seconds(0.1, inclusive=True),
        "seconds of waiting for the client the body rate is measured over",
    )
    body_rate_grace: float = setting(
        DEFAULT_BODY_RATE_GRACE,
        "FILESVC_BODY_RATE_GRACE",
        seconds(0, inclusive=True),
        "seconds of waiting at the start of a body that are never judged",
    )
    sqlite_synchronous: str = setting(
        "FULL",
        "FILESVC_SQLITE_SYNCHRONOUS",
        choice("OFF", "NORMAL", "FULL", "EXTRA"),
        "SQLite durability (NORMAL survives kill -9, not power loss)",
    )
    min_free_bytes: int = setting(
        DEFAULT_MIN_FREE_BYTES,
        "FILESVC_MIN_FREE_BYTES",
        integer(0),
        "free bytes below which new uploads are refused with 507 (room for metadata writes)",
    )
    disk_reserve_bytes: int = setting(
        DEFAULT_DISK_RESERVE_BYTES,
        "FILESVC_DISK_RESERVE_BYTES",
        integer(0),
        "bytes held in <data dir>/space-reserve and given back when the disk is full",
    )
    metrics_token: str | None = setting(
        None,
        "FILESVC_METRICS_TOKEN",
        text,
        "when set, GET /metrics needs 'Authorization: Bearer <this>' (scrapers, never tenants)",
        secret=True,
        flag=False,
    )
    drain_timeout: float = setting(
        DEFAULT_DRAIN_TIMEOUT,
        "FILESVC_DRAIN_TIMEOUT",
        seconds(0, 3600),
        "on SIGTERM, seconds requests in flight get to finish",
    )
    access_log: str = setting(
        "text",
        "FILESVC_ACCESS_LOG",
        choice("text", "json", "off"),
        "one line per request: key=value text, JSON, or off",
    )
    access_log_probes: bool = setting(
        False,
        "FILESVC_ACCESS_LOG_PROBES",
        boolean,
        "also log /healthz, /readyz and /metrics requests",
    )
    thumb_sync_timeout: float = setting(
        DEFAULT_THUMB_SYNC_TIMEOUT,
        "FILESVC_THUMB_SYNC_TIMEOUT",
        seconds(0, 600),
        "longest thumbnail_sync=1 wait, seconds",
    )
    thumb_max_pixels: int = setting(
        DEFAULT_THUMB_MAX_PIXELS,
        "FILESVC_THUMB_MAX_PIXELS",
        integer(1),
        "images declaring more pixels are not decoded",
    )
    thumb_workers: int = setting(
        DEFAULT_THUMB_WORKERS,
        "FILESVC_THUMB_WORKERS",
        integer(1, 256),
        "thumbnail worker processes (concurrent jobs)",
    )
    thumb_pixel_budget: int = setting(
        DEFAULT_THUMB_PIXEL_BUDGET,
        "FILESVC_THUMB_PIXEL_BUDGET",
        integer(1),
        "pixels decoded at once across thumbnail jobs",
    )
    thumb_job_timeout: float = setting(
        DEFAULT_THUMB_JOB_TIMEOUT,
        "FILESVC_THUMB_JOB_TIMEOUT",
        seconds(0),
        "seconds before a thumbnail job's worker is killed (status error)",
    )
    # Settings built in code (tests) convert no office documents unless they say so; the
    # configured service's default is DEFAULT_OFFICE_CONVERTER (see ``configured_default``).
    office_converter: str | None = setting(
        None,
        "FILESVC_OFFICE_CONVERTER",
        converter,
        "LibreOffice program for office previews, looked up on PATH; off turns them off",
        configured_default=DEFAULT_OFFICE_CONVERTER,
    )
    tus_expiry: float = setting(
        DEFAULT_TUS_EXPIRY,
        "FILESVC_TUS_EXPIRY",
        seconds(0, 365 * 86_400.0),
        "seconds after its last write an incomplete tus upload expires (keep gc's"
        " --abandon-after the same)",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "FILESVC_CORS_ORIGINS",
        origins,
        "origins browsers may call the tus endpoint from, comma-separated, or *",
    )
    db_url: str | None = setting(
        None,
        "FILESVC_DB_URL",
        text,
        "metadata database: postgresql://USER[:PASSWORD]@HOST:PORT/DB; unset: SQLite in the"
        " data directory",
        secret=True,
        flag=False,
    )
    blob_url: str | None = setting(
        None,
        "FILESVC_BLOB_URL",
        text,
        "where blobs live: s3://BUCKET?endpoint=http://HOST:PORT&region=R (credentials from"
        " AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); unset: <data dir>/blobs",
    )
    blob_cache_bytes: int = setting(
        DEFAULT_BLOB_CACHE_BYTES,
        "FILESVC_BLOB_CACHE_BYTES",
        integer(0),
        "memory per server process for blobs of up to 256 KiB read from S3 (served with no S3"
        " request; least recently used out); 0: off; unused on the local disk",
    )
    uvloop: bool = setting(
        True,
        "FILESVC_UVLOOP",
        boolean,
        "run the server on uvloop (measured faster on every read route); false: asyncio's loop",
    )
    workers: int = setting(
        DEFAULT_WORKERS,
        "FILESVC_WORKERS",
        integer(1, MAX_WORKERS),
        "server processes on the port; more than one runs a supervisor that replaces a dead one",
    )
    thumb_box: tuple[int, int] = DEFAULT_THUMB_BOX
    # Where blobs live, parsed from blob_url; None: the data directory's ``blobs/``.
    blob: BlobLocation | None = None
    # Which worker this process is (set by the supervisor); None: not started by one.
    worker_index: int | None = None
    # The master key, resolved by ``load`` (None: read or made at start in the data directory).
    master: bytes | None = field(default=None, repr=False)

    @property
    def db_target(self) -> DbTarget:
        """The metadata engine (raises BadDatabaseUrl for a URL that names none)."""
        return parse_db_url(self.db_url, self.data_dir)

    @property
    def thumb_lease(self) -> float:
        """How long a claimed thumbnail job is this process's before others may take it."""
        return self.thumb_job_timeout + THUMB_LEASE_MARGIN

    def blob_location(self) -> BlobLocation:
        """The configured blob backend's location."""
        return self.blob or LocalLocation(blobs_dir(self.data_dir))

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        flags: Mapping[str, object] | None = None,
        config_file: Path | None = None,
        create_secret: bool = True,
    ) -> Settings:
        """Validate every source and build the settings (see :func:`resolve`).  Without a
        configured secret, the one kept in the data directory is used, created when asked."""
        env = os.environ if env is None else env
        values = {name: value for name, (value, _) in resolve(env, flags, config_file).items()}
        try:  # a bad URL fails here, before anything is created
            parse_db_url(values["db_url"], values["data_dir"])
        except BadDatabaseUrl as exc:
            raise ConfigError(str(exc)) from None
        try:
            values["blob"] = parse_blob_url(values["blob_url"], values["data_dir"], env)
        except BadBlobUrl as exc:
            raise ConfigError(str(exc)) from None
        raw_index = env.get("FILESVC_WORKER_INDEX", "")  # set by the supervisor, not by people
        values["worker_index"] = int(raw_index) if raw_index.isdigit() else None
        if not values["jwt_secret"]:
            values["jwt_secret"] = secret_from_data_dir(values["data_dir"], create=create_secret)
        values["master"] = resolve_master_key(values, create=create_secret)
        return cls(**values)

    def master_key_bytes(self, *, create: bool) -> bytes | None:
        """The master key: resolved already, or the data directory's (made when ``create`` and
        encryption is on).  Blocking: call it off the event loop."""
        if self.master is not None:
            return self.master
        return load_master_key(
            self.data_dir,
            configured=self.master_key,
            key_file=self.master_key_file,
            shared=False,
            create=create and self.encryption,
        )

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
        """The environment with a few flags over it (what the tests and scripts need)."""
        flags = {"host": host, "port": port, "data_dir": data_dir, "workers": workers}
        return cls.load(env, flags={k: v for k, v in flags.items() if v is not None})


def specs() -> Iterator[tuple[Field[Any], Spec]]:
    """Every setting's field and spec, in declaration order."""
    return specs_of(Settings)


def resolve(
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    config_file: Path | None = None,
) -> dict[str, tuple[Any, str]]:
    """Each setting's validated value and where it came from (see :func:`resolve_fields`)."""
    return resolve_fields(Settings, env, flags, config_file)
