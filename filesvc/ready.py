"""Readiness: ``/readyz`` (it can serve; ``/health`` stays in the app module).

``/readyz`` runs a small list of named checks; each answers None when fine or a short reason
(never a path, a number that would help an attacker, or tenant data).  200 when all pass, else 503
naming each failing check, so a load balancer stops sending uploads to an instance whose disk is
full while an operator reads why.  Add a check by appending to :data:`CHECKS`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from filesvc.appkeys import DATABASE, SPACE

log = logging.getLogger(__name__)

Check = Callable[[web.Application], Awaitable[str | None]]


async def database_check(app: web.Application) -> str | None:
    """The metadata database answers a query."""
    try:
        async with app[DATABASE].read() as conn:
            await conn.execute("SELECT 1")
    except Exception:
        log.exception("readiness: database check failed")
        return "the metadata database does not answer"
    return None


async def disk_check(app: web.Application) -> str | None:
    """Free space is above the floor and the space reserve is held."""
    return app[SPACE].problem()


CHECKS: list[tuple[str, Check]] = [
    ("database", database_check),
    ("disk", disk_check),
]


async def readyz(request: web.Request) -> web.Response:
    """200 ``{"status": "ready", "checks": {...}}`` when every check passes, else 503 with the
    same shape and ``"status": "not ready"``; each check reads ``{"ok": bool[, "reason": str]}``."""
    checks: dict[str, dict[str, object]] = {}
    for name, check in CHECKS:
        reason = await check(request.app)
        checks[name] = {"ok": True} if reason is None else {"ok": False, "reason": reason}
    ready = all(c["ok"] for c in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
