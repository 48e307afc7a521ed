"""Finding LibreOffice: a light module the server imports (no decoding library comes with it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def resolve_converter(name: str | None) -> str | None:
    """The LibreOffice program to run for ``name`` (``soffice`` or a path): ``soffice.bin``
    beside it when there is one; None when absent or when ``name`` is empty (turned off).

    Debian's ``soffice`` is a shell script starting a launcher starting ``soffice.bin``; running
    ``soffice.bin`` directly keeps the process tree to the one process a worker can kill.
    Blocking (it looks at the file system): call it off the event loop.
    """
    if not name:
        return None
    found = shutil.which(name)
    if found is None:
        return None
    real = Path(found).resolve()
    direct = real.with_name("soffice.bin")
    return str(direct if direct.is_file() and os.access(direct, os.X_OK) else real)
