"""The composition root: ``create_app(settings, ...)`` wires everything, and nothing else does.

Long-lived resources open in ``cleanup_ctx`` generators (teardown runs only if setup succeeded,
in reverse order) and live under typed AppKeys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from blobstore import keyring
from blobstore.backends import open_backend
from blobstore.blobcache import BlobCache
from blobstore.engine import make_engine
from blobstore.engine.base import DatabaseUnavailable, Engine
from blobstore.engine.migrate import migrate
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database
from blobstore.errors import KeyUnavailable
from blobstore.keyring import KeyRing
from blobstore.masterkey import KEY_FILE
from blobstore.port import BlobBackend
from blobstore.sealed import seal_backend
from blobstore.store import ContentStore, InlineStore, PutResult
from filesvc import apidocs, health
from filesvc.accesslog import AccessLog, add_request_id
from filesvc.apidocs import ASSET_CACHE, AssetCache
from filesvc.appkeys import (
    ACCESS_LOG,
    CONNECTED,
    DATABASE,
    INFLIGHT,
    KEYS,
    METRICS,
    READY,
    SCOPES,
    SERVICE,
    SETTINGS,
    SPACE,
    STORE,
    THUMBS,
    TOKENS,
    TUS,
    UPLOADS,
)
from filesvc.auth import VerifiedTokens
from filesvc.creates import CreateBatcher
from filesvc.errors import Unauthorized
from filesvc.inflight import InFlight, UploadSlots
from filesvc.metrics import Metrics
from filesvc.middleware import request_middleware
from filesvc.routes import reads, uploads
from filesvc.routes.common import PREFIX
from filesvc.schema import TRACKS
from filesvc.scope import DedupScopes
from filesvc.service import FileService
from filesvc.settings import Settings
from filesvc.space import SpaceGuard
from filesvc.thumbnails.converter import resolve_converter
from filesvc.thumbnails.jobs import Renderer, ThumbnailRunner, no_thumbnails
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.pool import ProcessRenderer
from filesvc.thumbnails.result import Rendered
from filesvc.tus import cors as tus_cors
from filesvc.tus import routes as tus_routes
from filesvc.tus.store import TusStore

THUMB_WORK_DIR = "thumb-work"
# While PostgreSQL cannot be reached at start, attempts are spaced out up to this long.
CONNECT_BACKOFF_MAX = 5.0

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    settings: Settings,
    *,
    backend: BlobBackend | None = None,
    renderer: Renderer | None = None,
) -> web.Application:
    """The aiohttp application.  Tests pass a backend (memory) or a renderer (fake)."""
    app = web.Application(middlewares=[request_middleware])
    app[SETTINGS] = settings
    app[TOKENS] = VerifiedTokens(settings.jwt_secret)
    app[METRICS] = Metrics()
    app[INFLIGHT] = InFlight()
    app[UPLOADS] = UploadSlots(settings.max_concurrent_uploads, settings.max_uploads_per_caller)
    app[ACCESS_LOG] = AccessLog(settings.access_log, probes=settings.access_log_probes)
    app.on_response_prepare.append(add_request_id)
    app[SCOPES] = DedupScopes(settings.jwt_secret)
    scope_of = app[SCOPES].of

    async def space(app: web.Application) -> AsyncIterator[None]:
        guard = SpaceGuard(
            settings.data_dir,
            min_free_bytes=settings.min_free_bytes,
            reserve_bytes=settings.disk_reserve_bytes,
        )
        await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
        await guard.start()
        app[SPACE] = guard
        yield
        await guard.stop()

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = make_engine(settings.db_target, synchronous=settings.sqlite_synchronous)
        ready = asyncio.Event()
        app[DATABASE], app[READY] = engine, ready
        embedded = isinstance(engine, Database)
        # The embedded store makes its key only once it knows it has none yet (below).
        master = await asyncio.to_thread(settings.master_key_bytes, create=not embedded)
        keys = app[KEYS] = KeyRing(engine, master)
        connecting: asyncio.Task[None] | None = None
        if isinstance(engine, Database):
            # Embedded: a database that cannot be opened, or a wrong or lost master key, is
            # fatal at start.
            await engine.open()
            try:
                await migrate(engine, TRACKS)
                if master is None and settings.encryption:
                    master = await _first_key(engine, settings)
                    keys = app[KEYS] = KeyRing(engine, master)
                await keys.check(record=settings.encryption)
            except BaseException:
                await engine.close()  # this context's teardown will not run
                raise
            ready.set()
            app[CONNECTED] = asyncio.create_task(_done())
        else:
            # A server that is not there yet is waited for, while /readyz says not ready.
            connecting = asyncio.create_task(_connect(engine, ready, keys, settings.encryption))
            app[CONNECTED] = connecting
        yield
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        await engine.close()

    async def store(app: web.Application) -> AsyncIterator[None]:
        chosen = backend or await open_backend(
            settings.blob_location(),
            min_free_bytes=settings.min_free_bytes,
            cache_bytes=settings.blob_cache_bytes,
            pump_threads=settings.download_threads,
        )
        cache = getattr(chosen, "cache", None)
        if isinstance(cache, BlobCache):
            app[METRICS].watch_blob_cache(cache)
        app[STORE] = ContentStore(
            seal_backend(chosen, app[KEYS], sealing=settings.encryption),
            inline=InlineStore(app[DATABASE], settings.inline_max, app[KEYS]),
            cache=cache if isinstance(cache, BlobCache) else None,
        )
        yield
        await chosen.close()

    async def thumbnails(app: web.Application) -> AsyncIterator[None]:
        limits = RenderLimits(
            box_width=settings.thumb_box[0],
            box_height=settings.thumb_box[1],
            max_pixels=settings.thumb_max_pixels,
        )
        # With several server processes of one host only the first renders thumbnails (each
        # renderer is a set of worker processes); jobs are leased, so it takes the others'
        # jobs, and so does any other instance sharing the database.
        active = settings.worker_index in (None, 0)
        own: ProcessRenderer | None = None
        converter = await asyncio.to_thread(resolve_converter, settings.office_converter)
        if renderer is None and active:
            if converter is None:
                log.warning("office documents: no converter (LibreOffice) found; no previews")
            else:
                log.info("office documents: converted by %s", converter)
            own = ProcessRenderer(
                limits,
                workers=settings.thumb_workers,
                job_timeout=settings.thumb_job_timeout,
                pixel_budget=settings.thumb_pixel_budget,
                converter=converter,
            )
        metrics = app[METRICS]

        def observe(rendered: Rendered, seconds: float) -> None:
            metrics.thumbnail_job(rendered.status, seconds)

        runner = ThumbnailRunner(
            app[DATABASE],
            app[STORE],
            renderer or own or no_thumbnails,
            work_dir=settings.data_dir / THUMB_WORK_DIR,
            workers=settings.thumb_workers,
            lease=settings.thumb_lease,
            ready=app[READY],
            max_input_bytes=limits.max_input_bytes,
            observer=observe,
            office=converter is not None,
            scope_of=scope_of,
            active=active,
        )
        await runner.start()
        app[THUMBS] = runner
        yield
        await runner.stop()
        if own is not None:
            await own.close()

    async def service(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]

        def stored(put: PutResult) -> None:
            metrics.uploads.inc()
            metrics.upload_bytes.inc(put.size)
            if not put.created:
                metrics.dedup_hits.inc()

        creates = CreateBatcher(app[DATABASE], app[STORE].backend)
        creates.start()
        app[SERVICE] = FileService(
            app[DATABASE],
            app[STORE],
            app[THUMBS],
            creates,
            max_upload_bytes=settings.max_upload_bytes,
            thumb_sync_timeout=settings.thumb_sync_timeout,
            scope_of=scope_of,
            on_stored=stored,
        )
        app[TUS] = TusStore(
            app[SERVICE], expiry_ms=int(settings.tus_expiry * 1000), on_stored=stored
        )
        yield
        await creates.stop()

    app.cleanup_ctx.extend([space, database, store, thumbnails, service])
    _routes(app)
    return app


def _routes(app: web.Application) -> None:
    files = "/companies/{company_id}/files"
    one = files + "/{file_id}"
    table: list[tuple[str, str, Handler]] = [
        ("POST", files, uploads.create_file),
        ("POST", one, uploads.upload_chunk),
        ("GET", one, reads.get_file),
        ("DELETE", one, reads.delete_file),
        ("GET", one + "/download", reads.download),
        ("GET", one + "/thumbnails/{index}", reads.thumbnail),
        ("GET", "/{company_id}/files/{file_id}", reads.get_file),
    ]
    for method, path, handler in table:
        # docs/api.md: a trailing slash is accepted on every path.
        for variant in (PREFIX + path, PREFIX + path + "/"):
            if method == "GET":
                # HEAD where the contract offers it: on the routes that return bytes.
                with_head = path.endswith(("/download", "/thumbnails/{index}"))
                app.router.add_get(variant, handler, allow_head=with_head)
            elif method == "POST":
                app.router.add_post(variant, handler, expect_handler=uploads.expect_continue)
            else:
                app.router.add_route(method, variant, handler)
    tus_routes.add_routes(app, uploads.expect_continue)
    app.on_response_prepare.append(tus_cors.on_prepare)
    app.router.add_get("/metrics", _metrics, allow_head=False)
    app.router.add_get("/healthz", health.healthz, allow_head=False)
    app.router.add_get("/readyz", health.readyz, allow_head=False)
    # The first name this route had; kept so existing probes keep working.
    app.router.add_get("/health", health.healthz, allow_head=False)
    app[ASSET_CACHE] = AssetCache()
    app.router.add_get("/openapi.json", apidocs.openapi_json, allow_head=False)
    app.router.add_get("/docs", apidocs.page, allow_head=False)
    app.router.add_get("/docs/{asset}", apidocs.asset, allow_head=False)


async def _metrics(request: web.Request) -> web.Response:
    """Aggregate counters only (no company label; dedup is per company, see docs/security.md).
    With a metrics token set, only a scraper holding it may read them."""
    expected = request.app[SETTINGS].metrics_token
    if expected is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), f"Bearer {expected}".encode()
        ):
            raise Unauthorized("the metrics need 'Authorization: Bearer <metrics token>'")
    metrics = request.app[METRICS]
    with contextlib.suppress(DatabaseUnavailable):  # the last value stands meanwhile
        metrics.thumbnail_queue.set(await request.app[THUMBS].waiting_jobs())
    # Off the loop: the process collector reads /proc.
    body = await asyncio.to_thread(generate_latest, metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _done() -> None:
    return None


async def _first_key(engine: Engine, settings: Settings) -> bytes | None:
    """The data directory's master key, made now: unless the store already has keys wrapped
    by one (then it was lost or moved, and a new one would open nothing)."""
    async with engine.read() as tx:
        recorded = await keyring.stored_check(tx) is not None
    if recorded:
        # Another process of this data directory (``--workers N``, or two servers started
        # together) made the key a moment ago: it is in the file before its check value is.
        master = await asyncio.to_thread(settings.master_key_bytes, create=False)
        if master is None:
            raise KeyUnavailable(
                "no master key, but this store's keys are wrapped with one: set"
                " FILESVC_MASTER_KEY (or FILESVC_MASTER_KEY_FILE), or put it back in"
                f" {settings.data_dir / KEY_FILE}"
            )
        return master
    return await asyncio.to_thread(settings.master_key_bytes, create=True)


async def _connect(engine: Engine, ready: asyncio.Event, keys: KeyRing, record: bool) -> None:
    """Connect (with backoff), migrate and check the master key, then declare the service
    ready.  A wrong master key ends the task with KeyUnavailable (``filesvc serve`` stops)."""
    assert isinstance(engine, PostgresEngine)
    while True:
        await engine.connect_with_backoff(longest=CONNECT_BACKOFF_MAX)
        try:
            await migrate(engine, TRACKS)
        except DatabaseUnavailable as exc:
            log.warning("migrating the metadata database failed: %s; retrying", exc)
            await asyncio.sleep(1)
            continue
        try:
            await keys.check(record=record)
        except DatabaseUnavailable as exc:
            log.warning("checking the master key failed: %s; retrying", exc)
            await asyncio.sleep(1)
            continue
        log.info("metadata database ready")
        ready.set()
        return
