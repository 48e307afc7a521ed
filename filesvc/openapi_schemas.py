"""The JSON schemas of the OpenAPI document (``filesvc/openapi.py``): what each body holds."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def schemas() -> Json:
    """The components' schemas: the envelope, the file resource, the probes' answers."""
    nullable_int = {"type": ["integer", "null"]}
    thumbnail = {
        "type": "object",
        "required": ["index", "id", "type", "size", "width", "height", "url"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "id": {"type": "string", "format": "uuid"},
            "type": {"type": ["string", "null"]},
            "size": {"type": "integer", "minimum": 0},
            "width": nullable_int,
            "height": nullable_int,
            "url": {
                "type": "string",
                "description": "Exactly `.../files/{id}/thumbnails/{index}`; no query string.",
            },
        },
    }
    file = {
        "type": "object",
        "required": [
            "id",
            "company_id",
            "user_id",
            "application_id",
            "created_at",
            "updated_at",
            "metadata",
            "thumbnails",
            "upload_data",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "company_id": {"type": "string"},
            "user_id": {"type": "string"},
            "application_id": {"type": ["string", "null"]},
            "created_at": {"type": "integer", "description": "Epoch milliseconds."},
            "updated_at": {"type": "integer", "description": "Epoch milliseconds."},
            "metadata": {
                "type": "object",
                "required": ["name", "mime", "thumbnails_status"],
                "properties": {
                    "name": {"type": ["string", "null"]},
                    "mime": {"type": ["string", "null"]},
                    "thumbnails_status": {"enum": ["waiting", "done", "error"]},
                },
            },
            "thumbnails": {"type": "array", "items": thumbnail},
            "upload_data": {
                "type": "object",
                "required": ["size", "chunks", "uploaded_size", "uploaded_chunks", "complete"],
                "properties": {
                    "size": nullable_int,
                    "chunks": nullable_int,
                    "uploaded_size": {"type": "integer", "minimum": 0},
                    "uploaded_chunks": {"type": "integer", "minimum": 0},
                    "complete": {"type": "boolean"},
                },
            },
        },
    }
    check = {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string"}},
        "additionalProperties": False,
    }
    return {
        "Error": {
            "type": "object",
            "required": ["statusCode", "error", "message"],
            "properties": {
                "statusCode": {"type": "integer"},
                "error": {"type": "string", "description": "The status' reason phrase."},
                "message": {"type": "string", "description": "What to do about it."},
            },
            "additionalProperties": False,
        },
        "File": file,
        "FileAnswer": {
            "type": "object",
            "required": ["resource"],
            "properties": {"resource": {"$ref": "#/components/schemas/File"}},
        },
        "Deleted": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "success"}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"enum": ["ready", "not ready"]},
                "checks": {"type": "object", "additionalProperties": check},
            },
        },
    }
