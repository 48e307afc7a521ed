"""The ``blobstore`` command: fsck (and its repair), gc, stat, cat, over a data directory.

Exit codes, decided in one place (:func:`exit_code`): 0 clean (hints allowed), 1 damage found
(or, for ``cat``, no such blob), 2 usage error or the store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import math
import os
import random
import re
import shlex
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, NoReturn

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

from blobstore import fsck, gc, layout, manifests, repair, stats
from blobstore.backends import BadBlobUrl, BlobLocation, LocalLocation, open_backend, parse_blob_url
from blobstore.engine import ENV as DB_URL_ENV
from blobstore.engine import DbTarget, parse_db_url
from blobstore.engine.base import BadDatabaseUrl, Engine
from blobstore.engine.migrate import current, migrate
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database
from blobstore.errors import BlobNotFound, BlobStoreError
from blobstore.port import BlobBackend
from blobstore.refs import InvalidRef, parse_ref
from blobstore.schema import TRACK

# Hints of one kind printed one by one before the rest are only counted (a crash can leave
# thousands of orphans; the operator needs the count, not the list).
HINTS_SHOWN = 20
# File ids are the service's (UUIDs today); anything longer is not one.
MAX_FILE_ID = 128


class ExitCode(enum.IntEnum):
    OK = 0
    DAMAGE = 1
    USAGE = 2


class Outcome(enum.Enum):
    """How a command that ran to its end went."""

    CLEAN = "clean"
    DAMAGE = "damage"


class UsageError(Exception):
    """Bad arguments."""


class StoreUnavailable(Exception):
    """The data directory or its database cannot be opened as a store."""


def exit_code(result: Outcome | BaseException) -> ExitCode:
    """The one switch from outcomes and errors to exit codes."""
    match result:
        case Outcome.CLEAN:
            return ExitCode.OK
        case Outcome.DAMAGE | BlobNotFound():
            return ExitCode.DAMAGE
        case (
            UsageError()
            | InvalidRef()
            | StoreUnavailable()
            | BadDatabaseUrl()
            | BadBlobUrl()
            | sqlite3.Error()
        ):
            return ExitCode.USAGE
        case BlobStoreError() | OSError():
            return ExitCode.USAGE  # the store cannot be read: not a verdict on its content
        case BaseException():
            raise result
    raise AssertionError(result)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``7d``."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 0, 90s, 15m, 2h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100 or math.isnan(value):
        raise argparse.ArgumentTypeError("PERCENT must be in (0, 100]")
    return value


def build_parser(
    default_dir: Path = Path("data"),
    default_blob_url: str | None = None,
    default_db: str | None = None,
) -> argparse.ArgumentParser:
    parser = _Parser(prog="blobstore", description="Check, collect and inspect a filesvc store.")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {metadata.version('filesvc')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--data-dir",
            type=Path,
            default=default_dir,
            help="the service's data directory (default: FILESVC_DATA_DIR, else ./data)",
        )
        p.add_argument(
            "--blob-url",
            default=default_blob_url,
            metavar="URL",
            help="where the blobs are, as the service's FILESVC_BLOB_URL (default: that "
            "variable, else the data directory); s3:// URLs sign with AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY",
        )
        p.add_argument(
            "--db-url",
            default=default_db,
            metavar="URL",
            help="metadata database (default: FILESVC_DB_URL, else SQLite in the data directory)",
        )
        return p

    p = add("fsck", "check manifests and blobs; exit 0 clean (hints allowed), 1 damage, 2 error")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="re-hash every blob")
    mode.add_argument(
        "--sample", type=parse_percent, metavar="PERCENT", help="re-hash this share of blobs"
    )
    p.add_argument("--seed", type=int, help="which sample (default: random, printed)")
    p.add_argument(
        "--json", action="store_true", help="JSON lines: one per finding, then a summary"
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="remove old temp files, quarantine corrupt blobs, mark broken files damaged",
    )
    p.add_argument(
        "--temp-min-age",
        type=parse_duration,
        default=repair.DEFAULT_TEMP_MIN_AGE,
        metavar="DURATION",
        help="--repair removes temp files at least this old (default 1h)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("gc", "expire abandoned uploads and delete unreferenced blobs; safe while serving")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be freed, change nothing"
    )
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=gc.DEFAULT_GRACE,
        metavar="DURATION",
        help="keep blobs written or deduplicated against this recently (default 1h)",
    )
    p.add_argument(
        "--abandon-after",
        type=parse_duration,
        default=gc.DEFAULT_ABANDON_AFTER,
        metavar="DURATION",
        help="expire incomplete uploads idle this long (default 1d)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: counts, and every blob planned for deletion by ref",
    )

    p = add("stat", "blobs, bytes stored and referenced, dedup ratio, files, pending uploads")
    p.add_argument("--json", action="store_true", help="one JSON object with every count")

    p = add("show", "a file's manifest: owner, state, and each chunk's and thumbnail's blob")
    p.add_argument("file_id", metavar="FILE_ID", help="the file's id, as the API gives it")
    p.add_argument(
        "--json", action="store_true", help="one JSON object: the header and every entry"
    )

    p = add("cat", "write a blob's bytes to stdout")
    p.add_argument("ref", help="xxh3_128-<32 hex>[-n]")
    return parser


def _check_layout(data_dir: Path, target: DbTarget, blobs: Path | None) -> None:
    if not data_dir.is_dir():
        raise StoreUnavailable(f"{data_dir}: no such directory")
    if target.sqlite_path is not None and not target.sqlite_path.is_file():
        raise StoreUnavailable(
            f"{target.sqlite_path}: no database (is this the service's --data-dir?)"
        )
    if blobs is not None and not blobs.is_dir():
        raise StoreUnavailable(f"{blobs}: no blob directory")


# Attempts to reach PostgreSQL before a command gives up (about 3 s with the backoff).
CONNECT_ATTEMPTS = 5


async def _open_engine(target: DbTarget, *, writable: bool) -> Engine:
    if target.sqlite_path is not None:
        db = Database(target.sqlite_path)
        try:
            if writable:
                await db.open()
            else:
                await db.open_readonly()
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise StoreUnavailable(
                f"{target.sqlite_path}: cannot open the database: {exc}"
            ) from None
        return db
    assert target.postgres_dsn is not None
    pg = PostgresEngine(target.postgres_dsn, pool_size=2)
    try:
        await pg.connect_with_backoff(attempts=CONNECT_ATTEMPTS, longest=1.0)
    except BlobStoreError as exc:
        raise StoreUnavailable(f"{target.describe()}: {exc}") from None
    return pg


@asynccontextmanager
async def open_store(
    data_dir: Path,
    blobs: BlobLocation,
    *,
    writable: bool,
    db_url: str | None = None,
    current_schema: bool = False,
) -> AsyncIterator[tuple[Engine, BlobBackend]]:
    """The store's metadata engine and the configured blob backend, or StoreUnavailable.
    Read-only opening changes nothing (fsck right after a crash must not disturb the evidence);
    writable opening brings the blob store's schema up to date.  ``current_schema``: refuse a
    read-only opening of a schema older than this release's (gc's dry run reads newer tables)."""
    target = parse_db_url(db_url, data_dir)
    local_root = blobs.root if isinstance(blobs, LocalLocation) else None
    await asyncio.to_thread(_check_layout, data_dir, target, local_root)
    db = await _open_engine(target, writable=writable)
    try:
        try:
            if writable:
                await migrate(db, [TRACK])
            elif current_schema and await current(db, TRACK.component) < len(TRACK.steps):
                raise StoreUnavailable(
                    "the database schema is older than this blobstore: start filesvc (or run"
                    " `blobstore gc`) once to migrate it"
                )
            async with db.read() as tx:
                await manifests.probe(tx)
        except (sqlite3.Error, OSError, BlobStoreError) as exc:
            raise StoreUnavailable(f"{target.describe()}: cannot use the database: {exc}") from None
        backend = await open_backend(blobs)
    except BaseException:
        await db.close()
        raise
    try:
        yield db, backend
    finally:
        await backend.close()
        await db.close()


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


def _show_progress(args: argparse.Namespace, out: IO[str]) -> bool:
    return not args.json and not args.no_progress and out.isatty() and sys.stderr.isatty()


@dataclass
class _Out:
    console: Console
    as_json: bool

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def record(self, obj: dict[str, object]) -> None:
        self.console.file.write(json.dumps(obj, sort_keys=False) + "\n")


def _holder_lines(finding: fsck.Finding) -> list[str]:
    return [
        f"    breaks file {h.file_id} (company {h.owner}, {h.slot})"
        + (" [already marked damaged]" if h.marked_damaged else "")
        for h in finding.holders
    ]


def _finding_line(f: fsck.Finding) -> str:
    subject = f.ref or f.file_id or f.path or ""
    extra = []
    if f.age is not None:
        extra.append(f"age {human_age(f.age)}")
    if f.size is not None and f.kind in (fsck.Kind.ORPHAN_BLOB, fsck.Kind.TEMP_LEFTOVER):
        extra.append(human_bytes(f.size))
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{f.severity.value:<6} {f.kind.value} {subject}: {f.message}{tail}"


def _store_args(args: argparse.Namespace) -> list[str]:
    """The options that name the store, for the commands we print."""
    out = ["--data-dir", str(args.data_dir)]
    if args.blob_url:
        out += ["--blob-url", args.blob_url]
    return out


def _repair_argv(args: argparse.Namespace, seed: int | None) -> list[str]:
    argv = ["blobstore", "fsck", *_store_args(args)]
    if args.full:
        argv.append("--full")
    elif args.sample is not None:
        argv += ["--sample", f"{args.sample:g}", "--seed", str(seed)]
    if args.temp_min_age != repair.DEFAULT_TEMP_MIN_AGE:
        argv += ["--temp-min-age", f"{args.temp_min_age:g}s"]
    return [*argv, "--repair"]


async def cmd_fsck(args: argparse.Namespace, out: _Out) -> Outcome:
    seed: int | None = None
    selector: fsck.Selector = fsck.rehash_none
    if args.full:
        selector = fsck.rehash_all
    elif args.sample is not None:
        seed = args.seed if args.seed is not None else random.randrange(2**31)
        selector = fsck.rehash_sample(args.sample, seed)
    elif args.seed is not None:
        raise UsageError("--seed goes with --sample")
    started = time.monotonic()
    keep: list[fsck.Finding] = []  # damage and temp files: what a repair acts on
    hints_shown: dict[fsck.Kind, int] = {}
    async with open_store(args.data_dir, args.blobs, writable=args.repair, db_url=args.db_url) as (
        db,
        backend,
    ):
        bar = BarProgress(out.console) if _show_progress(args, out.console.file) else None
        checker = fsck.Checker(db, backend, rehash=selector, progress=bar)
        live: AbstractContextManager[object] = bar.bar if bar is not None else nullcontext()
        with live:
            async for finding in checker.run():
                if (
                    finding.severity is fsck.Severity.DAMAGE
                    or finding.kind is fsck.Kind.TEMP_LEFTOVER
                ):
                    keep.append(finding)
                if out.as_json:
                    out.record({"type": "finding", **finding.to_json()})
                    continue
                if finding.severity is fsck.Severity.HINT:
                    shown = hints_shown.get(finding.kind, 0)
                    hints_shown[finding.kind] = shown + 1
                    if shown >= HINTS_SHOWN:
                        continue
                out.line(_finding_line(finding))
                for text in _holder_lines(finding):
                    out.line(text)
        report = None
        if args.repair:
            fixer = repair.Repairer(
                db,
                backend,
                quarantine=layout.quarantine_dir(args.data_dir),
                temp_min_age=args.temp_min_age,
            )
            report = await fixer.apply(keep)
    elapsed = time.monotonic() - started
    counts = checker.counts
    damage = [f for f in keep if f.severity is fsck.Severity.DAMAGE]
    broken = sorted({(h.file_id, h.owner) for f in damage for h in f.holders})
    fixable = [f for f in keep if repair.repairable(f, temp_min_age=args.temp_min_age)]
    outcome = Outcome.DAMAGE if damage else Outcome.CLEAN
    repair_cmd = shlex.join(_repair_argv(args, seed)) if fixable and not args.repair else None
    gc_cmd = shlex.join(["blobstore", "gc", *_store_args(args)])
    by_kind = {k.value: n for k, n in sorted(counts.by_kind.items())}
    if out.as_json:
        summary: dict[str, object] = {
            "type": "summary",
            "exit_code": int(exit_code(outcome)),
            "mode": "full" if args.full else "sample" if seed is not None else "cheap",
            "seed": seed,
            "files": counts.files,
            "blobs": counts.blobs,
            "blob_bytes": counts.blob_bytes,
            "hashed_blobs": counts.hashed,
            "hashed_bytes": counts.hashed_bytes,
            "seconds": round(elapsed, 3),
            "findings": by_kind,
            "damaged_files": [{"file_id": f, "company_id": c} for f, c in broken],
            "repair_command": repair_cmd,
        }
        if report is not None:
            summary["repair"] = {
                "removed_temp_files": report.removed_temp,
                "restored": report.restored,
                "quarantined": report.quarantined,
                "marked_damaged": [{"file_id": f, "company_id": c} for f, c in report.marked],
                "left": report.left,
            }
        out.record(summary)
        return outcome
    mode = (
        "--full"
        if args.full
        else f"--sample {args.sample:g} --seed {seed}"
        if seed is not None
        else "cheap"
    )
    out.line(
        f"checked {counts.files} files and {counts.blobs} blobs ({human_bytes(counts.blob_bytes)}),"
        f" re-hashed {counts.hashed} ({human_bytes(counts.hashed_bytes)}), mode {mode},"
        f" in {elapsed:.1f}s"
    )
    for severity in fsck.Severity:
        kinds = [(k, n) for k, n in sorted(counts.by_kind.items()) if fsck.SEVERITY[k] is severity]
        total = sum(n for _, n in kinds)
        detail = ", ".join(f"{k.value} {n}" for k, n in kinds)
        out.line(f"{severity.value}: {total}" + (f" ({detail})" if detail else ""))
    if broken:
        out.line(f"damaged files: {len(broken)}")
        for file_id, company in broken:
            out.line(f"    {file_id} (company {company})")
    if report is not None:
        _print_repair(out, report)
    if repair_cmd:
        out.line("to repair what can be repaired, run:")
        out.line(f"    {repair_cmd}")
    elif damage:
        out.line(
            "nothing more can be repaired here: the files listed are marked damaged (the API"
            " answers an error for them); restore their blobs from a backup, or delete the files"
        )
    if counts.by_kind.get(fsck.Kind.ORPHAN_BLOB):
        out.line(
            f"orphan blobs older than gc's grace period (--grace, default"
            f" {human_age(gc.DEFAULT_GRACE)}) are reclaimed by: {gc_cmd}"
        )
    return outcome


def _print_repair(out: _Out, report: repair.RepairReport) -> None:
    out.line(
        f"repair: removed {report.removed_temp} temp files"
        f" ({human_bytes(report.removed_temp_bytes)}), put back {len(report.restored)} blobs,"
        f" quarantined {len(report.quarantined)} blobs, marked {len(report.marked)} files damaged"
    )
    for ref in report.restored:
        out.line(f"    put back {ref}")
    for ref in report.quarantined:
        out.line(f"    quarantined {ref}")
    for file_id, company in report.marked:
        out.line(f"    marked damaged {file_id} (company {company})")
    for text in report.left:
        out.line(f"    left alone: {text}")


async def cmd_gc(args: argparse.Namespace, out: _Out) -> Outcome:
    async with open_store(
        args.data_dir,
        args.blobs,
        writable=not args.dry_run,
        db_url=args.db_url,
        current_schema=True,
    ) as (db, backend):
        r = await gc.collect(
            db,
            backend,
            grace=args.grace,
            abandon_after=args.abandon_after,
            dry_run=args.dry_run,
        )
    plan = r.plan
    if out.as_json:
        out.record(
            {
                "dry_run": r.dry_run,
                "scanned_blobs": r.scanned,
                "scanned_bytes": r.scanned_bytes,
                "expired_uploads": [
                    {"file_id": u.file_id, "company_id": u.owner, "kind": u.kind} for u in r.expired
                ],
                "planned_blobs": len(plan.delete),
                "planned_bytes": plan.delete_bytes,
                "planned": [{"ref": b.ref, "size": b.size} for b in plan.delete],
                "kept_young_blobs": plan.kept_young,
                "kept_young_bytes": plan.kept_young_bytes,
                "freed_blobs": r.freed,
                "freed_bytes": r.freed_bytes,
                "kept_rereferenced": r.kept_rereferenced,
                "kept_confirmed": r.kept_confirmed,
            }
        )
        return Outcome.CLEAN
    verb = "would expire" if r.dry_run else "expired"
    out.line(f"{verb} {len(r.expired)} abandoned uploads")
    for u in r.expired:
        out.line(f"    {u.kind} of file {u.file_id} (company {u.owner}), {len(u.entries)} chunks")
    out.line(
        f"scanned {r.scanned} blobs ({human_bytes(r.scanned_bytes)}); unreferenced and older than"
        f" the grace: {len(plan.delete)} ({human_bytes(plan.delete_bytes)});"
        f" unreferenced but younger: {plan.kept_young} ({human_bytes(plan.kept_young_bytes)})"
    )
    if r.dry_run:
        out.line(f"would free {len(plan.delete)} blobs, {human_bytes(plan.delete_bytes)}")
        for b in plan.delete[:HINTS_SHOWN]:
            out.line(f"    would delete {b.ref} ({human_bytes(b.size)})")
        if len(plan.delete) > HINTS_SHOWN:
            out.line(f"    ... and {len(plan.delete) - HINTS_SHOWN} more (--json lists them all)")
    else:
        out.line(f"freed {r.freed} blobs, {human_bytes(r.freed_bytes)}")
        if r.kept_rereferenced or r.kept_confirmed:
            out.line(
                f"kept {r.kept_rereferenced} that a manifest took meanwhile and"
                f" {r.kept_confirmed} that an upload confirmed during gc"
            )
    return Outcome.CLEAN


async def cmd_stat(args: argparse.Namespace, out: _Out) -> Outcome:
    async with open_store(args.data_dir, args.blobs, writable=False, db_url=args.db_url) as (
        db,
        backend,
    ):
        s = await stats.gather(db, backend)
    if out.as_json:
        out.record(s.to_json())
        return Outcome.CLEAN
    out.line(f"blobs             {s.blobs} ({human_bytes(s.bytes_stored)} stored)")
    out.line(f"referenced        {s.referenced_blobs} ({human_bytes(s.bytes_referenced)})")
    out.line(f"orphans           {s.orphan_blobs} ({human_bytes(s.orphan_bytes)})")
    out.line(f"logical bytes     {human_bytes(s.logical_bytes)} (what the files add up to)")
    out.line(f"dedup ratio       {s.dedup_ratio:.3f}")
    out.line(
        f"files             {s.files} ({s.complete_files} complete, {s.damaged_files} damaged)"
    )
    out.line(f"temp files        {s.temp_files} ({human_bytes(s.temp_bytes)})")
    out.line(f"pending uploads   {len(s.pending_uploads)}")
    for p in s.pending_uploads[:HINTS_SHOWN]:
        out.line(
            f"    {p.kind} of file {p.file_id} (company {p.company_id}),"
            f" {p.chunks} chunks, idle {human_age(p.idle_seconds)}"
        )
    return Outcome.CLEAN


async def cmd_show(args: argparse.Namespace, out: _Out) -> Outcome:
    file_id = args.file_id.strip()
    if not 0 < len(file_id) <= MAX_FILE_ID or not file_id.isprintable():
        raise UsageError(f"FILE_ID must be 1-{MAX_FILE_ID} printable characters")
    async with open_store(args.data_dir, args.blobs, writable=False) as (db, backend):
        async with db.read() as conn:
            head = await manifests.head(conn, file_id)
            if head is None:
                raise UsageError(f"no manifest for file {file_id}")
            slots = {
                slot: await manifests.entries(conn, file_id, slot)
                for slot in ("chunk", "staged", "thumb")
            }
        present = {
            entry.ref: await backend.stat(entry.ref)
            for entries in slots.values()
            for entry in entries
        }
    if out.as_json:
        out.record(
            {
                "file_id": head.file_id,
                "owner": head.owner,
                "expected_chunks": head.expected_chunks,
                "expected_size": head.expected_size,
                "complete": head.complete,
                "damaged": head.damaged,
                "updated_at": head.updated_at,
                **{
                    slot: [
                        {
                            "index": e.idx,
                            "ref": e.ref,
                            "size": e.size,
                            "stored_size": present[e.ref],
                        }
                        for e in entries
                    ]
                    for slot, entries in slots.items()
                },
            }
        )
        return Outcome.CLEAN
    state = "complete" if head.complete else "incomplete"
    out.line(
        f"file {head.file_id} (owner {head.owner}), {state}" + (", DAMAGED" if head.damaged else "")
    )
    expected = head.expected_size if head.expected_size is not None else "?"
    out.line(f"expected {head.expected_chunks or '?'} chunks, {expected} bytes")
    for slot, entries in slots.items():
        if not entries and slot != "chunk":
            continue
        total = sum(e.size for e in entries)
        out.line(f"{slot}: {len(entries)} ({human_bytes(total)})")
        for e in entries:
            stored = present[e.ref]
            note = (
                "" if stored == e.size else " MISSING" if stored is None else f" stored {stored} B"
            )
            out.line(f"    {e.idx:>6}  {e.ref}  {e.size} B{note}")
    return Outcome.CLEAN


async def cmd_cat(args: argparse.Namespace, out: IO[bytes]) -> Outcome:
    ref = parse_ref(args.ref)
    async with open_store(args.data_dir, args.blobs, writable=False, db_url=args.db_url) as (
        _,
        backend,
    ):
        async for piece in backend.read(ref):
            await asyncio.to_thread(out.write, piece)
        await asyncio.to_thread(out.flush)
    return Outcome.CLEAN


async def _run(args: argparse.Namespace) -> Outcome:
    if args.command == "cat":
        return await cmd_cat(args, sys.stdout.buffer)
    as_json = bool(getattr(args, "json", False))
    console = Console(file=sys.stdout, soft_wrap=True)
    out = _Out(console, as_json)
    match args.command:
        case "fsck":
            return await cmd_fsck(args, out)
        case "gc":
            return await cmd_gc(args, out)
        case "stat":
            return await cmd_stat(args, out)
        case "show":
            return await cmd_show(args, out)
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    try:
        # Same default as ``filesvc serve``, read here at the edge and nowhere deeper.
        default_dir = Path(os.environ.get("FILESVC_DATA_DIR") or "data")
        default_db = os.environ.get(DB_URL_ENV) or None
        args = build_parser(default_dir, os.environ.get("FILESVC_BLOB_URL"), default_db).parse_args(
            argv
        )
        args.data_dir = args.data_dir.resolve()  # the printed commands work from anywhere
        args.blobs = parse_blob_url(args.blob_url, args.data_dir, os.environ)
        outcome = asyncio.run(_run(args))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BrokenPipeError:
        # The reader had enough (``blobstore cat REF | head``); keep Python's exit-time flush of
        # stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as exc:
        code = exit_code(exc)  # re-raises what it does not know: a bug, shown with its traceback
        print(f"blobstore: {_describe(exc)}", file=sys.stderr)
        return int(code)
    return int(exit_code(outcome))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BlobNotFound):
        return f"no such blob: {exc}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
