"""POST routes: create a file (optionally with its bytes) and upload a chunk."""

from __future__ import annotations

from aiohttp import HttpVersion11, hdrs, web

from filesvc.accesslog import FILE_ID
from filesvc.appkeys import SERVICE, SETTINGS, SPACE, UPLOADS
from filesvc.body import BodyPace, UploadBody, check_declared_size, has_body, open_body
from filesvc.errors import ApiError, BadRequest
from filesvc.inflight import caller_key
from filesvc.jsonbody import json_answer
from filesvc.middleware import envelope
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


async def _open(request: web.Request) -> UploadBody:
    settings = request.app[SETTINGS]
    pace = BodyPace(
        idle_timeout=settings.body_idle_timeout,
        min_rate=settings.body_min_rate,
        window=settings.body_rate_window,
        grace=settings.body_rate_grace,
    )
    return await open_body(request, settings.max_upload_bytes, pace)


def _answer(request: web.Request, view: FileView) -> web.Response:
    request[FILE_ID] = view.row.file_id
    return json_answer({"resource": file_resource(view)})


async def create_file(request: web.Request) -> web.Response:
    """POST /companies/{c}/files: create; with a body, upload it in the same request."""
    caller = authenticate(request)
    company = company_id(request)
    params = UploadParams.parse(request.query)
    request.app[SPACE].admit()
    if not has_body(request):
        view = await request.app[SERVICE].create(caller, company, params, None)
        return _answer(request, view)
    with request.app[UPLOADS].slot(caller_key(caller, company)):
        body = await _open(request)
        if body.fields:
            params = UploadParams.parse(request.query, body.fields)
        view = await request.app[SERVICE].create(caller, company, params, body)
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
    request.app[SPACE].admit()
    with request.app[UPLOADS].slot(caller_key(caller, company)):
        body = await _open(request)
        if body.fields:
            params = UploadParams.parse(request.query, body.fields)
        view = await request.app[SERVICE].upload_chunk(caller, company, fid, params, body)
    return _answer(request, view)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on the upload routes: answer what the headers alone decide (bad
    token, another company, a body over the limit) instead of inviting the body, which the
    client would then stream for nothing and likely see the connection reset under it.
    Runs before the middlewares, so it renders the envelope itself."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    refusal: web.Response | None = None
    if expect.strip().lower() != "100-continue":
        refusal = envelope(417, "the only expectation understood is 100-continue")
    else:
        try:
            authenticate(request)
            company_id(request)
            check_declared_size(request, request.app[SERVICE].max_upload_bytes)
        except ApiError as exc:
            refusal = envelope(exc.status, exc.message, exc.headers)
    if refusal is not None:
        refusal.force_close()  # the body was never invited: do not wait for it
        return refusal
    # What aiohttp's default expect handler does: the interim answer, not counted as output.
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None
