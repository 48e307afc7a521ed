"""What commands print: human sizes and ages, fsck's progress bar, lines or JSON records."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

_UNITS = {"s": 1, "m": 60, "h": 3600}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def human_age(seconds: float) -> str:
    for limit, unit in ((120, "s"), (7200, "m"), (172800, "h")):
        if seconds < limit:
            return f"{seconds / _UNITS[unit]:.0f}{unit}"
    return f"{seconds / 86400:.1f}d"


class BarProgress:
    """fsck's progress drawn by rich, one task per phase."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[hashed]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._hashed = 0

    def begin(self, phase: str, total: int | None) -> None:
        if self._task is not None:
            self.bar.update(self._task, visible=False)
        self._task = self.bar.add_task(phase, total=total, hashed="")

    def advance(self, items: int, hashed_bytes: int = 0) -> None:
        if self._task is None:
            return
        self._hashed += hashed_bytes
        task = self.bar.tasks[-1]
        if task.total is not None and task.completed + items > task.total:
            self.bar.update(self._task, total=task.completed + items)
        label = f"re-hashed {human_bytes(self._hashed)}" if self._hashed else ""
        self.bar.update(self._task, advance=items, hashed=label)


def show_progress(args: argparse.Namespace, out: IO[str]) -> bool:
    return not args.json and not args.no_progress and out.isatty() and sys.stderr.isatty()


@dataclass
class Out:
    console: Console
    as_json: bool

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def record(self, obj: dict[str, object]) -> None:
        self.console.file.write(json.dumps(obj, sort_keys=False) + "\n")
