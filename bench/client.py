"""aiohttp client workloads against the filesvc HTTP contract (docs/api.md) and its ceiling.

Bodies are streamed from `bench.data` generators with an exact Content-Length, never held whole
in memory. Many-request workloads run in worker processes (`run_many`), because one Python client
process tops out below what the server can take on this 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt

from bench.data import aiter_stream, small_body
from bench.server import ServerProcess, filesvc_server

PREFIX = "/internal/services/files/v1"
TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=30)


class WorkloadError(RuntimeError):
    """The target answered something other than success; the message says what."""


def mint_token(secret: str, company: str, user: str = "bench", ttl_s: int = 6 * 3600) -> str:
    """An HS256 token with the claims docs/api.md asks for."""
    now = int(time.time())
    claims = {"sub": user, "exp": now + ttl_s, "iat": now, "companies": [company]}
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class FilesApi:
    """Where and as whom to talk to a server that speaks the filesvc contract."""

    base_url: str  # http://127.0.0.1:PORT
    company: str
    token: str

    @classmethod
    def local(cls, port: int, company: str, secret: str) -> FilesApi:
        """The server on this machine's ``port``, as a fresh token for ``company``."""
        return cls(f"http://127.0.0.1:{port}", company, mint_token(secret, company))

    @property
    def files_url(self) -> str:
        return f"{self.base_url}{PREFIX}/companies/{self.company}/files"

    @property
    def uploads_url(self) -> str:
        """The tus endpoint."""
        return f"{self.base_url}{PREFIX}/companies/{self.company}/uploads"

    def file_url(self, file_id: str) -> str:
        return f"{self.files_url}/{file_id}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def multipart_parts(
    filename: str, content_type: str = "application/octet-stream"
) -> tuple[bytes, bytes, str]:
    """Head and tail around one file part named `file`, and the body's Content-Type."""
    boundary = "----filesvcbench" + uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


async def check_status(resp: aiohttp.ClientResponse, what: str) -> dict[str, object]:
    if resp.status >= 300:
        text = (await resp.text())[:300]
        raise WorkloadError(f"{what}: HTTP {resp.status}: {text}")
    if resp.content_type == "application/json":
        body = await resp.json()
        if isinstance(body, dict):
            return body
    await resp.read()
    return {}


def _resource_id(body: dict[str, object], what: str) -> str:
    res = body.get("resource")
    if isinstance(res, dict) and isinstance(res.get("id"), str):
        return str(res["id"])
    raise WorkloadError(f"{what}: no resource id in {str(body)[:200]}")


async def post_stream(
    session: aiohttp.ClientSession,
    url: str,
    size: int,
    seed: int,
    *,
    multipart: bool,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    method: str = "POST",
    filename: str = "bench.bin",
) -> dict[str, object]:
    """Send stream `seed` of `size` bytes as a raw or multipart body; the JSON answer."""
    hdrs = dict(headers or {})
    if multipart:
        head, tail, ctype = multipart_parts(filename)
    else:
        head, tail, ctype = b"", b"", "application/octet-stream"
    hdrs["Content-Type"] = ctype
    hdrs["Content-Length"] = str(len(head) + size + len(tail))
    body = aiter_stream(size, seed, head, tail)
    async with session.request(method, url, data=body, headers=hdrs, params=params) as resp:
        return await check_status(resp, f"{method} {url}")


async def upload_single(
    session: aiohttp.ClientSession, api: FilesApi, size: int, seed: int, *, multipart: bool
) -> str:
    """One-request upload (`POST /files`, multipart part `file` or raw body); the file id."""
    params = {"filename": f"single-{seed}.bin"}
    if not multipart:
        params["total_size"] = str(size)
    body = await post_stream(
        session,
        api.files_url,
        size,
        seed,
        multipart=multipart,
        headers=api.auth,
        params=params,
        filename=f"single-{seed}.bin",
    )
    return _resource_id(body, "single upload")


async def create_file(
    session: aiohttp.ClientSession, api: FilesApi, name: str, total_size: int, total_chunks: int
) -> str:
    params = {"filename": name, "total_size": str(total_size), "total_chunks": str(total_chunks)}
    async with session.post(api.files_url, params=params, headers=api.auth) as resp:
        return _resource_id(await check_status(resp, "create file"), "create file")


