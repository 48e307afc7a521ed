"""The command line: subcommands, their options, and the parsers of durations and shares."""

from __future__ import annotations

import argparse
import math
import re
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from blobstore import gc, repair
from blobstore.cli.outcome import UsageError


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

    p = add("cat", "write a blob's bytes to stdout (a sealed blob decrypted)")
    p.add_argument("ref", help="xxh3_128-<32 hex>[-s|-e<32 hex>][-n]")

    p = add(
        "encrypt", "seal the plain blobs files reference (online, resumable; safe while serving)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object with the counts")

    p = add(
        "rotate-master-key",
        "re-wrap every company key under a new master key (blobs untouched; safe while serving)",
    )
    p.add_argument(
        "--new-key-file",
        type=Path,
        required=True,
        metavar="FILE",
        help="the new master key, 32 bytes in base64 (the current one: as the server reads it)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object with the count")
    return parser
