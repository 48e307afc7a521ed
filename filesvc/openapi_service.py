"""The operations paths in the OpenAPI document: probes, metrics, and the document and its docs
page themselves.  None takes a token (``/metrics`` may ask for its own)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from filesvc.apidocs_assets import ASSETS

Json = dict[str, Any]


def _probe(summary: str, response: Json) -> Json:
    return {"get": {"summary": summary, "tags": ["operations"], "security": [],
                    "responses": response}}  # fmt: skip


def service_paths(
    json_ok: Callable[[str, str], Json], error: Callable[[int], Json]
) -> dict[str, Json]:
    """The operator's paths; ``json_ok`` builds a JSON answer, ``error`` an error answer."""
    healthz = {
        "200": json_ok("The process answers.", "#/components/schemas/Health"),
    }
    ready = json_ok("Every check passed.", "#/components/schemas/Readiness")
    not_ready = {**json_ok("A check failed.", "#/components/schemas/Readiness")}
    return {
        "/healthz": _probe("Liveness: the process answers", healthz),
        "/health": _probe("Alias of /healthz", copy.deepcopy(healthz)),
        "/readyz": _probe(
            "Readiness: database, blob store, data directory, thumbnail workers",
            {"200": ready, "503": not_ready},
        ),
        "/metrics": _probe(
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": error(401),
            },
        ),
        "/openapi.json": _probe(
            "This document",
            {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {}}}},
        ),
        "/docs": _probe(
            "Swagger UI for this document",
            {"200": {"description": "An HTML page.", "content": {"text/html": {}}}},
        ),
        "/docs/{asset}": {
            "get": {
                "summary": "Swagger UI's static files",
                "tags": ["operations"],
                "security": [],
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": sorted(ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "A script, style sheet or icon.",
                        "content": {
                            "text/javascript": {},
                            "text/css": {},
                            "image/png": {},
                        },
                    },
                    "404": error(404),
                },
            }
        },
    }
