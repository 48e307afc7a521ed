"""fsck on real stores damaged on purpose: one test per finding kind, exact finding and exit code.

Each test builds a LocalBackend + SQLite store in a temp dir, breaks one thing with plain file or
SQL operations, and runs the command in-process (``main(argv)`` with ``--json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blobstore import confirmations, fsck, layout, manifests
from blobstore.cli import main
from blobstore.engine.migrate import migrate
from blobstore.engine.sqlite import Database
from blobstore.local import GC_PARKED_PREFIX, LocalBackend
from blobstore.manifests import Entry, Head
from blobstore.refs import BlobRef, ref_digest
from blobstore.schema import TRACK
from blobstore.store import ContentStore

HOUR = 3600.0


@dataclass
class Store:
    db: Database
    backend: LocalBackend
    content: ContentStore


@asynccontextmanager
async def opened(data_dir: Path) -> AsyncIterator[Store]:
    db = Database(layout.db_path(data_dir))
    await db.open()
    await migrate(db, [TRACK])
    backend = await asyncio.to_thread(LocalBackend, layout.blobs_dir(data_dir))
    try:
        yield Store(db, backend, ContentStore(backend))
    finally:
        await backend.close()
        await db.close()


async def add_file(
    store: Store,
    file_id: str,
    chunks: Sequence[bytes],
    *,
    owner: str = "acme",
    complete: bool = True,
) -> list[BlobRef]:
    """Put the chunks, then commit a manifest for them, confirming the blobs (blobs first, as
    the service does)."""
    puts = [await store.content.put_bytes(c) for c in chunks]
    now = int(time.time() * 1000)
    async with store.db.write() as conn:
        await confirmations.confirm(conn, store.backend, [p.ref for p in puts], now_ms=now)
        await manifests.create(
            conn,
            file_id,
            owner,
            expected_chunks=len(chunks),
            expected_size=sum(len(c) for c in chunks),
            now_ms=now,
        )
        for i, put in enumerate(puts, 1):
            await manifests.put_entry(conn, file_id, "chunk", i, put.ref, put.size)
        if complete:
            await manifests.mark(conn, file_id, now_ms=now, complete=True)
    return [p.ref for p in puts]


SHARED = b"shared chunk " * 300


def build(data_dir: Path) -> dict[str, list[BlobRef]]:
    """Three complete files of two companies; f1 and f2 share a chunk; one incomplete upload."""

    async def go() -> dict[str, list[BlobRef]]:
        async with opened(data_dir) as store:
            return {
                "f1": await add_file(store, "f1", [b"one-a" * 1000, SHARED, b"one-c" * 10]),
                "f2": await add_file(store, "f2", [SHARED, b"two-b" * 500], owner="globex"),
                "f3": await add_file(store, "f3", [b"three" * 70000]),
                "up": await add_file(store, "up", [b"partial" * 9], complete=False),
            }

    data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(go())


def age_confirmation(data_dir: Path, ref: str, seconds: float) -> None:
    """Make the blob's last confirmation ``seconds`` old (as if committed that long ago)."""
    past_ms = int((time.time() - seconds) * 1000)
    with sqlite3.connect(layout.db_path(data_dir)) as conn:
        conn.execute("UPDATE blob_refs SET confirmed_at = ? WHERE ref = ?", (past_ms, ref))
    conn.close()


def blob_path(data_dir: Path, ref: str) -> Path:
    digest = ref_digest(BlobRef(ref))
    return layout.blobs_dir(data_dir) / digest[:2] / digest[2:4] / ref


Run = tuple[int, list[dict[str, Any]], dict[str, Any]]


