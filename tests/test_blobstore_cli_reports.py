"""What `blobstore` tells an operator: gc --dry-run names its blobs, `show FILE_ID`, help texts,
and fsck's orphan hint naming the grace period."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobstore.cli import HINTS_SHOWN, build_parser, main
from blobstore.refs import make_ref
from tests.test_blobstore_fsck import SHARED, blob_path, build


def orphan_blobs(data_dir: Path, count: int) -> list[str]:
    """``count`` blobs no manifest references, two hours old."""
    refs: list[str] = []
    for n in range(count):
        ref = make_ref(f"{n:032x}")
        path = blob_path(data_dir, ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"orphan %d" % n)
        past = time.time() - 2 * 3600
        os.utime(path, (past, past))
        refs.append(ref)
    return refs


def test_gc_dry_run_names_the_blobs_it_would_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    refs = orphan_blobs(tmp_path, HINTS_SHOWN + 5)
    argv = ["gc", "--data-dir", str(tmp_path), "--dry-run", "--grace", "0s"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"would free {len(refs)} blobs" in out
    named = [line.split()[2] for line in out.splitlines() if line.startswith("    would delete")]
    assert len(named) == HINTS_SHOWN and set(named) <= set(refs)
    assert "... and 5 more (--json lists them all)" in out
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(p["ref"] for p in report["planned"]) == sorted(refs)
    assert all(p["size"] > 0 for p in report["planned"])
    assert all(blob_path(tmp_path, r).exists() for r in refs)  # a dry run deletes nothing


def test_show_lists_a_files_chunks_and_refs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = build(tmp_path)
    file_id = "f1"
    blob_path(tmp_path, refs["f1"][2]).unlink()
    assert main(["show", "--data-dir", str(tmp_path), f" {file_id}\n"]) == 0
    out = capsys.readouterr().out
    assert f"file {file_id} (owner acme), complete" in out
    assert "chunk: 3" in out
    assert f"{refs['f1'][1]}  {len(SHARED)} B\n" in out
    assert f"{refs['f1'][2]}  50 B MISSING" in out
    assert main(["show", "--data-dir", str(tmp_path), file_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["ref"] for c in shown["chunk"]] == refs["f1"]
    assert [c["index"] for c in shown["chunk"]] == [1, 2, 3]
    assert shown["chunk"][2]["stored_size"] is None and shown["owner"] == "acme"


@pytest.mark.parametrize(
    ("file_id", "message"),
    [
        ("", "FILE_ID must be 1-128 printable characters"),
        ("x" * 129, "FILE_ID must be 1-128 printable characters"),
        ("f1\x00", "FILE_ID must be 1-128 printable characters"),
        ("f\x1b[31m1", "FILE_ID must be 1-128 printable characters"),
        ("../../etc/passwd", "no manifest for file ../../etc/passwd"),
        ("' OR 1=1 --", "no manifest for file ' OR 1=1 --"),
        ("F1", "no manifest for file F1"),
    ],
)
def test_show_refuses_what_is_not_a_stored_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file_id: str, message: str
) -> None:
    build(tmp_path)
    assert main(["show", "--data-dir", str(tmp_path), file_id]) == 2
    assert capsys.readouterr().err == f"blobstore: {message}\n"


def test_every_json_flag_has_help() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(commands, dict)
    seen = 0
    for name, sub in commands.items():
        for action in sub._actions:
            if "--json" in action.option_strings:
                seen += 1
                assert action.help and len(action.help) > 10, name
    assert seen == 6  # fsck, gc, stat, show, encrypt, rotate-master-key


def test_fsck_orphan_hint_mentions_the_grace_period(tmp_path: Path) -> None:
    build(tmp_path)
    orphan_blobs(tmp_path, 1)
    out = subprocess.run(
        [sys.executable, "-m", "blobstore.cli", "fsck", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "older than gc's grace period (--grace, 1h by default)" in out
    assert "orphan blobs older than gc's grace period (--grace, default 60m)" in out
