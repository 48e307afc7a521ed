"""The tus endpoints in the OpenAPI document (docs/tus.md is the prose reference).

tus answers carry their state in headers (``Upload-Offset``, ``Upload-Length``, ``Location``),
so the document lists those headers and the statuses the protocol defines; errors that are not
tus's own use the service's error envelope like every other route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Json = dict[str, Any]

_TUS_ERRORS = {
    400: "A tus header (Upload-Length, Upload-Offset, Upload-Metadata, Upload-Concat,"
    " Upload-Checksum) is malformed; the message names it.",
    401: "The token is missing, malformed, wrongly signed or expired.",
    403: "The caller does not belong to the path's company.",
    404: "No such upload in this company.",
    409: "Upload-Offset is not the upload's current offset.",
    410: "The upload expired (Upload-Expires passed).",
    412: "Tus-Resumable is missing or names a version this server does not speak.",
    413: "The upload would exceed Tus-Max-Size or its declared Upload-Length.",
    415: "A PATCH body that is not application/offset+octet-stream.",
    460: "Upload-Checksum does not match the PATCH's bytes; nothing of them was kept.",
    500: "A genuine fault.",
    503: "The server sheds load or a storage engine is unreachable; retry after Retry-After.",
    507: "The store is full; nothing was saved.",
}


def _header(description: str) -> Json:
    return {"description": description, "schema": {"type": "string"}}


def tus_paths(prefix: str, error: Callable[[int], Json]) -> dict[str, Json]:
    """The two tus paths (and their trailing-slash twins), ``error`` building an error answer."""

    def errors(*statuses: int) -> dict[str, Json]:
        out: dict[str, Json] = {}
        for status in statuses:
            # The envelope and its headers as elsewhere (WWW-Authenticate, Retry-After).
            answer = error(status) if status in (401, 503) else error(400)
            answer = {**answer, "description": _TUS_ERRORS[status]}
            out[str(status)] = answer
        return out

    resumable = {"Tus-Resumable": _header("Always 1.0.0.")}
    security: list[Json] = [{"bearer": []}]
    collection: dict[str, Json] = {
        "options": {
            "summary": "tus discovery: versions, extensions, limits",
            "tags": ["tus"],
            "security": [],
            "responses": {
                "204": {
                    "description": "What this server speaks.",
                    "headers": {
                        **resumable,
                        "Tus-Version": _header("1.0.0"),
                        "Tus-Extension": _header("The extensions, comma-separated."),
                        "Tus-Max-Size": _header("Largest upload, bytes."),
                        "Tus-Checksum-Algorithm": _header("sha1, sha256, sha512, md5"),
                    },
                },
                **errors(400, 404),
            },
        },
        "post": {
            "summary": "tus creation (with upload, deferred length, concatenation)",
            "tags": ["tus"],
            "security": security,
            "responses": {
                "201": {
                    "description": "Created; Location names the upload (its id is the file's).",
                    "headers": {
                        **resumable,
                        "Location": _header("…/companies/{company_id}/uploads/{file_id}"),
                        "Upload-Offset": _header("Bytes stored (creation-with-upload)."),
                    },
                },
                **errors(400, 401, 403, 404, 412, 413, 415, 460, 500, 503, 507),
            },
        },
    }
    one: dict[str, Json] = {
        "options": collection["options"],
        "head": {
            "summary": "tus: where the upload stands",
            "tags": ["tus"],
            "security": security,
            "responses": {
                "200": {
                    "description": "Upload-Offset and Upload-Length (or Upload-Defer-Length).",
                    "headers": {**resumable, "Upload-Offset": _header("Bytes stored.")},
                },
                **errors(400, 401, 403, 404, 410, 412, 500, 503),
            },
        },
        "patch": {
            "summary": "tus: append bytes at Upload-Offset",
            "tags": ["tus"],
            "security": security,
            "responses": {
                "204": {
                    "description": "Stored durably; Upload-Offset is the new offset.",
                    "headers": {**resumable, "Upload-Offset": _header("Bytes stored.")},
                },
                **errors(400, 401, 403, 404, 409, 410, 412, 413, 415, 460, 500, 503, 507),
            },
        },
        "delete": {
            "summary": "tus termination: the upload and its file are gone",
            "tags": ["tus"],
            "security": security,
            "responses": {
                "204": {"description": "Deleted.", "headers": resumable},
                **errors(400, 401, 403, 404, 412, 500, 503, 507),
            },
        },
    }
    base = prefix + "/companies/{company_id}/uploads"
    company = {"name": "company_id", "in": "path", "required": True, "schema": {"type": "string"}}
    file_id = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Json] = {}
    item: dict[str, Json]
    for path, item, params in (
        (base, collection, [company]),
        (base + "/{file_id}", one, [company, file_id]),
    ):
        for variant in (path, path + "/"):
            ops: Json = {"parameters": params}
            for method, op in item.items():
                words = [w.strip("{}") for w in variant.removeprefix(prefix).split("/") if w]
                slash = "_slash" if variant.endswith("/") else ""
                ops[method] = {**op, "operationId": f"{method}_{'_'.join(words)}{slash}"}
            paths[variant] = ops
    return paths
