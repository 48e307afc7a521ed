"""The sealed blob format: AES-256-GCM in fixed segments, bound to the blob's identity.

A sealed blob is its segments, then a trailer::

    segment 0 | segment 1 | ... | segment n-1 | trailer (48 bytes)

Each segment is ``SEGMENT`` bytes of plaintext (the last one fewer, an empty blob one empty
segment) encrypted with AES-256-GCM and followed by its 16-byte tag.  The blob key is derived
from the scope's data key and a random 16-byte blob id (``HMAC-SHA256(data key, label | id)``),
so every blob has a key of its own and the segment index can be the nonce.  Each segment's
associated data is ``blob id | index | final flag``: a segment moved to another place, another
blob or past the end fails its tag, and a blob cut at a segment boundary fails on the segment
that now looks final.

The trailer says how to read the rest and binds the blob to its name::

    magic "fsE1" | version 1 | log2(SEGMENT) | 2 zero bytes | blob id (16) | plain size (8)
    | mac (16)

``mac`` is an HMAC-SHA256 (truncated to 16 bytes) under a key derived from the scope's data key,
over the trailer's first 32 bytes, the plaintext digest and the scope the ref names.  A reader
checks it before the first byte goes out, so a blob renamed to another ref, a trailer of
another blob, or a blob whose size was changed is refused before anything is sent.  (The
collision variant of a ref is not bound: the trailer is written before the store knows which
variant the bytes get; see docs/encryption.md.)

Nothing here does I/O: :mod:`blobstore.sealed` moves the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blobstore.errors import BlobCorrupt

MAGIC = b"fsE1"
VERSION = 1
# Plaintext bytes per segment.  64 KiB: measured against 16 KiB, 256 KiB and 1 MiB on this
# machine (docs/encryption.md), it encrypts fastest (the segment and its output stay in the
# CPU's cache) and a range read decrypts at most 64 KiB it does not send on each side.
SEGMENT_SHIFT = 16
SEGMENT = 1 << SEGMENT_SHIFT
TAG = 16
SEALED_SEGMENT = SEGMENT + TAG
ID_BYTES = 16
TRAILER = 48
_TRAILER_HEAD = struct.Struct(">4sBBH16sQ")  # 32 bytes: what the mac covers besides the name
_BLOB_KEY_LABEL = b"filesvc blob key v1\x00"
_BIND_KEY_LABEL = b"filesvc blob binding v1"
DATA_KEY_BYTES = 32


def sealed_size(plain: int) -> int:
    """The stored size of a blob of ``plain`` bytes."""
    segments = max(1, -(-plain // SEGMENT))
    return plain + segments * TAG + TRAILER


def plain_size(stored: int) -> int | None:
    """The plaintext size of a sealed blob stored in ``stored`` bytes, or None when no sealed
    blob has that size (it was cut or grown)."""
    body = stored - TRAILER
    if body < TAG:
        return None
    full, rest = divmod(body, SEALED_SEGMENT)
    if rest == 0:
        plain = full * SEGMENT
    elif rest > TAG or (rest == TAG and full == 0):
        plain = full * SEGMENT + rest - TAG
    else:
        return None
    return plain if sealed_size(plain) == stored else None


def segment_count(plain: int) -> int:
    return max(1, -(-plain // SEGMENT))


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(blob_id: bytes, index: int, final: bool) -> bytes:
    return blob_id + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class ScopeKey:
    """A scope's data key and what is derived from it (kept in memory only)."""

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError("a data key is 32 bytes")
        self._key = data_key
        bind_key = hmac.new(data_key, _BIND_KEY_LABEL, hashlib.sha256).digest()
        # Both HMACs keyed once: a copy of a keyed state costs half of keying anew, and every
        # blob written or read takes one of each (small uploads: bench/README.md).
        self._blob_mac = hmac.new(data_key, _BLOB_KEY_LABEL, hashlib.sha256)
        self._bind_mac = hmac.new(bind_key, None, hashlib.sha256)
        self._derived: dict[bytes, bytes] = {}

    def blob_cipher(self, blob_id: bytes) -> AESGCM:
        mac = self._blob_mac.copy()
        mac.update(blob_id)
        return AESGCM(mac.digest())

    def derived(self, label: bytes) -> bytes:
        """A 32-byte key for another use of this scope's key (the inline rows' fingerprints):
        derived once per label, not per blob."""
        found = self._derived.get(label)
        if found is None:
            found = self._derived[label] = hmac.new(self._key, label, hashlib.sha256).digest()
        return found

    def binding(self, head: bytes, digest: str, scope: str) -> bytes:
        mac = self._bind_mac.copy()
        mac.update(head + bytes.fromhex(digest) + bytes.fromhex(scope))
        return mac.digest()[:16]


