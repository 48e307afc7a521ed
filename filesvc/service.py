"""File operations: create, upload chunks, overwrite, read, delete.  No HTTP in here.

Every change is a blob put first (durable) and then one short database transaction that re-checks
what the put assumed, so parallel chunks, overwrites and deletes interleave safely.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

import xxhash

from blobstore import confirmations, inline, inline_cached, manifests
from blobstore.engine.base import Engine, Tx
from blobstore.errors import NameInBackend, TooLarge
from blobstore.manifests import Entry, Slot
from blobstore.store import ContentStore, PutResult, inline_refs
from filesvc import jobqueue, repo
from filesvc.auth import Caller
from filesvc.body import UploadBody
from filesvc.chunkrule import ChunkPlan, ChunkRequest, FileState, check_fits, plan_chunk
from filesvc.creates import CreateBatcher, NewFile, committed_row
from filesvc.errors import (
    BadRequest,
    Conflict,
    DamagedContent,
    NotFound,
    PayloadTooLarge,
)
from filesvc.ids import new_file_id
from filesvc.params import DEFAULT_MIME, UploadParams, guess_mime
from filesvc.repo import FileRow
from filesvc.thumbnails.jobs import ThumbnailJobs
from filesvc.thumbnails.sniff import SNIFF_BYTES


def now_ms() -> int:
    """Epoch milliseconds, the resource's time unit."""
    return time.time_ns() // 1_000_000


