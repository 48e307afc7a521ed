"""``/openapi.json`` and ``/docs``: the API's document and a Swagger UI page to try it.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which renders
OpenAPI 3.1), never from a CDN: the machines this runs on may have no internet.  Only the few
files the page needs are served, by name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import swagger_ui_bundle
from aiohttp import web

from filesvc.apidocs_assets import ASSETS
from filesvc.errors import NotFound
from filesvc.openapi import document


class AssetCache:
    """Swagger UI's files, read from the package on first use."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] | None = None


ASSET_CACHE = web.AppKey("apidocs_assets", AssetCache)

# persistAuthorization keeps the pasted token across reloads (in the browser's local storage).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>filesvc API</title>
  <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="/docs/index.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "/openapi.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        persistAuthorization: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout"
      });
    };
  </script>
</body>
</html>
"""
# The page runs only its own scripts and talks only to this server.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def _load() -> dict[str, bytes]:
    root = Path(swagger_ui_bundle.swagger_ui_path)
    return {name: (root / name).read_bytes() for name in ASSETS}


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    # Off the loop: the version comes from the installed package's metadata (a file read).
    text = await asyncio.to_thread(lambda: json.dumps(document(), indent=1))
    return web.Response(
        text=text,
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


async def page(request: web.Request) -> web.Response:
    """The Swagger UI page."""
    return web.Response(
        text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP}
    )


async def asset(request: web.Request) -> web.Response:
    """One of Swagger UI's files, read from the package once."""
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise NotFound("no such file of the API documentation page")
    cache = request.app[ASSET_CACHE]
    if cache.files is None:
        cache.files = await asyncio.to_thread(_load)
    return web.Response(
        body=cache.files[name],
        content_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
