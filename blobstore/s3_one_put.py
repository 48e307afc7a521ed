"""A large blob whose size is known before its first byte, sent to S3 as one streamed PUT.

obstore's PUT takes its body in memory, so a stream of unknown length goes up as a multipart
upload (:mod:`blobstore.s3_staging`).  When the length is known up front (a raw body's
Content-Length), one PUT streamed as the bytes arrive costs less on both sides: the engine
skips the parts' bookkeeping and the completion, and the bytes go from the sealing thread's
output to the socket with no copy into a client's part buffers.  Measured on SeaweedFS here
(docs/storage-s3.md, "One PUT when the size is known"): less CPU per byte in filesvc and in
the engine, and no incomplete upload left by a killed server.

The request is signed by botocore's SigV4 signer (``UNSIGNED-PAYLOAD``, as for obstore's
requests) and sent by aiohttp, fed from a queue of at most :data:`QUEUED` bytes: a writer
waits while the engine is not taking them, so memory per upload stays bounded whatever the
client sends.  A PUT cut before its last byte stores nothing (S3 keeps an object only when
its whole Content-Length arrived).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from blobstore.backends import S3Location
from blobstore.errors import StorageFailure
from blobstore.s3_errors import by_status

# Bytes waiting for the socket per upload: a writer waits beyond this.  Two batches of the
# store's writes (1 MiB each): one being sent while the next is sealed.
QUEUED = 2 << 20
# S3's limit for one PUT; a larger blob goes up as a multipart upload.
MAX_SIZE = 5 << 30
# An engine that takes no byte, or gives no answer, for this long is treated as gone (503,
# Retry-After).
STALL_S = 120.0
CONNECT_S = 5.0
# Bodies go out unsigned (the ref and AES-GCM tags check every byte end to end).
_SIGNING = Config(s3={"payload_signing_enabled": False})


def _signed_headers(location: S3Location, url: str, size: int) -> dict[str, str]:
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    request.context["client_config"] = _SIGNING
    credentials = Credentials(location.access_key_id, location.secret_access_key)
    S3SigV4Auth(credentials, "s3", location.region).add_auth(request)
    return dict(request.headers.items())


class HttpClient:
    """The connections one-PUT uploads go out on, kept between them (one per backend)."""

    def __init__(self) -> None:
        # No cap on connections: each upload holds one while its client sends, and the server
        # bounds the uploads in flight itself (a cap here would queue them, unseen).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def close(self) -> None:
        await self.session.close()


class OnePut:
    """One PUT of exactly ``size`` bytes to ``key``, under way from construction: ``send`` the
    bytes, then ``finish`` (the engine's answer), or ``abort``."""

    def __init__(self, http: HttpClient, location: S3Location, key: str, size: int) -> None:
        self._size = size
        self._sent = 0
        self._loop = asyncio.get_running_loop()
        self._taken_at = self._loop.time()  # when the request last took a piece
        self._queue: deque[bytes | memoryview] = deque()
        self._queued = 0
        self._closed = False
        self._ready = asyncio.Event()  # set when the body generator has something to take
        self._room = asyncio.Event()  # set when the queue went down, or the request ended
        url = f"{location.endpoint.rstrip('/')}/{location.bucket}/{key}"
        headers = _signed_headers(location, url, size)
        self._task = asyncio.ensure_future(self._request(http.session, url, headers))
        self._task.add_done_callback(lambda _: self._room.set())

    async def _request(
        self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]
    ) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S, sock_read=STALL_S)
        body = self._body()
        try:
            async with http.put(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status >= 300:
                    text = (await resp.content.read(2048)).decode("utf-8", "replace")
                    raise by_status(resp.status, text)
        except (aiohttp.ClientError, OSError, TimeoutError):
            raise by_status(None) from None

    async def _body(self) -> AsyncIterator[bytes | memoryview]:
        queue = self._queue
        while True:
            while not queue:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
            piece = queue.popleft()
            self._queued -= len(piece)
            self._taken_at = self._loop.time()
            self._room.set()
            yield piece

    @property
    def whole(self) -> bool:
        """True once every announced byte was given to ``send``."""
        return self._sent == self._size

    async def send(self, data: bytes | memoryview) -> None:
        """Queue ``data`` (kept, not copied: not to be changed until sent); waits while
        :data:`QUEUED` bytes are waiting already."""
        if self._sent + len(data) > self._size:
            raise ValueError(f"more than the {self._size} bytes announced for this PUT")
        try:
            async with asyncio.timeout(STALL_S):
                while self._queued >= QUEUED and not self._task.done():
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            await self._cut()
            raise by_status(None) from None
        if self._task.done():
            self._raise_outcome()
        self._queue.append(data)
        self._queued += len(data)
        self._sent += len(data)
        self._ready.set()

    async def finish(self) -> None:
        """Wait for the engine to store the object; raises StoreUnavailable, StoreFull or
        StorageFailure when it did not, or took no byte and gave no answer for
        :data:`STALL_S` (the request is then cut: see ``abort`` for what may be stored)."""
        if self._sent != self._size:
            await self.abort()
            raise ValueError(f"{self._sent} bytes sent, not the {self._size} announced")
        self._end_body()
        if not await self._settled(lambda: self._taken_at + STALL_S):
            await self._cut()
            raise by_status(None)
        self._task.result()

    async def _settled(self, deadline: Callable[[], float]) -> bool:
        """Wait for the request to end (never cancelling it, even when this wait is) until the
        ``deadline()`` of the moment; True when it ended."""
        while not self._task.done():
            left = deadline() - self._loop.time()
            if left <= 0:
                return False
            await asyncio.wait({self._task}, timeout=left)
        return True

    def _end_body(self) -> None:
        """No more pieces: the body ends once the queued ones are taken."""
        self._closed = True
        self._ready.set()

    def _raise_outcome(self) -> None:
        error = self._task.exception() if not self._task.cancelled() else None
        if error is not None:
            raise error
        raise StorageFailure("the blob store ended a PUT before its body")

    async def abort(self) -> None:
        """End the request.  Short of its length it is cut, and the engine stores nothing; once
        every byte went, the engine may store it whatever this side does, so its answer is
        awaited (a while, as ``finish`` would), for a delete after this to find the object."""
        if self.whole:
            self._end_body()
            started = self._loop.time()
            await self._settled(lambda: started + STALL_S)
        await self._cut()

    async def _cut(self) -> None:
        """Cut the request if it is still under way, and wait until it has ended."""
        self._end_body()
        self._queue.clear()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
