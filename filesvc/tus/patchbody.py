"""A PATCH's bytes on their way to the store: checksum verified as they pass, and a body cut off
mid-way ends the stream cleanly so the bytes received are kept (tus resumes from them)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from filesvc.errors import ApiError, ClientAborted, RequestTimeout
from filesvc.tus.headers import Checksum, ChecksumMismatch


class PatchBody:
    """Wraps a body stream.  After the stream ends, ``cut`` holds the transport error that ended
    it early (the bytes before it are to be kept), or None when the body arrived whole."""

    def __init__(self, chunks: AsyncIterator[bytes], checksum: Checksum | None) -> None:
        self._chunks = chunks
        self._checksum = checksum
        self.cut: ApiError | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        hasher = self._checksum.hasher() if self._checksum is not None else None
        try:
            async for piece in self._chunks:
                if hasher is not None:
                    hasher.update(piece)
                yield piece
        except (ClientAborted, RequestTimeout) as exc:
            if self._checksum is not None:
                raise  # bytes that cannot be verified are not kept
            self.cut = exc
            return
        checksum = self._checksum
        matches = hasher is None or checksum is None
        if not matches and hasher is not None and checksum is not None:
            matches = hmac.compare_digest(hasher.digest(), checksum.digest)
        if not matches:
            raise ChecksumMismatch(
                f"the bytes do not match the {self._checksum and self._checksum.algorithm}"
                " checksum sent: nothing of this request was kept; send them again"
            )