def run_fsck(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(["fsck", "--data-dir", str(data_dir), "--json", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and lines[-1]["type"] == "summary"
    assert lines[-1]["exit_code"] == code
    findings = [{k: v for k, v in f.items() if k != "type"} for f in lines[:-1]]
    return code, findings, lines[-1]


def without_message(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in f.items() if k not in ("message", "age_seconds")} for f in findings]


def holder(file_id: str, company: str = "acme", slot: str = "chunk") -> dict[str, Any]:
    return {"file_id": file_id, "company_id": company, "slot": slot, "marked_damaged": False}


@pytest.mark.parametrize("mode", [(), ("--full",), ("--sample", "100")])
def test_clean_store_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: tuple[str, ...]
) -> None:
    build(tmp_path)
    code, findings, summary = run_fsck(tmp_path, capsys, *mode)
    assert (code, findings) == (0, [])
    assert summary["files"] == 4 and summary["blobs"] == 6  # the shared chunk is stored once
    assert summary["hashed_blobs"] == (0 if not mode else 6)
    assert summary["repair_command"] is None


def test_missing_blob_maps_to_every_file_and_company(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    shared = refs["f1"][1]
    blob_path(tmp_path, shared).unlink()
    code, findings, summary = run_fsck(tmp_path, capsys)
    assert code == 1
    assert without_message(findings) == [
        {
            "kind": "missing_blob",
            "severity": "damage",
            "ref": shared,
            "expected_size": len(SHARED),
            "files": [holder("f1"), holder("f2", "globex")],
        }
    ]
    assert summary["damaged_files"] == [
        {"file_id": "f1", "company_id": "acme"},
        {"file_id": "f2", "company_id": "globex"},
    ]


def test_truncated_blob_is_wrong_size_cheap_and_corrupt_on_rehash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    ref = refs["f3"][0]
    path = blob_path(tmp_path, ref)
    os.truncate(path, 1000)
    code, findings, _ = run_fsck(tmp_path, capsys)
    assert code == 1
    assert without_message(findings) == [
        {
            "kind": "wrong_size",
            "severity": "damage",
            "ref": ref,
            "size": 1000,
            "expected_size": 350000,
            "files": [holder("f3")],
        }
    ]
    code, findings, _ = run_fsck(tmp_path, capsys, "--full")
    assert code == 1
    assert [(f["kind"], f["ref"], f["size"], f["expected_size"]) for f in findings] == [
        ("corrupt_blob", ref, 1000, 350000)
    ]


def test_flipped_byte_is_found_only_by_rehash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    ref = refs["f1"][0]
    path = blob_path(tmp_path, ref)
    data = bytearray(path.read_bytes())
    data[123] ^= 0x01
    path.write_bytes(bytes(data))

    code, findings, _ = run_fsck(tmp_path, capsys)
    assert (code, findings) == (0, [])  # the cheap mode checks presence and sizes only

    code, findings, summary = run_fsck(tmp_path, capsys, "--full")
    assert code == 1
    assert without_message(findings) == [
        {
            "kind": "corrupt_blob",
            "severity": "damage",
            "ref": ref,
            "size": 5000,
            "expected_size": 5000,
            "files": [holder("f1")],
        }
    ]
    assert "hashes to" in findings[0]["message"]
    assert summary["hashed_blobs"] == 6
    assert summary["repair_command"] == shlex.join(
        ["blobstore", "fsck", "--data-dir", str(tmp_path.resolve()), "--full", "--repair"]
    )


def test_removed_chunk_entry_of_complete_file_is_manifest_inconsistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        conn.execute("DELETE FROM manifest_entries WHERE file_id = 'f1' AND idx = 2")
    conn.close()
    code, findings, _ = run_fsck(tmp_path, capsys)
    assert code == 1
    # The shared blob is still held by f2, so no orphan: the only finding is f1's manifest.
    assert without_message(findings) == [
        {
            "kind": "manifest_inconsistent",
            "severity": "damage",
            "file_id": "f1",
            "files": [holder("f1", slot="manifest")],
        }
    ]
    assert findings[0]["message"] == (
        "complete, but chunks 2 of 3 are missing; "
        f"chunk sizes add up to {5000 + 50} bytes, the file should have {5000 + len(SHARED) + 50}"
    )


def test_sizes_not_adding_up_is_manifest_inconsistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        conn.execute("UPDATE manifests SET expected_size = expected_size + 1 WHERE file_id = 'f3'")
    conn.close()
    code, findings, _ = run_fsck(tmp_path, capsys)
    assert code == 1
    assert [(f["kind"], f["file_id"], f["message"]) for f in findings] == [
        (
            "manifest_inconsistent",
            "f3",
            "chunk sizes add up to 350000 bytes, the file should have 350001",
        )
    ]


def test_incomplete_upload_with_gaps_is_not_damage() -> None:
    head = Head("up", "acme", 5, 100, complete=False, damaged=False, updated_at=0)
    entries = {"chunk": [Entry(3, BlobRef("xxh3_128-" + "0" * 32), 20)]}
    assert fsck.manifest_problems(head, entries) == []


def test_orphan_blob_is_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path)

    async def orphan() -> BlobRef:
        async with opened(tmp_path) as store:
            return (await store.content.put_bytes(b"nobody holds me")).ref

    ref = asyncio.run(orphan())
    code, findings, summary = run_fsck(tmp_path, capsys, "--full")
    assert code == 0
    assert without_message(findings) == [
        {"kind": "orphan_blob", "severity": "hint", "ref": ref, "size": 15}
    ]
    assert summary["repair_command"] is None


def test_temp_leftover_is_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path)
    leftover = layout.blobs_dir(tmp_path) / "tmp" / "0123abcd.tmp"
    leftover.write_bytes(b"half an upload")
    code, findings, summary = run_fsck(tmp_path, capsys)
    assert code == 0
    assert without_message(findings) == [
        {"kind": "temp_leftover", "severity": "hint", "path": str(leftover), "size": 14}
    ]
    assert summary["repair_command"] is None  # too young to remove: may be a running upload


