"""The ``blobstore`` command: exit codes, stat, cat, gc output, a real subprocess with and without
a terminal, and the API's view after a repair and after gc expires an abandoned upload."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobstore import layout
from blobstore.cli import ExitCode, main
from tests.helpers import Api, error_of
from tests.test_blobstore_fsck import SHARED, age_confirmation, blob_path, build

# These tests damage and age the SQLite file directly; the engines' shared behaviour is covered
# by the API and gc tests.
pytestmark = pytest.mark.sqlite_only

BLOBSTORE = Path(sys.executable).parent / "blobstore"
DAY = 86400.0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fsck", "--bogus"],
        ["fsck", "--sample", "0"],
        ["fsck", "--sample", "101"],
        ["fsck", "--sample", "abc"],
        ["fsck", "--full", "--sample", "5"],
        ["gc", "--grace", "1 week"],
        ["cat"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == ExitCode.USAGE
    capsys.readouterr()


def test_seed_without_sample_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    assert main(["fsck", "--data-dir", str(tmp_path), "--seed", "3"]) == 2
    assert "--seed goes with --sample" in capsys.readouterr().err


def test_a_store_that_cannot_be_opened_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for cmd in ("fsck", "gc", "stat"):
        assert main([cmd, "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["fsck", "--data-dir", str(tmp_path)]) == 2
    assert "no database" in capsys.readouterr().err
    layout.blobs_dir(tmp_path).mkdir()
    layout.db_path(tmp_path).write_bytes(b"this is not a database" * 100)
    assert main(["fsck", "--data-dir", str(tmp_path)]) == 2
    assert "cannot open the database" in capsys.readouterr().err
    assert not any(layout.blobs_dir(tmp_path).iterdir())  # a read-only look changed nothing


def test_cat_writes_the_exact_bytes(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    refs = build(tmp_path)
    assert main(["cat", "--data-dir", str(tmp_path), refs["f1"][1]]) == 0
    assert capsysbinary.readouterr().out == SHARED
    assert main(["cat", "--data-dir", str(tmp_path), "xxh3_128-" + "0" * 32]) == 1
    assert b"no such blob" in capsysbinary.readouterr().err
    assert main(["cat", "--data-dir", str(tmp_path), "../../etc/passwd"]) == 2
    assert b"not a blob ref" in capsysbinary.readouterr().err


def test_stat_counts_blobs_bytes_dedup_files_and_pending_uploads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    stored = sum(
        blob_path(tmp_path, r).stat().st_size for r in {r for v in refs.values() for r in v}
    )
    assert main(["stat", "--data-dir", str(tmp_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["blobs"] == s["referenced_blobs"] == 6
    assert s["bytes_stored"] == s["bytes_referenced"] == stored
    assert s["logical_bytes"] == stored + len(SHARED)  # the shared chunk counts twice
    assert s["dedup_ratio"] == round((stored + len(SHARED)) / stored, 3)
    assert (s["files"], s["complete_files"], s["damaged_files"]) == (4, 3, 0)
    assert s["orphan_blobs"] == 0 and s["temp_files"] == 0
    [pending] = s["pending_uploads"]
    assert (pending["file_id"], pending["kind"], pending["chunks"]) == ("up", "upload", 1)
    assert 0 <= pending["idle_seconds"] < 60
    assert main(["stat", "--data-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "dedup ratio" in text and "pending uploads   1" in text


def test_gc_prints_what_it_would_free_then_frees_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    with sqlite3.connect(layout.db_path(tmp_path)) as conn:
        conn.execute("DELETE FROM manifest_entries WHERE file_id = 'f3'")
        conn.execute("DELETE FROM manifests WHERE file_id = 'f3'")
    conn.close()
    gone = blob_path(tmp_path, refs["f3"][0])
    age_confirmation(tmp_path, refs["f3"][0], 2 * 3600)
    argv = ["gc", "--data-dir", str(tmp_path)]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would free 1 blobs, 341.8 KiB" in out and gone.exists()
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["freed_blobs"], report["freed_bytes"]) == (1, 350000)
    assert not gone.exists()


def test_real_subprocess_exit_codes_and_no_progress_when_piped(tmp_path: Path) -> None:
    refs = build(tmp_path)
    argv = [str(BLOBSTORE), "fsck", "--data-dir", str(tmp_path), "--full"]
    clean = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert clean.returncode == 0, clean.stderr
    assert "damage: 0" in clean.stdout
    assert "\x1b" not in clean.stdout + clean.stderr  # no bar, no colour into a pipe
    blob_path(tmp_path, refs["f2"][1]).unlink()
    broken = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 1
    assert "missing_blob" in broken.stdout and "breaks file f2 (company globex" in broken.stdout
    assert f"blobstore fsck --data-dir {tmp_path} --full --repair" in broken.stdout


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    build(tmp_path)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(BLOBSTORE), "fsck", "--data-dir", str(tmp_path), "--full"],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            piece = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not piece:
            break
        seen += piece
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = seen.decode(errors="replace")
    assert "\x1b[?25l" in text  # rich hid the cursor to draw its live bar
    assert "damage: 0" in text


async def _cli(*argv: str) -> int:
    """The CLI beside a running app: in a thread, as an operator's shell would run it."""
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.blob_files
async def test_api_answers_an_error_for_a_file_repair_marked_damaged(
    api: Api, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    good = await api.upload(b"fine content" * 100)
    bad = await api.upload(b"will rot on disk" * 100)
    with sqlite3.connect(layout.db_path(data_dir)) as conn:
        [(ref,)] = conn.execute(
            "SELECT ref FROM manifest_entries WHERE file_id = ?", (bad["id"],)
        ).fetchall()
    conn.close()
    path = blob_path(data_dir, ref)
    path.write_bytes(b"W" + path.read_bytes()[1:])
    assert await _cli("fsck", "--data-dir", str(data_dir), "--full", "--repair") == 1
    status, message = await error_of(await api.download(bad["id"]))
    assert status == 500 and "damaged" in message
    assert await api.content(good["id"]) == b"fine content" * 100
    assert (layout.quarantine_dir(data_dir) / ref).exists()


async def test_api_answers_404_for_an_upload_gc_expired(api: Api, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = await api.create({"filename": "big.bin", "total_chunks": "2", "total_size": "20"})
    resp = await api.chunk(created["id"], b"0123456789", {"chunk_number": "1", "total_chunks": "2"})
    assert resp.status == 200, await resp.text()
    live = await api.create({"filename": "recent.bin", "total_chunks": "2"})
    # Two days without a sign of life: the manifest and the chunk's blob are that old.
    past = time.time() - 2 * DAY
    with sqlite3.connect(layout.db_path(data_dir)) as conn:
        conn.execute(
            "UPDATE manifests SET updated_at = ? WHERE file_id = ?",
            (int(past * 1000), created["id"]),
        )
        [(ref,)] = conn.execute(
            "SELECT ref FROM manifest_entries WHERE file_id = ?", (created["id"],)
        ).fetchall()
    conn.close()
    age_confirmation(data_dir, ref, 2 * DAY)

    assert await _cli("gc", "--data-dir", str(data_dir), "--abandon-after", "1d") == 0
    assert (await api.meta(created["id"])).status == 404
    assert (await api.meta(live["id"])).status == 200
    assert not blob_path(data_dir, ref).exists()
