"""The C allocator of a thumbnail worker, set to give decoded pixels back between jobs.

glibc's malloc keeps what a job freed for the next one: libvips allocates from several threads,
each thread gets its own arena, and a freed buffer in the middle of an arena is never returned;
a large buffer that was mmapped and freed raises glibc's mmap threshold to its size, so the next
buffer of that size comes from an arena too.  A long-lived worker's memory then grew job after
job (measured with ``bench/thumbs.py``: +5 to +40 MiB over four renders of one file, whatever the
format, where Pillow's single thread stayed flat).  So, once per process: at most two arenas,
and a fixed mmap threshold, so pixel buffers are mapped and unmapped whole; after each job,
``malloc_trim`` returns what the arenas still hold.  Off glibc (no ``mallopt``), nothing changes.

The price is page faults: every large buffer is a fresh mapping the kernel must fault in and zero,
4 KiB at a time (14,000 faults for a 6 MP HEIC).  :func:`environment` asks glibc, for the worker
process it starts, to mark those mappings for transparent huge pages, so that where the kernel
allows them (``/sys/kernel/mm/transparent_hugepage/enabled`` at ``madvise`` or ``always``) a
buffer is faulted in 2 MiB at a time: measured 60 % fewer faults and about 10 % less CPU per HEIC
and AVIF render, for the same memory (``bench/README.md``).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping

# mallopt parameters (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Buffers from this size up are mmapped: a 600-pixel-wide strip of RGB rows is well below it, a
# decoded frame or page far above.
MMAP_THRESHOLD = 256 << 10
ARENAS = 2
# glibc >= 2.35: madvise(MADV_HUGEPAGE) on the chunks malloc maps (read once, at process start).
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - every CPython on Linux can open itself
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None  # not glibc (musl, macOS): its own policy stays
    return libc


def tune() -> None:
    """Once per process, before the decoders start their threads."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, ARENAS)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release() -> None:
    """Give the memory freed by the job that just ended back to the system.  The next job
    faults it in again: measured 5-35 % more CPU per render (``bench/README.md``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the glibc tunable above, for a worker process about to be started (tunables
    set by the operator are kept; an older glibc ignores an unknown one)."""
    tunables = [t for t in base.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        tunables.append(HUGEPAGE_TUNABLE)
    return {**base, "GLIBC_TUNABLES": ":".join(tunables)}
