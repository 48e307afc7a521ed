"""The chunk rule: which slot a chunk goes to, how many bytes it may have, who may overwrite.

One pure function, :func:`plan_chunk`, decides from the file's state as one transaction saw it.
The upload path calls it twice: before the blob is written (to refuse early and to cap the
stream at the byte budget) and again inside the commit transaction, on the state as it is then,
with the first plan in hand; only the second plan is acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blobstore.manifest_model import Slot, StagedSession
from filesvc.errors import BadRequest, Conflict, Forbidden

# An overwrite with no new chunk for this long may be taken over by another application.
OVERWRITE_STALE_MS = 60 * 60 * 1000


@dataclass(frozen=True)
class FileState:
    """What the rule reads about a file."""

    complete: bool
    expected_chunks: int | None
    expected_size: int | None
    staged: StagedSession
    live: Mapping[int, int]  # chunk number -> size, slot ``chunk``
    staged_sizes: Mapping[int, int]  # chunk number -> size, slot ``staged``


@dataclass(frozen=True)
class ChunkRequest:
    """One chunk as the client sent it.  ``application_id`` None: a user's token."""

    number: int
    total_chunks: int | None
    total_size: int | None
    application_id: str | None
    now_ms: int


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunk goes and what it may weigh.  ``restart_staged``: the chunk starts a new
    overwrite (the staged entries of an earlier one are dropped)."""

    slot: Slot
    chunks: int
    size: int | None
    budget: int | None
    restart_staged: bool


def too_big(size: int) -> BadRequest:
    return BadRequest(f"this chunk would make the file larger than its total size of {size} bytes")


def _live_totals(state: FileState, req: ChunkRequest) -> tuple[int, int | None]:
    """What a file being uploaded must add up to: stored at creation, else from this request."""
    chunks = state.expected_chunks
    if req.total_chunks is not None:
        if chunks is not None and chunks != req.total_chunks:
            raise BadRequest(f"total chunks {req.total_chunks} does not match the file's {chunks}")
        chunks = req.total_chunks
    size = state.expected_size
    if req.total_size is not None:
        if size is not None and size != req.total_size:
            raise BadRequest(f"total size {req.total_size} does not match the file's {size} bytes")
        size = req.total_size
    return chunks or 1, size


def plan_chunk(state: FileState, req: ChunkRequest, planned: ChunkPlan | None = None) -> ChunkPlan:
    """Pure.  ``planned`` is the plan made before the blob was written, when this is the re-check
    inside the commit.  Raises BadRequest, Forbidden or Conflict with the client's message."""
    restart = False
    if not state.complete:
        slot: Slot = "chunk"
        chunks, size = _live_totals(state, req)
        sizes = state.live
    else:
        if req.application_id is None:
            if planned is not None and planned.slot == "chunk":
                raise Conflict(
                    "the file was completed by another request while this chunk was uploading"
                )
            raise Forbidden("this file is complete: only an application may overwrite it")
        slot = "staged"
        chunks, size = req.total_chunks or 1, req.total_size
        session = state.staged
        mine = session.owner == req.application_id
        busy = session.entries > 0 and req.now_ms - session.updated_at < OVERWRITE_STALE_MS
        # Two applications must not feed one staged content: it would be promoted as a mix.
        if session.owner is not None and not mine and busy:
            raise Conflict("another application is overwriting this file; retry when it is done")
        restart = not mine or (session.chunks, session.size) != (chunks, size)
        sizes = {} if restart else state.staged_sizes
    if req.number > chunks:
        raise BadRequest(f"chunk number {req.number} is out of range: the file has {chunks} chunks")
    budget = None
    if size is not None:
        budget = size - sum(n for idx, n in sizes.items() if idx != req.number)
        if budget < 0:
            raise too_big(size)
    return ChunkPlan(slot, chunks, size, budget, restart)


def check_fits(plan: ChunkPlan, written: int) -> None:
    """Pure: the blob written for the chunk fits the plan's budget (BadRequest otherwise)."""
    if plan.budget is not None and plan.size is not None and written > plan.budget:
        raise too_big(plan.size)