class HeadSniffer:
    """Passes a stream through, keeping its first bytes for a format sniff."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.head = b""

    async def stream(self) -> AsyncIterator[bytes]:
        async for piece in self._chunks:
            if len(self.head) < SNIFF_BYTES:
                self.head += piece[: SNIFF_BYTES - len(self.head)]
            yield piece


def content_etag(entries: Sequence[Entry]) -> str:
    """A strong ETag derived from the content: a hash of the chunk refs in order.  It changes
    exactly when the bytes do, and reveals no blob ref."""
    h = xxhash.xxh3_128()
    for e in entries:
        h.update(f"{e.ref}:{e.size}\n".encode())
    return f'"{h.hexdigest()}"'


@dataclass(frozen=True)
class FileView:
    """A file with what its resource shows: the row, its chunks and its thumbnails."""

    row: FileRow
    chunks: list[Entry]
    thumbnails: list[Entry]


class FileService:
    """The operations of the files API over the blob store and the database."""

    def __init__(
        self,
        db: Engine,
        store: ContentStore,
        thumbs: ThumbnailJobs,
        creates: CreateBatcher,
        *,
        max_upload_bytes: int,
        thumb_sync_timeout: float,
        scope_of: Callable[[str], str | None] = lambda _company: None,
        on_stored: Callable[[PutResult], None] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.thumbs = thumbs
        self.creates = creates
        self.max_upload_bytes = max_upload_bytes
        self.thumb_sync_timeout = thumb_sync_timeout
        self.scope_of = scope_of
        self._on_stored = on_stored
        # Where the group commit checks blobs in its own thread hand-off (a write unit), a new
        # file's small blob takes a free name without asking the backend: the commit does.
        self._defer_name_check = confirmations.can_confirm_in_unit(store.backend)

    # -- reads ---------------------------------------------------------------------------------

    async def view(self, company_id: str, file_id: str, *, content: bool = False) -> FileView:
        """The file and its entries, or NotFound: one statement, one database round trip.  No
        cache: every read sees the last commit, so nothing is stale after a 2xx overwrite or
        delete, on any process or instance (docs/design.md, reads).  ``content``: entries kept
        inline come with their stored bytes (the reads that send them); where the store keeps a
        blob cache, only those bytes may come from memory (:mod:`blobstore.inline_cached`)."""
        cache = self.store.cache if content and self.store.inline is not None else None
        # With a blob cache, the rows' bytes are asked for only when the cache lacks them.
        found = await repo.get_view(self.db, company_id, file_id, content=content and cache is None)
        if found is None:
            raise NotFound("no such file in this company")
        if cache is not None:
            assert self.store.inline is not None
            await inline_cached.attach(self.db, cache, self.store.inline.keys, found[1:])
        return FileView(*found)

    async def chunk_stored(self, company_id: str, file_id: str, number: int) -> bool:
        """resumable.js testChunks: is chunk ``number`` stored?"""
        stored = await repo.chunk_stored(self.db, company_id, file_id, number)
        if stored is None:
            raise NotFound("no such file in this company")
        return stored

    async def content(self, company_id: str, file_id: str) -> FileView:
        """A complete, undamaged file's view for download; 409 while incomplete."""
        view = await self.view(company_id, file_id, content=True)
        if not view.row.complete:
            raise Conflict("the upload of this file is not complete yet")
        if view.row.damaged:
            raise DamagedContent(
                "the stored content of this file is damaged and was quarantined by the operator"
            )
        return view

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        caller: Caller,
        company_id: str,
        params: UploadParams,
        body: UploadBody | None,
    ) -> FileView:
        """Create a file; with a body, store it as chunk K (default 1) in the same transaction."""
        file_id = new_file_id()
        name = params.filename or (body.filename if body else None)
        part_mime = body.mime if body and body.mime != DEFAULT_MIME else None
        mime = params.mime or part_mime or guess_mime(name)
        total_chunks = params.total_chunks
        if body is not None and total_chunks is None:
            total_chunks = 1
        number = params.chunk_number or 1
        if body is not None and total_chunks is not None and number > total_chunks:
            raise BadRequest(f"chunk number {number} is out of range")
        put: PutResult | None = None
        head = b""
        if body is not None:
            sniffer = HeadSniffer(body.chunks)
            put = await self._put(
                sniffer.stream(),
                params.total_size,
                number,
                company_id,
                defer_name_check=self._defer_name_check,
                size=body.size,
            )
            head = sniffer.head
        entries = [] if put is None else [Entry(number, put.ref, put.size)]
        expected_size = params.total_size
        complete = put is not None and total_chunks == 1 and expected_size in (None, put.size)
        if complete and put is not None:
            expected_size = put.size
        thumbable = complete and self.thumbs.previewable(head)
        new = NewFile(
            file_id=file_id,
            company_id=company_id,
            user_id=caller.user_id,
            application_id=caller.application_id,
            name=name,
            mime=mime,
            now_ms=now_ms(),
            expected_chunks=total_chunks,
            expected_size=expected_size,
            entry=None if put is None else (number, put.ref, put.size),
            complete=complete,
            etag=content_etag(entries) if complete else None,
            # What cannot be an image is settled now: no job, no second transaction.
            thumbnails_status="done" if complete and not thumbable else "waiting",
            thumbnail_job=thumbable,
            inline=None if put is None else put.inline,
            inline_unchecked=put is not None and put.unchecked,
        )
        try:
            await self.creates.add(new)
        except NameInBackend:
            # A backend blob has the name the row took unchecked: put again, asking the backend.
            assert put is not None
            put = await self.store.recheck(put, scope=self.scope_of(company_id))
            entries = [Entry(number, put.ref, put.size)]
            new = replace(
                new,
                entry=(number, put.ref, put.size),
                etag=content_etag(entries) if complete else None,
                inline=put.inline,
                inline_unchecked=False,
            )
            await self.creates.add(new)
        await self._after_commit(file_id, 1 if thumbable else None, params.thumbnail_sync)
        if thumbable and params.thumbnail_sync:
            return await self.view(company_id, file_id)
        return FileView(committed_row(new), entries, [])

    async def upload_chunk(
        self,
        caller: Caller,
        company_id: str,
        file_id: str,
        params: UploadParams,
        body: UploadBody,
    ) -> FileView:
        """Store one chunk of an incomplete file, or of an application's overwrite.  The chunk
        rule is planned before the blob is written and planned again inside the commit."""
        request = ChunkRequest(
            number=params.chunk_number or 1,
            total_chunks=params.total_chunks,
            total_size=params.total_size,
            application_id=caller.application_id,
            now_ms=now_ms(),
        )
        async with self.db.read() as tx:
            state = await self._state(tx, company_id, file_id)
        if state is None:
            raise NotFound("no such file in this company")
        plan = plan_chunk(state, request)
        put = await self._put(body.chunks, plan.budget, request.number, company_id, size=body.size)
        with inline.name_races():
            generation = await self._commit_chunk(
                caller, company_id, file_id, params, body, request, plan, put
            )
        await self._after_commit(file_id, generation, params.thumbnail_sync)
        return await self.view(company_id, file_id)

    async def _commit_chunk(
        self,
        caller: Caller,
        company_id: str,
        file_id: str,
        params: UploadParams,
        body: UploadBody,
        request: ChunkRequest,
        plan: ChunkPlan,
        put: PutResult,
    ) -> int | None:
        """The chunk's commit: planned again under the manifest's lock, its entry put, the
        file settled; the thumbnail job's generation when the file became complete."""
        async with self.db.write() as tx:
            ts = now_ms()
            if put.inline is not None:
                await inline.add(tx, [put.inline], now_ms=ts)
            await confirmations.confirm(
                tx, self.store.backend, [put.ref], now_ms=ts, inserted=inline_refs(put)
            )
            if await manifests.lock(tx, file_id) is None:
                raise NotFound("the file was deleted while the chunk was uploading")
            state = await self._state(tx, company_id, file_id)
            if state is None:
                raise NotFound("the file was deleted while the chunk was uploading")
            final = plan_chunk(state, replace(request, now_ms=ts), plan)
            check_fits(final, put.size)
            await self._apply(tx, file_id, final, caller, ts)
            await manifests.put_entry(tx, file_id, final.slot, request.number, put.ref, put.size)
            await repo.update_meta(
                tx,
                file_id,
                name=params.filename,
                fallback_name=body.filename,
                mime=params.mime,
                now_ms=ts,
            )
            return await self._settle(tx, file_id, final.slot, ts)

    async def delete(self, company_id: str, file_id: str) -> None:
        """Remove the file's metadata now; gc reclaims blobs no other file shares."""
        async with self.db.write() as tx:
            await manifests.lock(tx, file_id)
            if await repo.get(tx, company_id, file_id) is None:
                raise NotFound("no such file in this company")
            await manifests.delete(tx, file_id)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _state(tx: Tx, company_id: str, file_id: str) -> FileState | None:
        """What the chunk rule reads, from one transaction; None when no such file here."""
        row = await repo.get(tx, company_id, file_id)
        if row is None:
            return None
        live = await manifests.entries(tx, file_id, "chunk")
        staged: list[Entry] = []
        session = manifests.StagedSession(None, None, None, 0, 0)
        if row.complete:
            session = await manifests.staged_session(tx, file_id)
            staged = await manifests.entries(tx, file_id, "staged")
        return FileState(
            complete=row.complete,
            expected_chunks=row.expected_chunks,
            expected_size=row.expected_size,
            staged=session,
            live={e.idx: e.size for e in live},
            staged_sizes={e.idx: e.size for e in staged},
        )

    @staticmethod
    async def _apply(tx: Tx, file_id: str, plan: ChunkPlan, caller: Caller, ts: int) -> None:
        """Carry out the plan's effect on the manifest header (the entry is put by the caller)."""
        if plan.slot == "staged":
            assert caller.application_id is not None
            if plan.restart_staged:
                await manifests.start_staged(
                    tx,
                    file_id,
                    chunks=plan.chunks,
                    size=plan.size,
                    owner=caller.application_id,
                    now_ms=ts,
                )
            else:
                await manifests.record_activity(tx, file_id, now_ms=ts)
        else:
            await manifests.set_expected(tx, file_id, chunks=plan.chunks, size=plan.size)
            await manifests.record_activity(tx, file_id, now_ms=ts)

    async def _put(
        self,
        chunks: AsyncIterator[bytes],
        budget: int | None,
        number: int,
        company_id: str,
        *,
        defer_name_check: bool = False,
        size: int | None = None,
    ) -> PutResult:
        """``defer_name_check``: the commit checks a new row's name in the backend (creates).
        ``size``: the body's exact length when its framing says it (``UploadBody.size``)."""
        cap = self.max_upload_bytes if budget is None else min(budget, self.max_upload_bytes)
        try:
            put = await self.store.put(
                chunks,
                max_size=cap,
                scope=self.scope_of(company_id),
                inline=True,
                defer_name_check=defer_name_check,
                size=size,
            )
        except TooLarge:
            if budget is not None and budget < self.max_upload_bytes:
                raise BadRequest(
                    f"chunk {number} would make the file larger than its total size"
                ) from None
            raise PayloadTooLarge(
                f"the upload is larger than the limit of {self.max_upload_bytes} bytes"
            ) from None
        if self._on_stored is not None:
            self._on_stored(put)
        return put

    async def _settle(self, conn: Tx, file_id: str, slot: Slot, ts: int) -> int | None:
        """After an entry changed: if the slot is now whole, make it the file's content and queue
        thumbnails.  Returns the thumbnail job's generation when the file became complete."""
        head = await manifests.head(conn, file_id)
        assert head is not None
        if slot == "staged":
            session = await manifests.staged_session(conn, file_id)
            chunks, size = session.chunks, session.size
        else:
            chunks, size = head.expected_chunks, head.expected_size
        entries = await manifests.entries(conn, file_id, slot)
        state = manifests.completeness(entries, chunks or 1, size)
        if not state.complete:
            return None
        if slot == "staged":
            await manifests.promote_staged(conn, file_id, now_ms=ts)
        else:
            if size is None:
                await manifests.set_expected(
                    conn, file_id, chunks=chunks or 1, size=state.stored_size
                )
            await manifests.mark(conn, file_id, now_ms=ts, complete=True)
        await manifests.clear(conn, file_id, "thumb")
        await repo.set_completed(conn, file_id, etag=content_etag(entries), now_ms=ts)
        return await jobqueue.enqueue(conn, file_id, now_ms=ts)

    async def _after_commit(self, file_id: str, generation: int | None, sync: bool) -> None:
        if generation is None:
            return
        self.thumbs.notify(file_id, generation)
        if sync:
            await self.thumbs.wait(file_id, generation, self.thumb_sync_timeout)
