"""The settings' defaults, each with the reason it has that value.

:mod:`filesvc.settings` declares the settings with these; modules that need a limit that is not
configurable (``MAX_TOTAL_CHUNKS``) take it from here.
"""

from __future__ import annotations

from filesvc.thumbnails.limits import (
    DEFAULT_BOX_HEIGHT,
    DEFAULT_BOX_WIDTH,
    DEFAULT_MAX_PIXELS,
)

# Largest single upload (one request's file part or raw body).  Large enough for any video a
# workplace shares, small enough that one client cannot fill the disk by accident.
DEFAULT_MAX_UPLOAD_BYTES = 16 << 30
# resumable.js splits into 1 MiB+ chunks; 100k chunks is a 100 GiB file: far past any real use,
# and it bounds the size of one manifest.
MAX_TOTAL_CHUNKS = 100_000
# docs/api.md: thumbnails fit inside 600x400 (the limit is defined in filesvc.thumbnails.limits).
DEFAULT_THUMB_BOX = (DEFAULT_BOX_WIDTH, DEFAULT_BOX_HEIGHT)
# docs/api.md: thumbnail_sync waits at most 10 seconds by default.
DEFAULT_THUMB_SYNC_TIMEOUT = 10.0
DEFAULT_THUMB_MAX_PIXELS = DEFAULT_MAX_PIXELS
# Pixels being decoded at once across thumbnail jobs (a semaphore counted in pixels): two images
# at the pixel limit, or many phone photos.  Decoded RGBA costs 4 bytes a pixel at worst.
DEFAULT_THUMB_PIXEL_BUDGET = 200_000_000
# Worker processes for thumbnails: one per core on the 2-core machines this runs on.
DEFAULT_THUMB_WORKERS = 2
# A thumbnail job that takes longer than this is abandoned (status error) and its worker killed:
# no image, video frame or office conversion (which stops itself at 30 s) needs more.
DEFAULT_THUMB_JOB_TIMEOUT = 60.0
# tus uploads not written to for this long expire (gc --abandon-after defaults to the same day).
DEFAULT_TUS_EXPIRY = 24 * 60 * 60.0
# The LibreOffice program that converts office documents, looked up on PATH.
DEFAULT_OFFICE_CONVERTER = "soffice"
# A body read that waits longer than this for the client fails the upload with 408: long enough
# for a phone on a bad network to stall and recover, short enough that a dead client does not pin
# a handler and a temp file.
DEFAULT_BODY_IDLE_TIMEOUT = 60.0
# A download whose client takes no bytes for this long loses its connection: the same patience
# as for a body the client sends (a phone on a bad network stalls and recovers within it), and a
# client that stops reading holds a connection and a piece of memory no longer.
DEFAULT_SEND_STALL_TIMEOUT = 60.0
# Large plain downloads sent at once by a thread of their own (1 MiB of buffer each): the fastest
# way here (docs/measured.md); a download beyond them goes out as mapped windows on the loop.
DEFAULT_DOWNLOAD_THREADS = 16
# Uploads streaming at once before new ones are refused with 503: each holds up to two 1 MiB
# write batches, a temp file and a socket, so 256 bound that to about half a GiB.
DEFAULT_MAX_CONCURRENT_UPLOADS = 256
# On SIGTERM, requests in flight get this long to finish: a 1 GiB upload at LAN speed takes about
# 10 s; orchestrators wait 30 s (Kubernetes' terminationGracePeriodSeconds) before SIGKILL.
DEFAULT_DRAIN_TIMEOUT = 25.0
# A thumbnail job's lease outlives its time limit by this much, so a live claimer always finishes
# (or is killed at the limit) before another process may take the job over.
THUMB_LEASE_MARGIN = 30.0
# Below this much free space on the data directory's file system new uploads are refused (507)
# before a byte is written, leaving room for the metadata writes (commits, deletes, thumbnails) of
# what is already stored; a quarter GiB is far more than those need and little on any real disk.
DEFAULT_MIN_FREE_BYTES = 256 << 20
# Memory per server process for small blobs read from S3 (blobstore/blobcache.py): 64 MiB holds
# about 16,000 files of 4 KiB, or 256 of the largest cached (256 KiB), against the 50 MiB or so
# that a server process holds anyway.
DEFAULT_BLOB_CACHE_BYTES = 64 << 20
# Space preallocated in <data>/space-reserve and given back only when free space is exhausted, so
# a DELETE can always commit.  A DELETE writes a few database pages (measured under 1 MiB on a full
# disk, see tests/test_api_full_disk.py); 16 MiB covers that many times over, and a crash recovery.
DEFAULT_DISK_RESERVE_BYTES = 16 << 20
# Uploads one caller (a company and a user or application) may stream at once before its next one
# is refused with 429: a quarter of the slots, so no fewer than four callers can take them all,
# while an application importing in bulk keeps the 64 parallel uploads `bench` measures with (a
# browser never opens more than 6 connections to a host).
DEFAULT_MAX_UPLOADS_PER_CALLER = 64
# A request's line and headers must have arrived this long after its first byte (after the
# connection opened, for a connection's first request), or the connection is closed: a real head
# is one packet, and 20 s covers a phone's retransmissions on a bad link (Apache's default is
# 20-40 s) while a client trickling header bytes holds its socket no longer.
DEFAULT_HEAD_TIMEOUT = 20.0
# A keep-alive connection with no request in progress is closed after this long: above the 60 s
# idle timeout of nginx's upstream keepalive and of common load balancers, so a proxy never reuses
# a connection the moment we close it, and far below aiohttp's own default of an hour.
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
# Slowest body accepted, in bytes a second over the window below: a few times below the uplink of
# the slowest mobile data still in use (GPRS, a few KB/s), yet holding an upload slot now costs a
# client real bandwidth instead of one byte a second.
DEFAULT_BODY_MIN_RATE = 1024
# The body rate is measured over this much time spent waiting for the client, so a stall of up to
# about 25 s inside an otherwise working upload passes.
DEFAULT_BODY_RATE_WINDOW = 30.0
# Waiting time at the start of a body that is never judged (TCP slow start, a radio waking up);
# the first window is measured after it.
DEFAULT_BODY_RATE_GRACE = 10.0
# Server processes `filesvc serve` runs on one port.  One: measured on this 2-core machine, a
# second process on the same data directory added no throughput (they serialise on the SQLite
# writer and the shared sync), see README.  Past 64 is a typo, not a machine.
DEFAULT_WORKERS = 1
MAX_WORKERS = 64

# Small blobs kept in the metadata database (blobstore.inline): measured in bench/README.md.
DEFAULT_INLINE_MAX = 16 * 1024
