"""``/healthz`` (the process answers), ``/readyz`` (it can serve), ``/health`` (an alias).

Readiness is a list of named checks, each answering None when fine or a short reason a person
can act on.  Adding one is one entry in :data:`CHECKS`.  No check reveals tenant data, a path on
disk or a secret, and neither route needs a token: load balancers and orchestrators call them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from blobstore.errors import StoreUnavailable
from blobstore.port import Probe
from blobstore.refs import make_ref
from filesvc.appkeys import DATABASE, READY, SETTINGS, SPACE, STORE, THUMBS
from filesvc.jsonbody import json_answer

log = logging.getLogger(__name__)

# A check that takes longer than this counts as failed: a probe must answer well inside the
# orchestrator's own timeout (Kubernetes' default is 1 s, Docker's HEALTHCHECK 30 s).
CHECK_TIMEOUT = 2.0
# Asked for by the blob store check: well formed, and never the name of stored content.
_PROBE_REF = make_ref("0" * 32)

Check = Callable[[web.Application], Awaitable[str | None]]


async def _database(app: web.Application) -> str | None:
    if not app[READY].is_set():
        return "still connecting to the metadata database"
    await app[DATABASE].ping()
    return None


async def _blob_store(app: web.Application) -> str | None:
    backend = app[STORE].backend
    try:
        if isinstance(backend, Probe):  # a store behind a network: one cheap request
            await backend.check()
        else:
            await backend.stat(_PROBE_REF)
    except StoreUnavailable:
        return "the blob store does not answer"
    return None


def _probe_write(directory: Path) -> None:
    probe = directory / f".readyz-{secrets.token_hex(8)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


async def _data_dir(app: web.Application) -> str | None:
    await asyncio.to_thread(_probe_write, app[SETTINGS].data_dir)
    return None


async def _disk(app: web.Application) -> str | None:
    """Free space is above the floor and the space reserve is held (filesvc/space.py)."""
    return app[SPACE].problem()


async def _thumbnail_workers(app: web.Application) -> str | None:
    if not app[THUMBS].alive:
        return "the thumbnail workers are not running"
    return None


CHECKS: list[tuple[str, Check]] = [
    ("database", _database),
    ("blob_store", _blob_store),
    ("data_dir_writable", _data_dir),
    ("disk", _disk),
    ("thumbnail_workers", _thumbnail_workers),
]


async def _run(name: str, check: Check, app: web.Application) -> str | None:
    try:
        return await asyncio.wait_for(check(app), CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        # The reason goes to the log only: an exception's text may hold a path or a URL.
        log.warning("readiness check %s failed: %r", name, exc)
        return "failed; the server log says why"


async def readyz(request: web.Request) -> web.Response:
    """200 ``{"status": "ready", "checks": {...}}`` when every check passes, else 503 with the
    same shape and ``"status": "not ready"``; each check reads ``{"ok": bool[, "reason": str]}``."""
    results = await asyncio.gather(*(_run(n, c, request.app) for n, c in CHECKS))
    checks: dict[str, dict[str, object]] = {}
    for (name, _), reason in zip(CHECKS, results, strict=True):
        checks[name] = {"ok": True} if reason is None else {"ok": False, "reason": reason}
    ready = all(reason is None for reason in results)
    return json_answer(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers; nothing else is consulted."""
    return json_answer({"status": "ok"}, headers={"Cache-Control": "no-store"})
