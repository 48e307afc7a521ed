"""The chunk rule (filesvc.chunkrule): slot, byte budget and who may overwrite, property-tested."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blobstore.manifest_model import StagedSession
from filesvc.chunkrule import (
    OVERWRITE_STALE_MS,
    ChunkPlan,
    ChunkRequest,
    FileState,
    check_fits,
    plan_chunk,
)
from filesvc.errors import ApiError, BadRequest, Conflict, Forbidden

NOW = 10**12
apps = st.sampled_from([None, "app-a", "app-b"])
sizes = st.dictionaries(st.integers(1, 6), st.integers(0, 50), max_size=6)
maybe_int = st.one_of(st.none(), st.integers(1, 6))
maybe_size = st.one_of(st.none(), st.integers(0, 200))

sessions = st.builds(
    StagedSession,
    chunks=maybe_int,
    size=maybe_size,
    owner=st.sampled_from([None, "app-a", "app-b"]),
    entries=st.integers(0, 3),
    updated_at=st.sampled_from([NOW - 1000, NOW - OVERWRITE_STALE_MS - 1]),
)
states = st.builds(
    FileState,
    complete=st.booleans(),
    expected_chunks=maybe_int,
    expected_size=maybe_size,
    staged=sessions,
    live=sizes,
    staged_sizes=sizes,
)
requests = st.builds(
    ChunkRequest,
    number=st.integers(1, 7),
    total_chunks=maybe_int,
    total_size=maybe_size,
    application_id=apps,
    now_ms=st.just(NOW),
)


def outcome(state: FileState, req: ChunkRequest) -> ChunkPlan | type[ApiError]:
    try:
        return plan_chunk(state, req)
    except ApiError as exc:
        return type(exc)


@given(state=states, req=requests)
def test_the_budget_is_what_the_other_chunks_leave_of_the_total(
    state: FileState, req: ChunkRequest
) -> None:
    result = outcome(state, req)
    if not isinstance(result, ChunkPlan):
        return
    assert 1 <= req.number <= result.chunks
    others = state.live if result.slot == "chunk" else state.staged_sizes
    if result.restart_staged:
        others = {}
    if result.size is None:
        assert result.budget is None
    else:
        spent = sum(n for i, n in others.items() if i != req.number)
        assert result.budget == result.size - spent >= 0


@given(state=states, req=requests)
def test_only_an_application_writes_to_a_complete_file_and_only_to_the_staged_slot(
    state: FileState, req: ChunkRequest
) -> None:
    result = outcome(state, req)
    if state.complete and req.application_id is None:
        assert result is Forbidden
    if isinstance(result, ChunkPlan):
        assert result.slot == ("staged" if state.complete else "chunk")


@given(state=states, req=requests)
def test_another_applications_live_overwrite_is_a_conflict(
    state: FileState, req: ChunkRequest
) -> None:
    session = state.staged
    other_live = (
        state.complete
        and req.application_id is not None
        and session.owner not in (None, req.application_id)
        and session.entries > 0
        and NOW - session.updated_at < OVERWRITE_STALE_MS
    )
    if other_live:
        assert outcome(state, req) is Conflict


@given(state=states, req=requests)
def test_a_recheck_on_unchanged_state_makes_the_same_plan(
    state: FileState, req: ChunkRequest
) -> None:
    result = outcome(state, req)
    if isinstance(result, ChunkPlan):
        assert plan_chunk(state, req, result) == result


@given(state=states, req=requests)
def test_a_users_chunk_for_a_file_completed_meanwhile_is_a_conflict(
    state: FileState, req: ChunkRequest
) -> None:
    before = replace(state, complete=False)
    planned = outcome(before, replace(req, application_id=None))
    if isinstance(planned, ChunkPlan):
        after = replace(state, complete=True)
        with pytest.raises(Conflict):
            plan_chunk(after, replace(req, application_id=None), planned)


@given(
    total=st.integers(0, 100),
    chunks=st.integers(1, 5),
    writes=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 60)), max_size=12),
)
def test_chunks_written_within_their_budgets_never_exceed_the_total(
    total: int, chunks: int, writes: list[tuple[int, int]]
) -> None:
    """Any order of chunk writes, each re-planned on the state the previous ones left and kept
    only when it fits: the stored bytes never pass the total size."""
    live: dict[int, int] = {}
    session = StagedSession(None, None, None, 0, 0)
    for number, size in writes:
        state = FileState(False, chunks, total, session, dict(live), {})
        req = ChunkRequest(number, chunks, total, None, NOW)
        try:
            plan = plan_chunk(state, req)
            check_fits(plan, size)
        except BadRequest:
            continue
        live[number] = size
        assert sum(live.values()) <= total


def test_messages_name_the_numbers() -> None:
    state = FileState(False, 2, 10, StagedSession(None, None, None, 0, 0), {1: 8}, {})
    with pytest.raises(BadRequest, match="total size of 10 bytes"):
        check_fits(plan_chunk(state, ChunkRequest(2, None, None, None, NOW)), 3)
    with pytest.raises(BadRequest, match="out of range: the file has 2 chunks"):
        plan_chunk(state, ChunkRequest(3, None, None, None, NOW))
    with pytest.raises(BadRequest, match="does not match the file's 2"):
        plan_chunk(state, ChunkRequest(1, 3, None, None, NOW))
