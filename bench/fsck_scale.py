"""How long ``blobstore fsck`` takes over a large store, and how much memory it needs.

Builds a store of N small blobs quickly (files written straight into the fan-out layout, no
fsync; manifests in batched transactions), then times ``blobstore fsck`` cheap and ``--full`` as
real subprocesses and reads each one's peak RSS from ``wait4``.

    .venv/bin/python -m bench.fsck_scale --blobs 100000 [--blobs 10000 ...] [--dir D] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import xxhash

from blobstore import layout, manifests
from blobstore.refs import make_ref

CHUNKS_PER_FILE = 4
ROWS_PER_TX = 5000


def build(data_dir: Path, blobs: int, *, blob_size: int, seed: int = 1) -> float:
    """Write ``blobs`` unique blobs and manifests for them (4 chunks per file, all complete);
    return the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(seed)
    root = layout.blobs_dir(data_dir)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(layout.db_path(data_dir), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    for ddl in manifests.STEP_TABLES.sql["sqlite"]:
        db.execute(ddl)
    now_ms = int(time.time() * 1000)
    made_dirs: set[Path] = set()
    heads: list[tuple[str, str, int, int, int]] = []
    entries: list[tuple[str, str, int, str, int]] = []
    file_size = 0
    for i in range(blobs):
        data = i.to_bytes(8, "little") + rng.randbytes(rng.randrange(blob_size // 2, blob_size))
        ref = make_ref(xxhash.xxh3_128_hexdigest(data))
        fan = root / ref[9:11] / ref[11:13]
        if fan not in made_dirs:
            fan.mkdir(parents=True, exist_ok=True)
            made_dirs.add(fan)
        (fan / ref).write_bytes(data)
        file_id = f"file-{i // CHUNKS_PER_FILE:08d}"
        idx = i % CHUNKS_PER_FILE + 1
        entries.append((file_id, "chunk", idx, ref, len(data)))
        file_size += len(data)
        if idx == CHUNKS_PER_FILE or i == blobs - 1:
            heads.append((file_id, f"company-{i % 7}", idx, file_size, now_ms))
            file_size = 0
        if len(entries) >= ROWS_PER_TX:
            _flush(db, heads, entries)
    _flush(db, heads, entries)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - started


def _flush(
    db: sqlite3.Connection,
    heads: list[tuple[str, str, int, int, int]],
    entries: list[tuple[str, str, int, str, int]],
) -> None:
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO manifests (file_id, owner, expected_chunks, expected_size, complete,"
        " updated_at) VALUES (?, ?, ?, ?, 1, ?)",
        heads,
    )
    db.executemany(
        "INSERT INTO manifest_entries (file_id, slot, idx, ref, size) VALUES (?, ?, ?, ?, ?)",
        entries,
    )
    db.execute("COMMIT")
    heads.clear()
    entries.clear()


def run_fsck(data_dir: Path, *extra: str) -> dict[str, object]:
    """Run the real command once: wall seconds, exit code, its summary, and its own peak RSS
    (``wait4`` reports the rusage of exactly that child)."""
    exe = Path(sys.executable).parent / "blobstore"
    argv = [str(exe), "fsck", "--data-dir", str(data_dir), "--json", *extra]
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        summary = json.loads(out.read().decode().splitlines()[-1])
    return {
        "mode": " ".join(extra) or "cheap",
        "exit": proc.returncode,
        "seconds": round(seconds, 2),
        "blobs": summary["blobs"],
        "hashed": summary["hashed_blobs"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, action="append", help="store sizes (repeatable)")
    parser.add_argument("--blob-size", type=int, default=1024, help="max blob bytes (1024)")
    parser.add_argument("--dir", type=Path, help="where to build (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    args = parser.parse_args(argv)
    sizes = args.blobs or [100_000]
    base = args.dir or Path(tempfile.mkdtemp(prefix="fsck-scale-"))
    rows = []
    for n in sizes:
        data_dir = base / f"store-{n}"
        if not layout.db_path(data_dir).exists():
            built = build(data_dir, n, blob_size=args.blob_size)
            print(f"built {n} blobs in {built:.1f}s at {data_dir}", file=sys.stderr)
        for mode in ((), ("--full",)):
            row = run_fsck(data_dir, *mode)
            row["store_blobs"] = n
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(f"{'blobs':>8} {'mode':>6} {'exit':>4} {'seconds':>8} {'hashed':>7} {'peak RSS MiB':>12}")
    for r in rows:
        print(
            f"{r['store_blobs']:>8} {r['mode']:>6} {r['exit']:>4} {r['seconds']:>8}"
            f" {r['hashed']:>7} {r['peak_rss_mib']:>12}"
        )
    print(f"(page cache warm: the stores were just written; stores in {base})")
    if not args.keep and args.dir is None:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
