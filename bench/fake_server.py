"""A minimal stand-in for `filesvc serve` that speaks the subset of docs/api.md the bench uses.

It exists so the harness can be tested end to end without the real service (`python -m bench
--target fake`), and it doubles as a yardstick: the plainest durable aiohttp upload path (stream
to a temp file, fsync, rename). Metadata lives in memory; nothing here is production code.

    python -m bench.fake_server serve --host 127.0.0.1 --port P --data-dir D
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from aiohttp import BodyPartReader, web

PREFIX = "/internal/services/files/v1"
READ_CHUNK = 1 << 20


@dataclass
class FakeFile:
    id: str
    company: str
    name: str
    total_size: int
    total_chunks: int
    chunks: dict[int, tuple[Path, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.total_chunks and (
            sum(n for _, n in self.chunks.values()) == self.total_size
        )

    def resource(self) -> dict[str, object]:
        return {
            "id": self.id,
            "company_id": self.company,
            "metadata": {"name": self.name, "mime": "application/octet-stream"},
            "upload_data": {"size": self.total_size, "chunks": self.total_chunks},
        }


FILES = web.AppKey[dict[str, FakeFile]]("files")
DATA = web.AppKey[Path]("data")
SECRET = web.AppKey[str]("secret")


def _auth(request: web.Request) -> str:
    company = request.match_info["company"]
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
    try:
        claims = jwt.decode(token, request.app[SECRET], algorithms=["HS256"])
    except jwt.PyJWTError as e:
        raise web.HTTPUnauthorized(text='{"statusCode":401}') from e
    if company not in claims.get("companies", []):
        raise web.HTTPForbidden()
    return company


def _int(request: web.Request, *names: str, default: int) -> int:
    for n in names:
        if n in request.query:
            return int(request.query[n])
    return default


async def _store(request: web.Request, dest: Path) -> int:
    """Stream the body (raw, or the first multipart part) to `dest` durably; bytes written."""
    tmp = dest.with_name(dest.name + f".tmp-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    n = 0
    try:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            if not isinstance(part, BodyPartReader):
                raise web.HTTPBadRequest()
            while data := await part.read_chunk(READ_CHUNK):
                n += os.write(fd, data)
        else:
            while data := await request.content.readany():
                n += os.write(fd, data)
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
    tmp.rename(dest)
    return n


async def create(request: web.Request) -> web.Response:
    company = _auth(request)
    q = request.query
    f = FakeFile(
        id=str(uuid.uuid4()),
        company=company,
        name=q.get("resumableFilename") or q.get("filename") or "upload",
        total_size=_int(request, "resumableTotalSize", "total_size", default=-1),
        total_chunks=_int(request, "resumableTotalChunks", "total_chunks", default=1),
    )
    request.app[FILES][f.id] = f
    if request.can_read_body:
        path = request.app[DATA] / f"{f.id}.1"
        n = await _store(request, path)
        f.chunks[1] = (path, n)
        f.total_size, f.total_chunks = n, 1
    return web.json_response({"resource": f.resource()})


def _get(request: web.Request) -> FakeFile:
    company = _auth(request)
    f: FakeFile | None = request.app[FILES].get(request.match_info["id"])
    if f is None or f.company != company:
        raise web.HTTPNotFound()
    return f


async def chunk(request: web.Request) -> web.Response:
    f = _get(request)
    k = _int(request, "resumableChunkNumber", "chunk_number", default=1)
    path = request.app[DATA] / f"{f.id}.{k}"
    f.chunks[k] = (path, await _store(request, path))
    return web.json_response({"resource": f.resource()})


async def metadata(request: web.Request) -> web.Response:
    return web.json_response({"resource": _get(request).resource()})


async def download(request: web.Request) -> web.StreamResponse:
    f = _get(request)
    if not f.complete:
        raise web.HTTPConflict()
    if f.total_chunks == 1:
        return web.FileResponse(f.chunks[1][0])
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = f.total_size
    await resp.prepare(request)
    for k in range(1, f.total_chunks + 1):
        with open(f.chunks[k][0], "rb") as fh:
            while data := fh.read(READ_CHUNK):
                await resp.write(data)
    await resp.write_eof()
    return resp


def make_app(data_dir: Path, secret: str) -> web.Application:
    app = web.Application()
    app[FILES] = {}
    app[DATA] = data_dir
    app[SECRET] = secret
    base = PREFIX + "/companies/{company}/files"
    app.router.add_post(base, create)
    app.router.add_post(base + "/{id}", chunk)
    app.router.add_get(base + "/{id}", metadata)
    app.router.add_get(base + "/{id}/download", download)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_server")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    secret = os.environ.get("FILESVC_JWT_SECRET", "")
    web.run_app(make_app(args.data_dir, secret), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
