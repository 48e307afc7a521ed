"""POST routes: create a file (optionally with its bytes) and upload a chunk."""

from __future__ import annotations

from aiohttp import hdrs, web

from filesvc.appkeys import SERVICE
from filesvc.body import has_body, open_body
from filesvc.errors import BadRequest
from filesvc.params import UploadParams
from filesvc.resource import file_resource
from filesvc.routes.common import authenticate, company_id, file_id
from filesvc.service import FileView


def _says_octet_stream(request: web.Request) -> bool:
    """True only when the client sent ``Content-Type: application/octet-stream`` itself:
    ``request.content_type`` reports that type for a request with no Content-Type at all."""
    if hdrs.CONTENT_TYPE not in request.headers:
        return False
    return request.content_type == "application/octet-stream"


def _answer(request: web.Request, view: FileView) -> web.Response:
    return web.json_response({"resource": file_resource(view)})


async def create_file(request: web.Request) -> web.Response:
    """POST /companies/{c}/files: create; with a body, upload it in the same request."""
    caller = authenticate(request)
    company = company_id(request)
    params = UploadParams.parse(request.query)
    service = request.app[SERVICE]
    body = await open_body(request, service.max_upload_bytes) if has_body(request) else None
    view = await service.create(caller, company, params, body)
    return _answer(request, view)


async def upload_chunk(request: web.Request) -> web.Response:
    """POST /companies/{c}/files/{id}: one chunk of an upload, or an application's overwrite."""
    caller = authenticate(request)
    company = company_id(request)
    fid = file_id(request)
    params = UploadParams.parse(request.query)
    if not has_body(request) and not _says_octet_stream(request):
        # An explicit octet-stream with no bytes is an empty chunk; no body at all is a mistake.
        raise BadRequest("the chunk's bytes are missing: send them as part 'file' or raw body")
    service = request.app[SERVICE]
    body = await open_body(request, service.max_upload_bytes)
    view = await service.upload_chunk(caller, company, fid, params, body)
    return _answer(request, view)
