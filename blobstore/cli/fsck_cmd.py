"""``blobstore fsck``: report findings, print the repair command, and repair on request."""

from __future__ import annotations

import argparse
import random
import shlex
import time
from contextlib import AbstractContextManager, nullcontext

from blobstore import fsck, gc, layout, repair
from blobstore.cli.opening import open_store
from blobstore.cli.outcome import Outcome, UsageError, exit_code
from blobstore.cli.output import BarProgress, Out, human_age, human_bytes, show_progress

# Hints of one kind printed one by one before the rest are only counted (a crash can leave
# thousands of orphans; the operator needs the count, not the list).
HINTS_SHOWN = 20


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


async def cmd_fsck(args: argparse.Namespace, out: Out) -> Outcome:
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
    async with open_store(
        args.data_dir, args.blobs, writable=args.repair, db_url=args.db_url, master=args.master
    ) as (
        db,
        backend,
    ):
        bar = BarProgress(out.console) if show_progress(args, out.console.file) else None
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


def _print_repair(out: Out, report: repair.RepairReport) -> None:
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
