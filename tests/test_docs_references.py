"""The repository stands on its own: every document a comment or a doc names exists in it, and
nothing points outside it (to the team's shared folder it was once written from)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A document named in prose: a path ending in .md, or anything under docs/; not part of a URL.
NAMED = re.compile(
    r"(?<![\w/.:-])((?:\.{1,2}/)?(?:[\w.-]+/)*[\w.-]+\.md|docs/[\w-]+(?:\.[\w]+)?)\b"
)
OUTSIDE = re.compile(r"\.\./shared|/work/shared|shared/(?:API|DESIGN|MEASURED|STYLE)\.md")


def tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    files = [ROOT / name for name in out.split("\0") if name]
    return [
        f
        for f in files
        if f.is_file() and f.suffix in {".py", ".md", ".toml", ".txt", ".service", ""}
    ]


def test_nothing_refers_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in tracked()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line) and path != Path(__file__).resolve()
    ]
    assert offenders == []


def test_every_named_document_exists() -> None:
    missing = []
    seen = 0
    for path in tracked():
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in NAMED.findall(line):
                seen += 1
                if not ((ROOT / name).exists() or (path.parent / name).exists()):
                    missing.append(f"{path.relative_to(ROOT)}:{n}: {name}")
    assert missing == []
    assert seen > 20  # the comments do name documents: the pattern finds them


def test_the_docs_the_readme_promises_are_there() -> None:
    for name in ("api.md", "design.md", "measured.md", "filesvc.service"):
        assert (ROOT / "docs" / name).stat().st_size > 1000, name
