"""New file ids (filesvc/ids.py): UUIDs of version 7, strictly increasing within a process."""

from __future__ import annotations

import uuid

from filesvc.ids import new_file_id


def test_ids_increase_strictly_even_within_one_millisecond() -> None:
    ids = [new_file_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert str(parsed[0]) == ids[0]  # the canonical lower-case form


def test_ids_keep_random_bits() -> None:
    # Two ids of one millisecond share their time, not their random tail.
    a, b = new_file_id(), new_file_id()
    assert a[-12:] != b[-12:]
