"""/openapi.json describes exactly the routes the app serves, and is a valid OpenAPI 3.1
document; /docs serves Swagger UI from the installed package, nothing from elsewhere."""

from __future__ import annotations

import re

from aiohttp import web
from openapi_spec_validator import validate

from filesvc.apidocs_assets import ASSETS
from tests.helpers import Api, error_of

METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}


async def test_the_document_is_valid_openapi_3_1(api: Api) -> None:
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


async def test_documented_routes_are_exactly_the_registered_ones(api: Api) -> None:
    app = api.client.app
    assert isinstance(app, web.Application)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    spec = await (await api.client.get("/openapi.json")).json()
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == registered


async def test_every_api_operation_documents_the_error_envelope(api: Api) -> None:
    spec = await (await api.client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        if not path.startswith("/internal/"):
            continue
        for method, op in item.items():
            if method not in METHODS or method == "options":  # tus discovery needs no token
                continue
            for status in ("400", "401", "403", "404", "500"):
                body = op["responses"][status]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            assert op["responses"]["401"]["headers"]["WWW-Authenticate"]
            bytes_route = path.rstrip("/").endswith(("/download", "/thumbnails/{index}"))
            assert ({"tokenQuery": []} in op["security"]) is bytes_route, (method, path)


async def test_docs_page_uses_only_local_files(api: Api) -> None:
    resp = await api.client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    linked = set(re.findall(r'(?:src|href)="/docs/([^"]+)"', page))
    assert linked and linked <= set(ASSETS)
    for name, media_type in ASSETS.items():
        asset = await api.client.get(f"/docs/{name}")
        assert asset.status == 200 and asset.content_type == media_type
        assert len(await asset.read()) > 100


async def test_docs_serves_nothing_but_its_assets(api: Api) -> None:
    for name in ("..%2F..%2Fsettings.py", "swagger-ui.js.map", "index.html", "%2e%2e", "x" * 300):
        resp = await api.client.get(f"/docs/{name}")
        status, message = await error_of(resp)  # the router's 404 when a slash was decoded
        assert status == 404 and message in (
            "no such file of the API documentation page",
            "no route matches this path",
        )
    traversal = await api.client.get("/docs/../openapi.json")
    assert traversal.status in (200, 404)  # normalised by the client or refused; never a file
