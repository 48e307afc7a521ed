"""The seam between the tus protocol and the files store: uploads are ordinary files.

A tus upload is a file whose manifest grows one entry per PATCH: each PATCH's bytes are one blob,
put (hashed, durable) before the one short transaction that appends its entry, so the offset a
HEAD reports is always the sum of durable entries.  Completion sets the file's totals and marks
it complete in that transaction (no byte is copied), and a final upload's manifest lists its
partial uploads' blobs.  Nothing here speaks HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from blobstore import confirmations, inline, manifests
from blobstore.engine.base import Tx
from blobstore.errors import TooLarge
from blobstore.manifest_model import Entry
from blobstore.store import PutResult, inline_refs
from filesvc import jobqueue, repo
from filesvc.auth import Caller
from filesvc.creates import NewFile, insert_files
from filesvc.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from filesvc.ids import new_file_id
from filesvc.params import guess_mime
from filesvc.service import FileService, HeadSniffer, content_etag, now_ms
from filesvc.tus import table
from filesvc.tus.headers import Gone

# How long a HEAD waits for a PATCH of the same upload still being written (a client that
# aborted and resumes asks before the server has noticed the old request is gone).
HEAD_WAITS_FOR_PATCH = 10.0


@dataclass(frozen=True)
class Upload:
    """Where a tus upload stands."""

    file_id: str
    offset: int
    length: int | None
    complete: bool
    concat: str | None
    name: str | None
    mime: str
    expires_ms: int | None  # None once complete: a complete upload never expires


class TusStore:
    """tus operations over :class:`FileService`'s database and content store."""

    def __init__(
        self,
        service: FileService,
        *,
        expiry_ms: int,
        on_stored: Callable[[PutResult], None] | None = None,
    ) -> None:
        self.service = service
        self.expiry_ms = expiry_ms
        self._on_stored = on_stored
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def writing(self, file_id: str) -> AsyncIterator[None]:
        """One PATCH at a time per upload in this process (the commit re-checks the offset, so
        another process's PATCH is caught there)."""
        lock = self._locks.setdefault(file_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(file_id, None)

    async def put(
        self, company_id: str, stream: AsyncIterator[bytes], budget: int | None
    ) -> PutResult:
        """Store bytes as one blob (hashed as they pass, deduplicated within the company's
        scope), at most ``budget`` bytes (413 past it, nothing stored): durable on return, or a
        small blob's row (``inline``) that the commit inserts with the entry."""
        limit = self.service.max_upload_bytes
        cap = limit if budget is None else min(budget, limit)
        try:
            put = await self.service.store.put(
                stream, max_size=cap, scope=self.service.scope_of(company_id), inline=True
            )
        except TooLarge:
            raise PayloadTooLarge(
                f"the body is longer than the {cap} bytes the upload has room for"
            ) from None
        if self._on_stored is not None:
            self._on_stored(put)
        return put

    async def state(self, company_id: str, file_id: str, *, settle: bool = False) -> Upload:
        """The upload, or NotFound/Gone.  ``settle``: first let a PATCH in flight finish."""
        lock = self._locks.get(file_id)
        if settle and lock is not None and lock.locked():
            try:
                async with asyncio.timeout(HEAD_WAITS_FOR_PATCH), lock:
                    pass
            except TimeoutError:
                pass
        async with self.service.db.read() as tx:
            return await self._state(tx, company_id, file_id)

    async def _state(self, conn: Tx, company_id: str, file_id: str) -> Upload:
        row = await repo.get(conn, company_id, file_id)
        head = await manifests.head(conn, file_id)
        if row is None or head is None:
            raise NotFound("no such upload in this company")
        entries = await manifests.entries(conn, file_id, "chunk")
        upload = Upload(
            file_id=file_id,
            offset=sum(e.size for e in entries),
            length=row.expected_size,
            complete=row.complete,
            concat=await table.concat_of(conn, file_id),
            name=row.name,
            mime=row.mime,
            expires_ms=None if row.complete else head.updated_at + self.expiry_ms,
        )
        if upload.expires_ms is not None and upload.expires_ms <= now_ms():
            raise Gone("this upload expired: start a new one")
        return upload

    async def create(
        self,
        caller: Caller,
        company_id: str,
        *,
        length: int | None,
        name: str | None,
        mime: str | None,
        partial: bool,
        body: AsyncIterator[bytes] | None,
    ) -> Upload:
        """A new upload (a file with an empty or one-entry manifest).
        ``body``: creation-with-upload, stored as the first entry in the same commit."""
        file_id = new_file_id()
        entry: PutResult | None = None
        head = b""
        if body is not None or length == 0:
            sniffer = HeadSniffer(body if body is not None else _nothing())
            entry, head = await self.put(company_id, sniffer.stream(), length), sniffer.head
        complete = length is not None and length == (entry.size if entry else 0)
        thumbable = complete and not partial and self.service.thumbs.previewable(head)
        stored = entry if entry is not None and (entry.size or complete) else None
        new = NewFile(
            file_id=file_id,
            company_id=company_id,
            user_id=caller.user_id,
            application_id=caller.application_id,
            name=name,
            mime=mime or guess_mime(name),
            now_ms=now_ms(),
            expected_chunks=1 if complete else None,
            expected_size=length,
            entry=None if stored is None else (1, stored.ref, stored.size),
            complete=complete,
            etag=content_etag([Entry(0, entry.ref, entry.size)]) if complete and entry else None,
            thumbnails_status="done" if complete and not thumbable else "waiting",
            thumbnail_job=thumbable,
            inline=None if stored is None else stored.inline,
        )
        if partial:
            with inline.name_races():
                async with self.service.db.write() as tx:
                    await insert_files(tx, self.service.store.backend, [new])
                    await table.insert(tx, file_id, "partial")
        else:
            await self.service.creates.add(new)
        if thumbable:
            self.service.thumbs.notify(file_id, 1)
        return Upload(
            file_id=file_id,
            offset=entry.size if entry else 0,
            length=length,
            complete=complete,
            concat="partial" if partial else None,
            name=new.name,
            mime=new.mime,
            expires_ms=None if complete else new.now_ms + self.expiry_ms,
        )

    async def append(
        self,
        company_id: str,
        upload: Upload,
        put_ref: PutResult | None,
        *,
        length: int | None,
    ) -> Upload:
        """Commit one PATCH's blob (``put_ref``, None for no bytes) at ``upload.offset``, and
        ``length`` when a deferred length arrives with it.  409 when the offset moved."""
        generation: int | None = None
        with inline.name_races():
            async with self.service.db.write() as conn:
                ts = now_ms()
                if put_ref is not None and put_ref.size:
                    if put_ref.inline is not None:
                        await inline.add(conn, [put_ref.inline], now_ms=ts)
                    await confirmations.confirm(
                        conn,
                        self.service.store.backend,
                        [put_ref.ref],
                        now_ms=ts,
                        inserted=inline_refs(put_ref),
                    )
                # Another process's PATCH of the same upload waits here (PostgreSQL row lock).
                await manifests.lock(conn, upload.file_id)
                now = await self._state(conn, company_id, upload.file_id)
                if now.offset != upload.offset or now.complete:
                    raise Conflict(
                        f"the upload's offset is {now.offset}, not {upload.offset}:"
                        " another request wrote to it; ask HEAD where to resume"
                    )
                total = now.length if now.length is not None else length
                entries = await manifests.entries(conn, upload.file_id, "chunk")
                offset = now.offset
                if put_ref is not None and put_ref.size:
                    idx = (entries[-1].idx if entries else 0) + 1
                    await manifests.put_entry(
                        conn, upload.file_id, "chunk", idx, put_ref.ref, put_ref.size
                    )
                    entries.append(Entry(idx, put_ref.ref, put_ref.size))
                    offset += put_ref.size
                if total is not None and offset > total:
                    raise Conflict(f"the upload would grow past its length of {total} bytes")
                complete = total is not None and offset == total
                chunks = len(entries) if complete else None
                if complete and not entries:
                    # An empty file still has one (empty) chunk, as the files API stores it.
                    put = await self.service.store.put_bytes(
                        b"", scope=self.service.scope_of(company_id)
                    )
                    await confirmations.confirm(
                        conn, self.service.store.backend, [put.ref], now_ms=ts
                    )
                    await manifests.put_entry(conn, upload.file_id, "chunk", 1, put.ref, 0)
                    entries.append(Entry(1, put.ref, 0))
                    chunks = 1
                await manifests.set_expected(conn, upload.file_id, chunks=chunks, size=total)
                await manifests.record_activity(conn, upload.file_id, now_ms=ts)
                if complete:
                    await manifests.mark(conn, upload.file_id, now_ms=ts, complete=True)
                    await repo.set_completed(
                        conn, upload.file_id, etag=content_etag(entries), now_ms=ts
                    )
                    if now.concat == "partial":
                        # A partial upload is only ever a part of a final upload: no thumbnails.
                        await repo.set_thumbnail_status(conn, upload.file_id, "done")
                    else:
                        generation = await jobqueue.enqueue(conn, upload.file_id, now_ms=ts)
                result = await self._state(conn, company_id, upload.file_id)
        if generation is not None:
            self.service.thumbs.notify(upload.file_id, generation)
        return result

    async def concatenate(
        self,
        caller: Caller,
        company_id: str,
        parts: tuple[str, ...],
        concat: str,
        *,
        name: str | None,
        mime: str | None,
    ) -> str:
        """A final upload made of complete partial uploads: one commit listing their blobs in
        order (no byte is copied); the partial uploads are removed with it."""
        file_id = new_file_id()
        ts = now_ms()
        async with self.service.db.write() as conn:
            entries: list[Entry] = []
            for part in parts:
                await manifests.lock(conn, part)
                row = await repo.get(conn, company_id, part)
                if row is None or await table.concat_of(conn, part) != "partial":
                    raise BadRequest("Upload-Concat names an upload that is not a partial upload")
                if not row.complete:
                    raise BadRequest("Upload-Concat names a partial upload that is not complete")
                for e in await manifests.entries(conn, part, "chunk"):
                    if e.size:
                        entries.append(Entry(len(entries) + 1, e.ref, e.size))
            if not entries:
                put = await self.service.store.put_bytes(
                    b"", scope=self.service.scope_of(company_id)
                )
                entries.append(Entry(1, put.ref, 0))
            size = sum(e.size for e in entries)
            new = NewFile(
                file_id=file_id,
                company_id=company_id,
                user_id=caller.user_id,
                application_id=caller.application_id,
                name=name,
                mime=mime or guess_mime(name),
                now_ms=ts,
                expected_chunks=len(entries),
                expected_size=size,
                entry=None,
                complete=True,
                etag=content_etag(entries),
                thumbnails_status="waiting",
                thumbnail_job=False,
            )
            reader = self.service.store.backend
            await confirmations.confirm(conn, reader, [e.ref for e in entries], now_ms=ts)
            await insert_files(conn, reader, [new])
            for e in entries:
                await manifests.put_entry(conn, file_id, "chunk", e.idx, e.ref, e.size)
            await table.insert(conn, file_id, concat)
            await repo.set_completed(conn, file_id, etag=content_etag(entries), now_ms=ts)
            generation = await jobqueue.enqueue(conn, file_id, now_ms=ts)
            for part in parts:
                await manifests.delete(conn, part)
        self.service.thumbs.notify(file_id, generation)
        return file_id

    @staticmethod
    def check_patchable(upload: Upload) -> None:
        if upload.concat is not None and upload.concat != "partial":
            raise Forbidden("a final upload is made of its partial uploads: it takes no PATCH")


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator
