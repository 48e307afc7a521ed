"""Health and readiness: ``/health`` (the process answers) and ``/readyz`` (it can serve).

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
    """200 ``{"status": "ready", "checks": {...}}`` or 503 with the failing checks' reasons."""
    results: dict[str, str] = {}
    for name, check in CHECKS:
        problem = await check(request.app)
        results[name] = "ok" if problem is None else problem
    ready = all(v == "ok" for v in results.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": results},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def health(request: web.Request) -> web.Response:
    """The process answers and its database does (kept for existing probes)."""
    async with request.app[DATABASE].read() as conn:
        await conn.execute("SELECT 1")
    return web.json_response({"status": "ok"})