async def upload_chunked(
    session: aiohttp.ClientSession,
    api: FilesApi,
    size: int,
    chunk_size: int,
    parallel: int,
    seed: int,
    *,
    multipart: bool = True,
) -> str:
    """The reference web client's pattern: create, then chunks `parallel` at a time, in
    resumable.js's parameter names (multipart part `file`, like resumable.js sends)."""
    n = max(1, -(-size // chunk_size))
    file_id = await create_file(session, api, f"chunked-{seed}.bin", size, n)
    sem = asyncio.Semaphore(parallel)

    async def one(k: int) -> None:
        this = min(chunk_size, size - (k - 1) * chunk_size)
        params = {
            "resumableChunkNumber": str(k),
            "resumableTotalChunks": str(n),
            "resumableTotalSize": str(size),
            "resumableChunkSize": str(chunk_size),
            "resumableFilename": f"chunked-{seed}.bin",
        }
        async with sem:
            await post_stream(
                session,
                api.file_url(file_id),
                this,
                seed * 100_000 + k,
                multipart=multipart,
                headers=api.auth,
                params=params,
                filename=f"chunked-{seed}.bin",
            )

    await asyncio.gather(*(one(k) for k in range(1, n + 1)))
    return file_id


async def download(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str] | None = None,
    byte_range: tuple[int, int] | None = None,
) -> int:
    """GET `url` and count the bytes (reading into nothing); `byte_range` is inclusive."""
    hdrs = dict(headers or {})
    if byte_range is not None:
        hdrs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
    async with session.get(url, headers=hdrs) as resp:
        if resp.status not in (200, 206):
            raise WorkloadError(f"GET {url}: HTTP {resp.status}: {(await resp.text())[:300]}")
        if byte_range is not None and resp.status != 206:
            raise WorkloadError(f"GET {url} with Range answered {resp.status}, not 206")
        n = 0
        while True:
            data = await resp.content.readany()
            if not data:
                break
            n += len(data)
        return n


async def timed_many(
    fn: Callable[[int], Awaitable[object]], ids: list[int], concurrency: int
) -> tuple[float, list[float]]:
    """Run `fn(i)` for every i with at most `concurrency` in flight; (seconds, latencies)."""
    latencies: list[float] = []
    queue = list(reversed(ids))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            await fn(i)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(ids)))))
    return time.perf_counter() - t0, latencies


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def upload_small_files(
    session: aiohttp.ClientSession, api: FilesApi, count: int, size: int, prefix: str
) -> tuple[str, ...]:
    """Upload ``count`` distinct raw bodies of ``size`` bytes one after the other: their ids."""
    ids = []
    for i in range(count):
        async with session.post(
            api.files_url,
            data=small_body(i, size),
            headers={**api.auth, "Content-Type": "application/octet-stream"},
            params={"filename": f"{prefix}{i}.bin", "total_size": str(size)},
        ) as resp:
            ids.append(_resource_id(await check_status(resp, "upload"), "upload"))
    return tuple(ids)


def wait_ready(base_url: str, timeout_s: float = 60.0) -> None:
    """Until ``/readyz`` answers 200 (PostgreSQL connected and migrated)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2):  # noqa: S310
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"filesvc at {base_url} not ready within {timeout_s:.0f} s")


async def started_with_file(
    servers: list[ServerProcess], work: Path, secret: str, env: dict[str, str], size: int
) -> tuple[ServerProcess, FilesApi, str]:
    """A `filesvc serve` started on a data directory of its own under ``work`` (added to
    ``servers``, which the caller stops), with one file of ``size`` bytes (stream 1) uploaded
    through it: the server, its API and the file's id."""
    n = len(servers)
    server = filesvc_server(work / f"data{n}", work / f"filesvc{n}.log", secret, env=env)
    servers.append(server)
    await asyncio.to_thread(server.start)
    api = FilesApi.local(server.port, "bench", secret)
    await asyncio.to_thread(wait_ready, api.base_url)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        fid = await upload_single(s, api, size, 1, multipart=False)
    return server, api, fid
