"""A thumbnail worker process: ``python -m filesvc.thumbnails.worker``.

Reads one request per line on stdin, answers on stdout, until stdin closes.  A request is JSON
``{"op": "probe" | "render", "path": "...", "limits": {...}, "converter": "..." | null, "id": N}``.
An answer is one JSON line echoing ``id`` (``{"pixels": N}`` for probe; ``{"status", "reason",
"thumbnails": [{"mime", "width", "height", "size"}]}`` for render) followed, for render, by the
thumbnails' bytes back to back.

Plain pipes to a child process the service starts and may kill: a libvips call cannot be
interrupted from inside, and killing a ``ProcessPoolExecutor`` worker was seen to close a
descriptor of the service's a second time (an upload then failed with EBADF), so the service
manages these processes itself through asyncio's subprocess support.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails


def answer(request: dict[str, object], out: BinaryIO) -> None:
    """Run one request and write its answer (which echoes the request's ``id``)."""
    path = Path(str(request["path"]))
    limits = RenderLimits.from_json(request.get("limits"))
    converter = request.get("converter")
    program = converter if isinstance(converter, str) and converter else None
    number = request.get("id")
    if request.get("op") == "probe":
        pixels = probe_pixels(path, limits, program)
        out.write(json.dumps({"id": number, "pixels": pixels}).encode() + b"\n")
        return
    outcome = render_thumbnails(path, limits, program)
    head = {
        "id": number,
        "status": outcome.status,
        "reason": outcome.reason,
        "thumbnails": [
            {"mime": t.mime, "width": t.width, "height": t.height, "size": len(t.data)}
            for t in outcome.thumbnails
        ],
    }
    out.write(json.dumps(head).encode() + b"\n")
    for t in outcome.thumbnails:
        out.write(t.data)


def main() -> None:
    """Serve requests until stdin closes."""
    # The answers go over a private copy of fd 1, and fd 1 itself (and sys.stdout) now lead to
    # stderr: whatever a decoding library prints can never enter the answer channel, where the
    # service would read it as an answer (and the real one as the next file's).
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin.buffer:
        answer(json.loads(line), out)
        out.flush()


if __name__ == "__main__":
    main()