class Sealer:
    """Seals one blob as its plaintext streams past; holds at most one segment of plaintext.

    :meth:`feed` returns the sealed bytes of every segment known not to be the last;
    :meth:`finish` seals the held rest as the final segment and returns it with the trailer."""

    def __init__(self, key: ScopeKey) -> None:
        self._key = key
        self.blob_id = os.urandom(ID_BYTES)
        self._cipher = key.blob_cipher(self.blob_id)
        self._held = bytearray()
        self._out = bytearray()  # grown to the first batch that seals (small blobs: never)
        self._index = 0
        self._size = 0

    def feed(self, data: bytes | memoryview) -> bytes:
        return bytes(self.feed_view(data))

    def feed_view(self, data: bytes | memoryview) -> memoryview:
        """What :meth:`feed` returns, as a view of a buffer kept for the blob's life: valid until
        the next call (the caller writes it out before feeding more)."""
        return self.feed_many((data,))

    def feed_many(self, pieces: Sequence[bytes | memoryview]) -> memoryview:
        """:meth:`feed_view` of the pieces' concatenation, without joining them: a segment is
        sealed straight from the piece holding it, and only one that straddles two pieces is
        gathered first (a copy of at most a segment per piece)."""
        # Sealed into one buffer kept for the blob's life: fresh memory for every segment's
        # output costs more than the AES here (page faults; docs/encryption.md).
        held = self._held
        fed = sum(len(p) for p in pieces)
        self._size += fed
        total = len(held) + fed
        # Seal every whole segment but the last one known: more may follow, and the last
        # segment of the blob is sealed apart (its flag), by finish.
        left = (total - 1) // SEGMENT if total else 0
        if left * SEALED_SEGMENT > len(self._out):
            self._out = bytearray(left * SEALED_SEGMENT)
        out = memoryview(self._out)
        n = 0
        for piece in pieces:
            view = memoryview(piece)
            while left and view:
                if held:
                    take = min(SEGMENT - len(held), len(view))
                    held += view[:take]
                    view = view[take:]
                    if len(held) == SEGMENT:
                        n = self._seal_into(held, out, n)
                        left -= 1
                        held = bytearray()
                elif len(view) >= SEGMENT:
                    whole = min(len(view) // SEGMENT, left)
                    for i in range(0, whole * SEGMENT, SEGMENT):
                        n = self._seal_into(view[i : i + SEGMENT], out, n)
                    left -= whole
                    view = view[whole * SEGMENT :]
                else:
                    break
            if view:
                held += view
        self._held = held
        return out[:n]

    def _seal_into(self, plain: bytes | bytearray | memoryview, out: memoryview, at: int) -> int:
        """Seal one segment that is not the last into ``out[at:]``; the end of it."""
        index = self._index
        self._index += 1
        end = at + len(plain) + TAG
        aad = _aad(self.blob_id, index, False)
        self._cipher.encrypt_into(_nonce(index), plain, aad, out[at:end])
        return end

    def finish(self, digest: str, scope: str) -> bytes:
        last = self._seal(bytes(self._held), final=True)
        self._held = bytearray()
        head = _TRAILER_HEAD.pack(MAGIC, VERSION, SEGMENT_SHIFT, 0, self.blob_id, self._size)
        return last + head + self._key.binding(head, digest, scope)

    def _seal(self, plain: bytes | memoryview, *, final: bool) -> bytes:
        index = self._index
        self._index += 1
        return self._cipher.encrypt(_nonce(index), plain, _aad(self.blob_id, index, final))


@dataclass(frozen=True)
class Trailer:
    """A verified trailer: how to open the blob's segments."""

    blob_id: bytes
    plain: int


def read_trailer(key: ScopeKey, raw: bytes, *, stored: int, digest: str, scope: str) -> Trailer:
    """Check a blob's trailer against its name and stored size; raise BlobCorrupt if it does not
    belong to that blob."""
    if len(raw) != TRAILER:
        raise BlobCorrupt("sealed blob is too short")
    head, mac = raw[:32], raw[32:]
    magic, version, shift, _, blob_id, plain = _TRAILER_HEAD.unpack(head)
    if magic != MAGIC or version != VERSION or shift != SEGMENT_SHIFT:
        raise BlobCorrupt("sealed blob has no valid trailer")
    if not hmac.compare_digest(mac, key.binding(head, digest, scope)):
        raise BlobCorrupt("sealed blob does not belong to this ref (trailer check failed)")
    if sealed_size(plain) != stored:
        raise BlobCorrupt("sealed blob was cut or grown")
    return Trailer(blob_id, plain)


class Opener:
    """Decrypts the segments of one blob whose trailer was verified."""

    def __init__(self, key: ScopeKey, trailer: Trailer) -> None:
        self._cipher = key.blob_cipher(trailer.blob_id)
        self._id = trailer.blob_id
        self._last = segment_count(trailer.plain) - 1

    def open(self, index: int, sealed: bytes | memoryview) -> bytes:
        """The plaintext of segment ``index``; BlobCorrupt when its tag does not verify."""
        if index > self._last:
            raise BlobCorrupt("sealed blob has more segments than its trailer says")
        try:
            return self._cipher.decrypt(
                _nonce(index), sealed, _aad(self._id, index, index == self._last)
            )
        except InvalidTag:
            raise BlobCorrupt(f"sealed blob segment {index} failed authentication") from None

    def open_many(self, first: int, sealed: bytes | memoryview) -> bytes:
        """Decrypt consecutive whole segments starting at ``first`` (the last may be short)."""
        out = bytearray(len(sealed))
        n = self.open_into(first, sealed, out)
        with memoryview(out) as view:
            return bytes(view[:n])

    def open_into(self, first: int, sealed: bytes | bytearray | memoryview, out: bytearray) -> int:
        """Decrypt consecutive whole segments starting at ``first`` into ``out`` (at least as
        long as ``sealed``); returns the plaintext's length."""
        n = 0
        with memoryview(sealed) as view, memoryview(out) as into:
            for k, pos in enumerate(range(0, len(view), SEALED_SEGMENT)):
                piece = view[pos : pos + SEALED_SEGMENT]
                index = first + k
                if index > self._last:
                    raise BlobCorrupt("sealed blob has more segments than its trailer says")
                if len(piece) < TAG:
                    raise BlobCorrupt(f"sealed blob segment {index} is cut")
                size = len(piece) - TAG
                try:
                    self._cipher.decrypt_into(
                        _nonce(index),
                        piece,
                        _aad(self._id, index, index == self._last),
                        into[n : n + size],
                    )
                except InvalidTag:
                    raise BlobCorrupt(
                        f"sealed blob segment {index} failed authentication"
                    ) from None
                n += size
        return n


def stored_range(plain: int, start: int, end: int) -> tuple[int, int, int]:
    """For plaintext bytes ``[start, end)`` (clipped, start < end) of a blob of ``plain`` bytes:
    ``(first segment, stored start, stored end)`` of the whole segments that hold them."""
    first = start // SEGMENT
    last = (end - 1) // SEGMENT
    stored_end = min((last + 1) * SEALED_SEGMENT, sealed_size(plain) - TRAILER)
    return first, first * SEALED_SEGMENT, stored_end
