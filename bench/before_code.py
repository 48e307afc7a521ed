"""Older server code run beside today's in the same bench run: a target stated against "today"
(when an issue was filed) compares the two back to back, on the same machine at the same
moment, rather than against a figure recorded under another load.

The older tree is ``git archive <commit>`` of this repository, extracted; a server started with
:func:`server_env` imports its ``filesvc`` and ``blobstore`` from there (``PYTHONPATH`` comes
before the venv's editable install), with this venv's dependencies.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The server code before issue 14's read work: main just before its first change (the reads2
# merge's first commit, b86f4e3, has this one as its parent).
READS_BEFORE = "a06f163"


def extract(commit: str, dest: Path) -> Path:
    """The repository's tree at ``commit`` under ``dest`` (made); RuntimeError when git cannot
    give it (no git, or a copy of the code without its history)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"git archive {commit} failed: {e}") from None
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def tree(spec: str | Path, scratch: Path) -> Path:
    """A directory holding older code: ``spec`` itself when it is one, else the commit it names
    extracted under ``scratch``."""
    path = Path(spec)
    if path.is_dir():
        return path.resolve()
    return extract(str(spec), scratch)


def server_env(code: Path) -> dict[str, str]:
    """The settings that make ``filesvc serve`` run the code in ``code``."""
    return {"PYTHONPATH": str(code)}


@contextmanager
def codes(before: str | None, env: dict[str, str]) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """The servers an A/B tool starts, as ``(label, settings)``: this tree's (``filesvc``),
    and with ``before`` (a tree or a commit) the older code's (``filesvc <before>``), its tree
    extracted into a scratch directory removed on exit."""
    scratch = Path(tempfile.mkdtemp(prefix="filesvc-before-code-"))
    try:
        chosen = [("filesvc", env)]
        if before is not None:
            code = tree(before, scratch / "before")
            chosen.append((f"filesvc {before}", {**env, **server_env(code)}))
        yield chosen
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
