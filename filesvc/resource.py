"""The file resource of docs/api.md, built from a FileView.  Nothing secret goes in: no path,
no blob ref (another tenant may share the blob), no token."""

from __future__ import annotations

import uuid

from blobstore.manifests import Entry
from filesvc.service import FileView

PREFIX = "/internal/services/files/v1"
_THUMB_NS = uuid.UUID("6f1b7a52-4c1e-4a51-9a77-3d1c7f1b2c10")


def thumbnail_url(company_id: str, file_id: str, index: int) -> str:
    """Where thumbnail ``index`` of the file is served: exactly this path, no query string,
    because clients of the reference API append ``?token=...`` to it.  The same URL serves new
    bytes after an overwrite, so it is served ``no-cache`` with an ETag (the thumbnail's id):
    a client revalidates each time and gets a 304 while nothing changed."""
    return f"{PREFIX}/companies/{company_id}/files/{file_id}/thumbnails/{index}"


def thumbnail_id(file_id: str, entry: Entry) -> str:
    """Stable per file, index and content; not the blob ref."""
    return str(uuid.uuid5(_THUMB_NS, f"{file_id}/{entry.idx}/{entry.ref}"))


def file_resource(view: FileView) -> dict[str, object]:
    """``{"id": ..., "metadata": ..., "thumbnails": [...], "upload_data": ...}``."""
    row = view.row
    thumbnails = []
    for entry in view.thumbnails:
        attrs = entry.attrs or {}
        thumb_id = thumbnail_id(row.file_id, entry)
        thumbnails.append(
            {
                "index": entry.idx,
                "id": thumb_id,
                "type": attrs.get("type"),
                "size": entry.size,
                "width": attrs.get("width"),
                "height": attrs.get("height"),
                "url": thumbnail_url(row.company_id, row.file_id, entry.idx),
            }
        )
    uploaded = sum(e.size for e in view.chunks)
    return {
        "id": row.file_id,
        "company_id": row.company_id,
        "user_id": row.user_id,
        "application_id": row.application_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "metadata": {
            "name": row.name,
            "mime": row.mime,
            "thumbnails_status": row.thumbnails_status,
            "thumbnails_error": row.thumbnails_error,
        },
        "thumbnails": thumbnails,
        "upload_data": {
            "size": row.expected_size,
            "chunks": row.expected_chunks,
            "uploaded_size": uploaded,
            "uploaded_chunks": len(view.chunks),
            "complete": row.complete,
        },
    }
