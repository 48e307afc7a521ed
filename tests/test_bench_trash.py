"""The bench keeps finished runs' data until it ends (bench/trash.py): large files go at once,
the many small ones (which would slow the next run's file creation) only at the end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import trash


@pytest.fixture(autouse=True)
def own_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trash, "stamp_path", lambda: tmp_path / "stamp")
    monkeypatch.setattr(trash, "_kept", [])


def test_retire_deletes_large_files_now_and_keeps_small_ones(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "ab").mkdir(parents=True)
    (run / "ab" / "big").write_bytes(b"x" * trash.LARGE)
    (run / "ab" / "small").write_bytes(b"x" * 4096)
    trash.retire(run)
    assert not (run / "ab" / "big").exists()
    assert (run / "ab" / "small").read_bytes() == b"x" * 4096
    assert trash.kept() == [run]


def test_empty_deletes_every_retired_directory_and_records_a_mass_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trash, "MANY", 3)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
        for i in range(2):
            (run / str(i)).write_bytes(b"y")
        trash.retire(run)
    assert trash.empty() == 4
    assert not any(run.exists() for run in runs)
    assert trash.kept() == []
    assert abs(float((tmp_path / "stamp").read_text()) - time.time()) < 60


def test_a_small_delete_is_not_recorded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "one").write_bytes(b"z")
    trash.retire(run)
    assert trash.empty() == 1
    assert not run.exists()
    assert not (tmp_path / "stamp").exists()


def test_settle_waits_out_the_window_after_a_recorded_mass_delete(tmp_path: Path) -> None:
    (tmp_path / "stamp").write_text("1000.0\n")
    assert trash.settle(now=1010.0, sleep=False) == pytest.approx(trash.WINDOW - 10)
    assert trash.settle(now=1000.0 + trash.WINDOW + 1, sleep=False) == 0.0
    # A clock that went backwards never makes it wait longer than the window.
    assert trash.settle(now=0.0, sleep=False) == trash.WINDOW


def test_settle_without_a_record_does_not_wait() -> None:
    assert trash.settle(sleep=False) == 0.0
