"""``blobstore gc``, ``stat``, ``show`` and ``cat``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import IO

from blobstore import gc, inline, manifests, stats
from blobstore.cli.fsck_cmd import HINTS_SHOWN
from blobstore.cli.opening import open_store
from blobstore.cli.outcome import Outcome, UsageError
from blobstore.cli.output import Out, human_age, human_bytes
from blobstore.refs import BlobRef, parse_ref

# File ids are the service's (UUIDs today); anything longer is not one.
MAX_FILE_ID = 128


async def cmd_gc(args: argparse.Namespace, out: Out) -> Outcome:
    async with open_store(
        args.data_dir,
        args.blobs,
        writable=not args.dry_run,
        db_url=args.db_url,
        current_schema=True,
        master=args.master,
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


async def cmd_stat(args: argparse.Namespace, out: Out) -> Outcome:
    async with open_store(
        args.data_dir, args.blobs, writable=False, db_url=args.db_url, master=args.master
    ) as (
        db,
        backend,
    ):
        s = await stats.gather(db, backend)
    if out.as_json:
        out.record(s.to_json())
        return Outcome.CLEAN
    out.line(f"blobs             {s.blobs} ({human_bytes(s.bytes_stored)} stored)")
    out.line(f"    inline        {s.inline_blobs} ({human_bytes(s.inline_bytes)} in the database)")
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


async def cmd_show(args: argparse.Namespace, out: Out) -> Outcome:
    file_id = args.file_id.strip()
    if not 0 < len(file_id) <= MAX_FILE_ID or not file_id.isprintable():
        raise UsageError(f"FILE_ID must be 1-{MAX_FILE_ID} printable characters")
    async with open_store(args.data_dir, args.blobs, writable=False, master=args.master) as (
        db,
        backend,
    ):
        async with db.read() as conn:
            head = await manifests.head(conn, file_id)
            if head is None:
                raise UsageError(f"no manifest for file {file_id}")
            slots = {
                slot: await manifests.entries(conn, file_id, slot)
                for slot in ("chunk", "staged", "thumb")
            }
        present: dict[BlobRef, int | None] = {}
        for entries in slots.values():
            for entry in entries:
                row = await inline.lookup(db, entry.ref)
                present[entry.ref] = row.size if row else await backend.stat(entry.ref)
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
    async with open_store(
        args.data_dir, args.blobs, writable=False, db_url=args.db_url, master=args.master
    ) as (
        db,
        backend,
    ):
        small = await inline.content(db, getattr(backend, "keys", None), ref)
        pieces = backend.read(ref) if small is None else _one(small)
        async for piece in pieces:
            await asyncio.to_thread(out.write, piece)
        await asyncio.to_thread(out.flush)
    return Outcome.CLEAN


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
