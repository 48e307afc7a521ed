"""The tus 1.0.0 endpoints: ``/companies/{company_id}/uploads[/{file_id}]``.

Same JWT rules and company checks as the files API; errors answer the same envelope (tus
clients read only the status).  Response headers every tus answer carries, and CORS, are added
by :mod:`filesvc.tus.cors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import web

from filesvc.appkeys import SETTINGS, SPACE, TUS, UPLOADS
from filesvc.body import BodyPace, has_body, open_raw
from filesvc.errors import BadRequest, Conflict, PayloadTooLarge
from filesvc.inflight import caller_key
from filesvc.routes.common import PREFIX, authenticate, company_id, file_id
from filesvc.routes.reads import delete_even_on_a_full_disk
from filesvc.tus import headers as h
from filesvc.tus.patchbody import PatchBody
from filesvc.tus.store import Upload

UPLOADS_PATH = "/companies/{company_id}/uploads"

_ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def _pace(request: web.Request) -> BodyPace:
    settings = request.app[SETTINGS]
    return BodyPace(
        idle_timeout=settings.body_idle_timeout,
        min_rate=settings.body_min_rate,
        window=settings.body_rate_window,
        grace=settings.body_rate_grace,
    )


def _location(company: str, fid: str) -> str:
    return f"{PREFIX}/companies/{company}/uploads/{fid}"


def _expires(upload: Upload) -> dict[str, str]:
    if upload.expires_ms is None:
        return {}
    return {"Upload-Expires": formatdate(upload.expires_ms / 1000, usegmt=True)}


def _check_size(request: web.Request, length: int | None) -> None:
    limit = request.app[SETTINGS].max_upload_bytes
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Upload-Length is over the largest upload, {limit} bytes")


async def options(request: web.Request) -> web.Response:
    """Discovery: what this server speaks.  No token needed (browsers send none here)."""
    company_id(request)
    return web.Response(
        status=204,
        headers={
            "Tus-Version": h.TUS_VERSION,
            "Tus-Extension": ",".join(h.EXTENSIONS),
            "Tus-Max-Size": str(request.app[SETTINGS].max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(h.CHECKSUM_ALGORITHMS),
        },
    )


async def create(request: web.Request) -> web.Response:
    """Creation, creation-with-upload, creation-defer-length and concatenation."""
    h.check_resumable(request.headers)
    caller = authenticate(request)
    company = company_id(request)
    concat = h.concat(request.headers, company, PREFIX)
    final = concat is not None and not concat.partial
    length = h.creation_length(request.headers, final=final)
    _check_size(request, length.size)
    meta = h.metadata(request.headers)
    request.app[SPACE].admit()
    tus = request.app[TUS]
    if concat is not None and not concat.partial:
        if has_body(request):
            raise BadRequest("a final upload takes no bytes of its own")
        raw = request.headers["Upload-Concat"].strip()
        fid = await tus.concatenate(
            caller, company, concat.parts, raw, name=meta.name, mime=meta.mime
        )
        return web.Response(status=201, headers={"Location": _location(company, fid)})
    partial = concat is not None
    if not has_body(request):
        upload = await tus.create(
            caller,
            company,
            length=length.size,
            name=meta.name,
            mime=meta.mime,
            partial=partial,
            body=None,
        )
        return web.Response(
            status=201,
            headers={"Location": _location(company, upload.file_id), **_expires(upload)},
        )
    h.check_patch_type(request.headers)
    checksum = h.checksum(request.headers)
    _check_body_fits(request, length.size, 0)
    with request.app[UPLOADS].slot(caller_key(caller, company)):
        body = PatchBody(open_raw(request, _pace(request)), checksum)
        upload = await tus.create(
            caller,
            company,
            length=length.size,
            name=meta.name,
            mime=meta.mime,
            partial=partial,
            body=body.stream(),
        )
    if body.cut is not None:
        raise body.cut
    return web.Response(
        status=201,
        headers={
            "Location": _location(company, upload.file_id),
            "Upload-Offset": str(upload.offset),
            **_expires(upload),
        },
    )


def _check_body_fits(request: web.Request, length: int | None, offset: int) -> None:
    declared = request.content_length
    if declared is None:
        return
    if length is not None and offset + declared > length:
        raise PayloadTooLarge(
            f"the body would take the upload past its Upload-Length of {length} bytes"
        )
    limit = request.app[SETTINGS].max_upload_bytes
    if offset + declared > limit:
        raise PayloadTooLarge(f"the body would take the upload past Tus-Max-Size, {limit} bytes")


async def head(request: web.Request) -> web.Response:
    """Where the upload stands: Upload-Offset, Upload-Length (or deferred), metadata."""
    h.check_resumable(request.headers)
    authenticate(request)
    company = company_id(request)
    upload = await request.app[TUS].state(company, file_id(request), settle=True)
    out = {"Upload-Offset": str(upload.offset), "Cache-Control": "no-store", **_expires(upload)}
    if upload.length is None:
        out["Upload-Defer-Length"] = "1"
    else:
        out["Upload-Length"] = str(upload.length)
    metadata = h.encode_metadata(upload.name, upload.mime)
    if metadata:
        out["Upload-Metadata"] = metadata
    if upload.concat is not None:
        out["Upload-Concat"] = upload.concat
    return web.Response(status=200, headers=out)


async def patch(request: web.Request) -> web.Response:
    """Append the body at ``Upload-Offset``: stored whole before the offset moves."""
    h.check_resumable(request.headers)
    caller = authenticate(request)
    company = company_id(request)
    fid = file_id(request)
    h.check_patch_type(request.headers)
    offset = h.upload_offset(request.headers)
    new_length = h.number(request.headers, "Upload-Length")
    checksum = h.checksum(request.headers)
    request.app[SPACE].admit()
    tus = request.app[TUS]
    with request.app[UPLOADS].slot(caller_key(caller, company)):
        async with tus.writing(fid):
            upload = await tus.state(company, fid)
            tus.check_patchable(upload)
            if offset != upload.offset:
                raise Conflict(
                    f"Upload-Offset {offset} does not match the upload's offset {upload.offset}"
                )
            length = _patch_length(request, upload, new_length)
            _check_body_fits(request, length, offset)
            if upload.complete:
                if has_body(request):
                    raise Conflict("the upload is complete: it takes no more bytes")
                return web.Response(status=204, headers={"Upload-Offset": str(upload.offset)})
            # A deferred length still stops at Tus-Max-Size over all PATCHes together.
            limit = request.app[SETTINGS].max_upload_bytes
            budget = (limit if length is None else length) - offset
            body = PatchBody(open_raw(request, _pace(request)), checksum)
            entry = await tus.put(company, body.stream(), budget)
            upload = await tus.append(company, upload, entry, length=new_length)
    if body.cut is not None:
        raise body.cut  # the bytes that arrived are kept; the client is gone anyway
    return web.Response(
        status=204, headers={"Upload-Offset": str(upload.offset), **_expires(upload)}
    )


def _patch_length(request: web.Request, upload: Upload, new_length: int | None) -> int | None:
    """The upload's length after this PATCH: a deferred length may arrive now, once."""
    if new_length is None:
        return upload.length
    if upload.length is not None:
        if new_length != upload.length:
            raise BadRequest(
                f"Upload-Length {new_length} differs from the upload's length {upload.length}"
            )
        return new_length
    if new_length < upload.offset:
        raise BadRequest(
            f"Upload-Length {new_length} is less than the bytes already uploaded, {upload.offset}"
        )
    _check_size(request, new_length)
    return new_length


async def delete(request: web.Request) -> web.Response:
    """Termination: the upload and its file are gone."""
    h.check_resumable(request.headers)
    authenticate(request)
    await delete_even_on_a_full_disk(request, company_id(request), file_id(request))
    return web.Response(status=204)


def add_routes(app: web.Application, expect: _ExpectHandler | None = None) -> None:
    """Register the tus endpoints (with and without a trailing slash)."""
    base = PREFIX + UPLOADS_PATH
    one = base + "/{file_id}"
    for variant in (base, base + "/"):
        app.router.add_route("OPTIONS", variant, options)
        app.router.add_route("POST", variant, create, expect_handler=expect)
    for variant in (one, one + "/"):
        app.router.add_route("OPTIONS", variant, options)
        app.router.add_route("HEAD", variant, head)
        app.router.add_route("PATCH", variant, patch, expect_handler=expect)
        app.router.add_route("DELETE", variant, delete)
