"""The OpenAPI 3.1 document of the service, served at ``/openapi.json``.

Built here rather than written as one JSON file because every API route exists twice (with and
without a trailing slash) and shares its parameters, errors and headers with its neighbours.  A
test checks that its paths and methods are exactly the routes the app registers, validates it,
and a schemathesis run checks the live server against it.
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

from filesvc.openapi_schemas import schemas
from filesvc.openapi_service import service_paths
from filesvc.openapi_tus import tus_paths
from filesvc.params import (
    CHUNK_NUMBER,
    FILENAME,
    MAX_NAME_LENGTH,
    MIME,
    THUMBNAIL_SYNC,
    TOTAL_CHUNKS,
    TOTAL_SIZE,
)
from filesvc.setting_defaults import MAX_TOTAL_CHUNKS

PREFIX = "/internal/services/files/v1"
Json = dict[str, Any]

_ERRORS = {
    400: "A parameter, id, header or body is malformed; the message names it.",
    401: "The token is missing, malformed, wrongly signed or expired.",
    403: "The caller does not belong to the path's company, or may not overwrite this file.",
    404: "No such file in this company, or no route matches the path.",
    408: "The body stalled for FILESVC_BODY_IDLE_TIMEOUT or arrived slower than"
    " FILESVC_BODY_MIN_RATE; the connection is closed.",
    409: "The upload is incomplete, or another overwrite is in progress.",
    413: "The body is larger than FILESVC_MAX_UPLOAD_BYTES.",
    415: "The body is neither multipart/form-data nor application/octet-stream, or its"
    " Content-Encoding is not supported.",
    416: "The Range lies outside the file.",
    417: "An Expect header other than 100-continue.",
    429: "This caller already streams FILESVC_MAX_UPLOADS_PER_CALLER uploads; retry after"
    " Retry-After.",
    500: "A genuine fault, or content that fsck found damaged; never wrong bytes.",
    503: "The server sheds load (too many uploads at once); retry after Retry-After.",
    507: "The store is full; nothing was saved.",
}


def _error(status: int) -> Json:
    headers: Json = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
    if status == 401:
        headers["WWW-Authenticate"] = {
            "description": "Always `Bearer`.",
            "schema": {"type": "string"},
        }
    if status in (429, 503):
        headers["Retry-After"] = {"description": "Seconds.", "schema": {"type": "string"}}
    if status == 416:
        headers["Content-Range"] = {
            "description": "`bytes */SIZE`: the file's size.",
            "schema": {"type": "string"},
        }
    return {
        "description": _ERRORS[status],
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors(*statuses: int) -> dict[str, Json]:
    return {str(s): _error(s) for s in statuses}


def _query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _spellings(names: tuple[str, ...], schema: Json, meaning: str) -> list[Json]:
    first = names[0]
    return [
        _query(n, schema, meaning if n == first else f"{meaning} (another spelling of `{first}`)")
        for n in names
    ]


# Surrounding blanks are tolerated, as the server does.
_WHOLE = {"type": "string", "pattern": "^\\s*[0-9]{1,19}\\s*$"}
_UPLOAD_PARAMS: list[Json] = [
    *_spellings(
        FILENAME,
        {"type": "string", "maxLength": MAX_NAME_LENGTH},
        "The file's name; no control characters.",
    ),
    *_spellings(
        MIME, {"type": "string", "maxLength": 255}, "The file's media type, `type/subtype`."
    ),
    *_spellings(TOTAL_CHUNKS, _WHOLE, f"Number of chunks, 1 to {MAX_TOTAL_CHUNKS}; default 1."),
    *_spellings(TOTAL_SIZE, _WHOLE, "Total size in bytes."),
    *_spellings(CHUNK_NUMBER, _WHOLE, "This chunk's number, 1-based, at most the total."),
    _query(
        THUMBNAIL_SYNC[0],
        {"type": "string", "enum": ["", "0", "1", "true", "false"]},
        "`1`/`true`: wait (at most FILESVC_THUMB_SYNC_TIMEOUT) for thumbnails before answering.",
    ),
]

_COMPANY: Json = {
    "name": "company_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"},
    "description": "The company; the token's `companies` claim must list it.",
}
_FILE: Json = {
    "name": "file_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The file's id, a UUID.",
}
_TOKEN_QUERY: Json = _query(
    "token",
    {"type": "string"},
    "The bearer token, for links and `<img>` (only on the routes that return bytes).",
)
_REQUEST_ID: Json = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}


def _json_ok(description: str, schema_ref: str) -> Json:
    return {
        "description": description,
        "headers": _REQUEST_ID,
        "content": {"application/json": {"schema": {"$ref": schema_ref}}},
    }


def _upload_body(required: bool) -> Json:
    fields = {n: {"type": "string"} for n in (*FILENAME, *MIME, *TOTAL_CHUNKS, *TOTAL_SIZE)}
    fields.update({n: {"type": "string"} for n in CHUNK_NUMBER})
    return {
        "required": required,
        "description": "The bytes: a multipart part named `file` (or the first part with a"
        " filename; resumable.js' parameters may come as form fields before it), or the raw"
        " body as application/octet-stream.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}, **fields},
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }


_BYTES_HEADERS: Json = {
    "ETag": {"description": "Strong; names the content.", "schema": {"type": "string"}},
    "Cache-Control": {"description": "`private, no-cache`.", "schema": {"type": "string"}},
    "X-Content-Type-Options": {"description": "`nosniff`.", "schema": {"type": "string"}},
    **_REQUEST_ID,
}


def _operations() -> dict[str, Json]:
    """Path (without the prefix's trailing-slash twin) to its path item."""
    files = f"{PREFIX}/companies/{{company_id}}/files"
    one = files + "/{file_id}"
    bearer: list[Json] = [{"bearer": []}]
    bytes_auth: list[Json] = [{"bearer": []}, {"tokenQuery": []}]
    metadata_get = {
        "summary": "The file's metadata, or resumable.js testChunks",
        "description": 'Without a chunk-number parameter: `{"resource": FILE}`. With one: 200'
        " (empty body) when that chunk is stored, 204 when it is not.",
        "security": bearer,
        "parameters": _spellings(CHUNK_NUMBER, _WHOLE, "Ask whether this chunk is stored."),
        "responses": {
            "200": {
                "description": "The resource; or, asked about a chunk, it is stored (no body).",
                "headers": _REQUEST_ID,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/FileAnswer"}},
                    "application/octet-stream": {"schema": {"type": "string", "maxLength": 0}},
                },
            },
            "204": {"description": "The chunk asked about is not stored.", "headers": _REQUEST_ID},
            **_errors(400, 401, 403, 404, 500, 503),
        },
    }
    range_headers = [
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "One range, `bytes=START-END` or `bytes=-SUFFIX`; others are ignored.",
        },
        {
            "name": "If-Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "The ETag the client holds; when it differs the whole file is sent.",
        },
    ]
    if_none_match = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "ETags the client holds (weak comparison); a match answers 304.",
    }
    download = {
        "summary": "The file's bytes",
        "security": bytes_auth,
        "parameters": [_TOKEN_QUERY, *range_headers, if_none_match],
        "responses": {
            "200": {
                "description": "The whole file, typed with its stored media type.",
                "headers": {
                    **_BYTES_HEADERS,
                    "Accept-Ranges": {"schema": {"type": "string"}},
                    "Content-Disposition": {
                        "description": "`attachment` with an ASCII `filename=` and a UTF-8"
                        " `filename*=`.",
                        "schema": {"type": "string"},
                    },
                },
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            "206": {
                "description": "The requested range.",
                "headers": {
                    **_BYTES_HEADERS,
                    "Content-Range": {
                        "description": "`bytes START-END/SIZE`.",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                },
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            "304": {"description": "The client's copy is current.", "headers": _BYTES_HEADERS},
            **_errors(400, 401, 403, 404, 409, 416, 500, 503),
        },
    }
    thumbnail = {
        "summary": "Thumbnail number `index` (0-based)",
        "description": "Served `private, no-cache` with the thumbnail's id as ETag: revalidate"
        " with If-None-Match (304 while unchanged; an overwrite puts new bytes behind the"
        " same URL).",
        "security": bytes_auth,
        "parameters": [
            {
                "name": "index",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]{1,6}$"},
            },
            _TOKEN_QUERY,
            if_none_match,
        ],
        "responses": {
            "200": {
                "description": "JPEG, or PNG where the image has transparency.",
                "headers": _BYTES_HEADERS,
                "content": {
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "304": {"description": "The client's copy is current.", "headers": _BYTES_HEADERS},
            **_errors(400, 401, 403, 404, 500, 503),
        },
    }
    upload_errors = _errors(400, 401, 403, 404, 408, 409, 413, 415, 417, 429, 500, 503, 507)
    return {
        files: {
            "parameters": [_COMPANY],
            "post": {
                "summary": "Create a file; with a body, upload it in the same request",
                "security": bearer,
                "parameters": _UPLOAD_PARAMS,
                "requestBody": _upload_body(required=False),
                "responses": {
                    "200": _json_ok("The file created.", "#/components/schemas/FileAnswer"),
                    **upload_errors,
                },
            },
        },
        one: {
            "parameters": [_COMPANY, _FILE],
            "post": {
                "summary": "Upload one chunk, or (an application) overwrite a complete file",
                "security": bearer,
                "parameters": _UPLOAD_PARAMS,
                "requestBody": _upload_body(required=True),
                "responses": {
                    "200": _json_ok(
                        "The file after this chunk.", "#/components/schemas/FileAnswer"
                    ),
                    **upload_errors,
                },
            },
            "get": metadata_get,
            "delete": {
                "summary": "Delete the file (its blobs are reclaimed by gc unless shared)",
                "security": bearer,
                "responses": {
                    "200": _json_ok("Deleted.", "#/components/schemas/Deleted"),
                    **_errors(400, 401, 403, 404, 500, 503, 507),
                },
            },
        },
        f"{PREFIX}/{{company_id}}/files/{{file_id}}": {
            "parameters": [_COMPANY, _FILE],
            "get": {**copy.deepcopy(metadata_get), "summary": "Metadata (the original doc's path)"},
        },
        one + "/download": {
            "parameters": [_COMPANY, _FILE],
            "get": download,
            "head": copy.deepcopy(download),
        },
        one + "/thumbnails/{index}": {
            "parameters": [_COMPANY, _FILE],
            "get": thumbnail,
            "head": copy.deepcopy(thumbnail),
        },
    }


def _with_trailing_slashes(paths: dict[str, Json]) -> dict[str, Json]:
    """The contract accepts a trailing slash on every API path: each twin is documented too,
    with operation ids of its own."""
    out: dict[str, Json] = {}
    for path, item in paths.items():
        out[path] = item
        twin = copy.deepcopy(item)
        for method, op in twin.items():
            if isinstance(op, dict) and "responses" in op:
                op["summary"] = op["summary"] + " (trailing slash)"
                op["operationId"] = _operation_id(method, path) + "_slash"
        out[path + "/"] = twin
    for path, item in paths.items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                op["operationId"] = _operation_id(method, path)
    return out


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.removeprefix(PREFIX).split("/") if w]
    return method + "_" + "_".join(words).replace(".", "_")


def document() -> Json:
    """The whole document (a fresh copy each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "filesvc",
            "version": version("filesvc"),
            "description": "Files REST API of a Twake-style workplace backend over a"
            " content-addressed blob store. Get a token with `filesvc token --company C"
            " --user U` and paste it under Authorize. docs/api.md is the reference.",
        },
        "paths": {
            **_with_trailing_slashes(_operations()),
            **tus_paths(PREFIX, _error),
            **service_paths(_json_ok, _error),
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256)"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id, as written in the access log.",
                    "schema": {"type": "string"},
                }
            },
        },
    }
