"""The blockbuster guard (conftest) turns a blocking call in request handling into a failure."""

from __future__ import annotations

import time

from aiohttp import web

from tests.helpers import Api


async def test_blocking_handler_code_is_caught(api: Api) -> None:
    app = api.client.app
    assert app is not None

    async def blocking(request: web.Request) -> web.Response:
        time.sleep(0.01)  # the mistake the guard exists for
        return web.json_response({"ok": True})

    app.router._frozen = False  # one extra route on a running test app
    app.router.add_get("/blocking", blocking)
    resp = await api.client.get("/blocking")
    # The guard raised BlockingError inside the handler; the error middleware answered 500.
    assert resp.status == 500
    assert (await resp.json())["message"] == "internal error; it has been logged"
