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
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from blobstore.backends import BadBlobUrl, BlobLocation, LocalLocation, parse_blob_url
from blobstore.engine import DbTarget, parse_db_url
from blobstore.engine.base import BadDatabaseUrl
from blobstore.layout import blobs_dir
from blobstore.masterkey import MasterKeyError, load_master_key
from filesvc.secret_file import secret_from_data_dir
from filesvc.setting_parsers import (
    MIN_SECRET_BYTES,
    Parser,
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
# docs/api.md: thumbnails fit inside 600x400 (the limit is defined in filesvc.thumbnails.limits).
DEFAULT_THUMB_BOX = (DEFAULT_BOX_WIDTH, DEFAULT_BOX_HEIGHT)
# docs/api.md: thumbnail_sync waits at most 10 seconds by default.
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
# The LibreOffice program that converts office documents, looked up on PATH.
DEFAULT_OFFICE_CONVERTER = "soffice"
# A body read that waits longer than this for the client fails the upload with 408: long enough
# for a phone on a bad network to stall and recover, short enough that a dead client does not pin
# a handler and a temp file.
DEFAULT_BODY_IDLE_TIMEOUT = 60.0
# A download whose client takes no bytes for this long loses its connection: the same patience
# as for a body the client sends (a phone on a bad network stalls and recovers within it), and a
# client that stops reading holds a connection and a piece of memory no longer.
DEFAULT_SEND_STALL_TIMEOUT = 60.0
# Uploads streaming at once before new ones are refused with 503: each holds up to two 1 MiB
# write batches, a temp file and a socket, so 256 bound that to about half a GiB.
DEFAULT_MAX_CONCURRENT_UPLOADS = 256
# On SIGTERM, requests in flight get this long to finish: a 1 GiB upload at LAN speed takes about
# 10 s; orchestrators wait 30 s (Kubernetes' terminationGracePeriodSeconds) before SIGKILL.
DEFAULT_DRAIN_TIMEOUT = 25.0
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
ENV_PREFIX = "FILESVC_"

T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """How one setting is read: its variable name, parser, help and whether it is secret."""

    env: str
    parse: Parser
    help: str
    secret: bool = False
    flag: bool = True  # secrets get no flag: a command line is visible to every local user
    # The default when settings are resolved from flags, environment and file, where it differs
    # from the field's default (what code building Settings directly gets).
    configured_default: object = None

    @property
    def flag_name(self) -> str:
        return "--" + self.env.removeprefix(ENV_PREFIX).lower().replace("_", "-")


def setting(default: T, env: str, parse: Parser, help: str, **extra: Any) -> T:
    """A field of :class:`Settings` that is a setting."""
    spec = Spec(env, parse, help, **extra)
    return field(default=default, repr=not spec.secret, metadata={"spec": spec})


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


def resolve_master_key(values: Mapping[str, Any], *, create: bool) -> bytes | None:
    """The master key the settings name.  A shared store (PostgreSQL or S3) with encryption on
    must be given one (``FILESVC_MASTER_KEY`` or ``FILESVC_MASTER_KEY_FILE``) when serving; the
    data directory's own key is read or made at start (:mod:`filesvc.app`), where an unusable
    data directory is reported as such."""
    shared = bool(values["db_url"]) or bool((values["blob_url"] or "").strip())
    if not shared and not values["master_key"] and values["master_key_file"] is None:
        return None
    try:
        return load_master_key(
            values["data_dir"],
            configured=values["master_key"],
            key_file=values["master_key_file"],
            shared=shared and values["encryption"] and create,
            create=False,
        )
    except MasterKeyError as exc:
        raise ConfigError(str(exc)) from None


def specs() -> Iterator[tuple[Field[Any], Spec]]:
    """Every setting's field and spec, in declaration order."""
    for f in fields(Settings):
        spec = f.metadata.get("spec")
        if isinstance(spec, Spec):
            yield f, spec


def default_of(f: Field[Any]) -> object:
    spec = f.metadata.get("spec")
    if isinstance(spec, Spec) and spec.configured_default is not None:
        return spec.configured_default
    return None if f.default is MISSING else f.default


def read_config_file(path: Path) -> dict[str, object]:
    """The ``FILESVC_*`` keys of a TOML file; an unknown key is an error (a typo would
    otherwise be silently ignored)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {spec.env for _, spec in specs()}
    for key in data:
        if key not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    return data


def resolve(
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    config_file: Path | None = None,
) -> dict[str, tuple[Any, str]]:
    """Each setting's validated value and where it came from: ``flag --x``, ``environment``,
    ``config file``, or ``default``.  An empty environment variable counts as unset."""
    env = os.environ if env is None else env
    flags = flags or {}
    from_file = read_config_file(config_file) if config_file is not None else {}
    out: dict[str, tuple[Any, str]] = {}
    for f, spec in specs():
        raw: object
        if flags.get(f.name) is not None:
            raw, source = flags[f.name], f"flag {spec.flag_name}"
        elif env.get(spec.env):
            raw, source = env[spec.env], "environment"
        elif spec.env in from_file:
            raw, source = from_file[spec.env], f"config file {config_file}"
        else:
            default = default_of(f)
            # A relative default means relative to where the process starts, once and for all.
            out[f.name] = (default.absolute() if isinstance(default, Path) else default, "default")
            continue
        try:
            out[f.name] = (spec.parse(raw), source)
        except ValueError as exc:
            raise ConfigError(f"{spec.env} ({source}) {exc}") from None
    return out
