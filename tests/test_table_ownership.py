"""Each table has one owning module: every statement that writes a table is in its owner, and a
read of another module's table is one of the few joins listed here (each saving a round trip on
a hot path).  Checked over the source text of both packages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The owner of a table: a module, or a package (a path ending in "/") whose modules share it.
OWNERS = {
    "manifests": "blobstore/manifests/",
    "manifest_entries": "blobstore/manifests/",
    "blob_refs": "blobstore/confirmations.py",
    "schema_version": "blobstore/engine/migrate.py",
    "files": "filesvc/repo.py",
    "thumbnail_jobs": "filesvc/jobqueue.py",
    "tus_uploads": "filesvc/tus/table.py",
}
# Reads of another owner's table, by design: the file row joined with its manifest head and
# entries (one round trip per metadata GET, download and testChunks).
JOINS = {("filesvc/repo.py", "manifests"), ("filesvc/repo.py", "manifest_entries")}
WRITE = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|ALTER\s+TABLE|CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?"
    r"|CREATE\s+INDEX(?:\s+IF\s+NOT\s+EXISTS)?\s+\w+\s+ON)\s+(\w+)",
)
READ = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)")


def owns(owner: str, rel: str) -> bool:
    return rel.startswith(owner) if owner.endswith("/") else rel == owner


def sources() -> list[Path]:
    return sorted(p for pkg in ("filesvc", "blobstore") for p in (ROOT / pkg).rglob("*.py"))


def test_every_write_is_in_the_owning_module() -> None:
    wrong = []
    for path in sources():
        rel = str(path.relative_to(ROOT))
        for table in WRITE.findall(path.read_text()):
            if table in OWNERS and not owns(OWNERS[table], rel):
                wrong.append((rel, table))
    assert wrong == []


def test_reads_of_another_modules_table_are_the_listed_joins() -> None:
    found = set()
    for path in sources():
        rel = str(path.relative_to(ROOT))
        for table in READ.findall(path.read_text()):
            if table in OWNERS and not owns(OWNERS[table], rel):
                found.add((rel, table))
    assert found == JOINS


def test_the_checker_sees_statements() -> None:
    text = (ROOT / "filesvc/jobqueue.py").read_text()
    assert "thumbnail_jobs" in WRITE.findall(text)
    assert ("filesvc/repo.py", "manifests") in {
        ("filesvc/repo.py", t) for t in READ.findall((ROOT / "filesvc/repo.py").read_text())
    }