def test_never_stops_at_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = build(tmp_path)
    blob_path(tmp_path, refs["f1"][0]).unlink()
    os.truncate(blob_path(tmp_path, refs["f2"][1]), 3)
    flipped = blob_path(tmp_path, refs["f3"][0])
    data = bytearray(flipped.read_bytes())
    data[0] ^= 0xFF
    flipped.write_bytes(bytes(data))
    (layout.blobs_dir(tmp_path) / "tmp" / "x.tmp").write_bytes(b"")
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        conn.execute("DELETE FROM manifest_entries WHERE file_id = 'f1' AND idx = 3")
    conn.close()
    code, findings, summary = run_fsck(tmp_path, capsys, "--full")
    assert code == 1
    assert sorted((f["kind"], f.get("ref") or f.get("file_id")) for f in findings) == sorted(
        [
            ("manifest_inconsistent", "f1"),
            ("orphan_blob", refs["f1"][2]),
            ("corrupt_blob", refs["f2"][1]),
            ("corrupt_blob", refs["f3"][0]),
            ("missing_blob", refs["f1"][0]),
            ("temp_leftover", None),
        ]
    )
    assert summary["findings"] == {
        "corrupt_blob": 2,
        "manifest_inconsistent": 1,
        "missing_blob": 1,
        "orphan_blob": 1,
        "temp_leftover": 1,
    }


def test_sample_rehashes_a_repeatable_subset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    picked = []
    for _ in range(2):
        code, _, summary = run_fsck(tmp_path, capsys, "--sample", "50", "--seed", "7")
        assert code == 0 and summary["mode"] == "sample" and summary["seed"] == 7
        picked.append(summary["hashed_blobs"])
    assert picked[0] == picked[1]
    assert 0 < picked[0] < 6
    code, _, summary = run_fsck(tmp_path, capsys, "--sample", "50")
    assert isinstance(summary["seed"], int)  # a random seed, printed so it can be repeated


def test_repair_quarantines_marks_and_removes_old_temp_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    corrupt = refs["f1"][1]  # shared by f1 (acme) and f2 (globex)
    path = blob_path(tmp_path, corrupt)
    bad = b"X" + path.read_bytes()[1:]
    path.write_bytes(bad)
    missing = refs["f3"][0]
    blob_path(tmp_path, missing).unlink()
    tmp = layout.blobs_dir(tmp_path) / "tmp"
    old_temp, young_temp = tmp / "old.tmp", tmp / "young.tmp"
    old_temp.write_bytes(b"dead upload")
    young_temp.write_bytes(b"running upload")
    past = time.time() - 2 * HOUR
    os.utime(old_temp, (past, past))

    code, findings, summary = run_fsck(tmp_path, capsys, "--full")
    assert code == 1
    command = shlex.split(summary["repair_command"])
    assert command[0] == "blobstore" and command[-1] == "--repair"

    code = main([*command[1:], "--json"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # the damage was there; it is now contained, not undone
    done = out[-1]["repair"]
    assert done["quarantined"] == [corrupt]
    assert done["removed_temp_files"] == 1
    assert sorted((m["file_id"], m["company_id"]) for m in done["marked_damaged"]) == [
        ("f1", "acme"),
        ("f2", "globex"),
        ("f3", "acme"),
    ]
    # Never deleted: the corrupt bytes sit in quarantine, and the young temp file stays.
    assert (layout.quarantine_dir(tmp_path) / corrupt).read_bytes() == bad
    assert not path.exists() and not old_temp.exists() and young_temp.exists()
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        damaged = dict(conn.execute("SELECT file_id, damaged FROM manifests").fetchall())
    conn.close()
    assert damaged == {"f1": 1, "f2": 1, "f3": 1, "up": 0}

    # Again: the damage is still reported, but nothing more is repairable, so no command.
    code, findings, summary = run_fsck(tmp_path, capsys, "--full")
    assert code == 1
    assert {(f["kind"], f.get("ref")) for f in findings} == {
        ("missing_blob", corrupt),
        ("missing_blob", missing),
        ("temp_leftover", None),
    }
    assert all(h["marked_damaged"] for f in findings for h in f.get("files", []))
    assert summary["repair_command"] is None


def test_repair_marks_files_that_claim_a_wrong_size_and_keeps_the_good_blob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        conn.execute("UPDATE manifest_entries SET size = 1 WHERE file_id = 'f2' AND idx = 1")
    conn.close()
    code, findings, summary = run_fsck(tmp_path, capsys, "--full")
    assert code == 1
    kinds = sorted((f["kind"], f.get("ref") or f.get("file_id")) for f in findings)
    assert kinds == [("manifest_inconsistent", "f2"), ("wrong_size", refs["f2"][0])]
    wrong = next(f for f in findings if f["kind"] == "wrong_size")
    assert wrong["files"] == [holder("f2", "globex")]  # f1 holds it with the right size
    assert "manifests are wrong" in wrong["message"]
    code = main(shlex.split(summary["repair_command"])[1:])
    capsys.readouterr()
    assert blob_path(tmp_path, refs["f2"][0]).exists()
    assert not layout.quarantine_dir(tmp_path).exists()
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        rows = conn.execute("SELECT file_id FROM manifests WHERE damaged = 1").fetchall()
    conn.close()
    assert rows == [("f2",)]


def test_repair_puts_back_a_blob_a_killed_gc_had_set_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    ref = refs["f3"][0]
    # Release 0.1.0's gc parked a blob under this name while deciding on it.
    parked = layout.blobs_dir(tmp_path) / "tmp" / f"{GC_PARKED_PREFIX}{ref}.0123abcd.tmp"
    os.rename(blob_path(tmp_path, ref), parked)
    code, findings, summary = run_fsck(tmp_path, capsys)
    assert code == 1
    assert sorted(f["kind"] for f in findings) == ["missing_blob", "temp_leftover"]
    code = main(shlex.split(summary["repair_command"])[1:])
    capsys.readouterr()
    assert blob_path(tmp_path, ref).exists()
    code, findings, _ = run_fsck(tmp_path, capsys, "--full")
    assert code == 0
    assert [f["kind"] for f in findings] == ["temp_leftover"]  # young: left for a later repair
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM manifests WHERE damaged = 1").fetchone() == (0,)
    conn.close()


async def test_checker_streams_findings_and_counts(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        refs = await add_file(store, "a", [b"x" * 10, b"y" * 20])
        await store.content.put_bytes(b"orphan")
        await store.backend.delete(refs[0])
        checker = fsck.Checker(store.db, store.backend, rehash=fsck.rehash_all)
        kinds = [f.kind async for f in checker.run()]
    assert kinds == [fsck.Kind.ORPHAN_BLOB, fsck.Kind.MISSING_BLOB]
    assert checker.counts.blobs == 2 and checker.counts.hashed == 2
    assert checker.counts.referenced == 2
