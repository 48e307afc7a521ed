"""Office documents: converted to PDF by LibreOffice (headless), then previewed as a PDF.

Word processing (docx, odt, doc, rtf, plain text and CSV), spreadsheets (xlsx, ods, xls) and
presentations (pptx, odp, ppt), recognised by content: the ZIP's entries or the ODF ``mimetype``,
the OLE2 stream names, the RTF signature, or text that decodes as UTF-8 without control bytes.
LibreOffice is optional: without it (``converter`` is None) such files are ``done`` without
thumbnails, with that reason.

Hardening (LibreOffice by default FETCHED an http:// image linked from an .odt, docs/measured.md):

* Each conversion gets its own LibreOffice process and profile directory (copied from a template
  this process made once), in a scratch directory of its own that is removed afterwards. The
  scratch directories live in ``/dev/shm`` (memory) where it exists, so neither the converted PDF
  nor LibreOffice's temporary files reach a disk; the PDF is read into memory for PDFium.  A
  document given as an in-memory file (decrypted content) is copied into that scratch directory
  (LibreOffice cannot open ``/proc/<pid>/fd/<n>`` paths), and refused when it is not memory.
  The pipe LibreOffice binds in /tmp for the instance goes with it (a killed instance leaves it).
* The process for the next document is started as soon as one is used (see ``_spare``), so a
  conversion does not wait for LibreOffice to start.
* The profile blocks every link to content outside the document (``BlockUntrustedRefererLinks``:
  linked images on the network and on the file system alike are not loaded) and disables macros
  (highest macro security, execution off).
* ``soffice.bin`` runs in a session of its own, with an address-space limit (``prlimit``) and the
  parent-death signal set (``setpriv``), so that it dies with the worker if the pool kills the
  worker; past ``office_seconds`` the worker kills its whole process group.
* Only the first ``max_pdf_pages`` pages are exported, and the PDF goes through the PDF renderer.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filesvc.thumbnails import pdf
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.plan import Plan, Settled
from filesvc.thumbnails.result import Rendered, RenderFailed, skipped
from filesvc.thumbnails.sniff import is_text

# Extension LibreOffice is given -> its PDF export filter.
_EXPORT_FILTERS = {
    **dict.fromkeys(("docx", "odt", "doc", "rtf", "txt"), "writer_pdf_Export"),
    **dict.fromkeys(("xlsx", "ods", "xls"), "calc_pdf_Export"),
    **dict.fromkeys(("pptx", "odp", "ppt"), "impress_pdf_Export"),
}
_ODF_TYPES = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/vnd.oasis.opendocument.presentation": "odp",
}
_OOXML_PARTS = (("word/document.xml", "docx"), ("xl/workbook.xml", "xlsx"))
_OOXML_PPT = "ppt/presentation.xml"
_OLE2 = bytes.fromhex("d0cf11e0a1b11ae1")
_OLE2_STREAMS = (
    ("WordDocument".encode("utf-16-le"), "doc"),
    ("Workbook".encode("utf-16-le"), "xls"),
    ("PowerPoint Document".encode("utf-16-le"), "ppt"),
)
# The exit status of soffice.bin when it asks to be restarted (after creating a profile).
_RESTART = 81
# Seconds to create the template profile (a first start of LibreOffice).
_TEMPLATE_SECONDS = 60

_PROFILE_SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry"
 xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop
 oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop
 oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop
 oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Misc"><prop
 oor:name="FirstRun" oor:op="fuse"><value>false</value></prop></item>
</oor:items>
"""


def document_kind(path: Path, head: bytes) -> str | None:
    """The office format of the file (an extension LibreOffice knows), or None."""
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path, head)
    if head.startswith(_OLE2):
        data = path.read_bytes()
        for name, kind in _OLE2_STREAMS:
            if name in data:
                return kind
        return None
    if head.startswith(b"{\\rtf"):
        return "rtf"
    return "txt" if is_text(head) else None


def _zip_kind(path: Path, head: bytes) -> str | None:
    # ODF: the first entry is "mimetype", stored, holding the document's type.
    if head[30:38] == b"mimetype":
        for media_type, kind in _ODF_TYPES.items():
            if head[38 : 38 + len(media_type)] == media_type:
                return kind
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if "[Content_Types].xml" not in names:
        return None
    for part, kind in _OOXML_PARTS:
        if part in names:
            return kind
    return "pptx" if _OOXML_PPT in names else None


@dataclass(frozen=True)
class OfficePlan:
    path: Path
    kind: str
    limits: RenderLimits
    converter: str
    pixels: int

    def render(self) -> Rendered:
        converted = _convert(self.path, self.kind, self.limits, self.converter)
        # PDFium reads the PDF from memory: the pages never touch a disk.
        return pdf.render(converted, self.limits)


def plan(path: Path, kind: str, size: int, limits: RenderLimits, converter: str | None) -> Plan:
    """The plan for an office document: converted when the converter is installed."""
    if converter is None:
        return Settled(skipped("office document: no converter (LibreOffice) installed"))
    if size > limits.max_office_bytes:
        return Settled(
            skipped(f"office document larger than {limits.max_office_bytes} bytes; not converted")
        )
    # Pages are rasterised at thumbnail size, one at a time.
    return OfficePlan(path, kind, limits, converter, limits.box_width * limits.box_height)


def scratch_root() -> Path:
    """Where conversions work: memory (``/dev/shm``) when there is one, else the temp dir."""
    shm = Path("/dev/shm")  # noqa: S108 - a RAM file system, so that plaintext stays off disks
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def in_memory(directory: Path) -> bool:
    """True when ``directory`` is on a RAM file system (tmpfs), by the mount table."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = str(directory) == point or str(directory).startswith(
                    point.rstrip("/") + "/"
                )
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return False
    return kind in ("tmpfs", "ramfs")


@dataclass
class _Instance:
    """One LibreOffice process with a profile of its own, started ahead of the document it will
    convert, in a scratch directory that goes with it."""

    converter: str
    scratch: Path
    profile: Path
    proc: subprocess.Popen[bytes]

    def close(self) -> None:
        _kill(self.proc)
        _remove_ipc_pipe(self.profile)
        shutil.rmtree(self.scratch, ignore_errors=True)


# Where LibreOffice binds its single-instance pipe: /tmp whatever TMPDIR says (/var/tmp when /tmp
# is not writable).  An instance that exits by itself removes its pipe; a killed one (every
# instance here, once its document is converted) leaves it behind, one socket per conversion.
_PIPE_DIRS = (Path("/tmp"), Path("/var/tmp"))  # noqa: S108 - LibreOffice's choice, not ours


def _ipc_pipe_name(profile: Path) -> str:
    """The name of the pipe LibreOffice binds for a profile: ``OSL_PIPE_<uid>_SingleOfficeIPC_``
    and the MD5 of the profile's URL in UTF-16, each byte in unpadded hex (how LibreOffice
    names it; tests/test_thumbnails_office.py checks no pipe is left behind)."""
    digest = hashlib.md5(profile.as_uri().encode("utf-16-le"), usedforsecurity=False).digest()
    return f"OSL_PIPE_{os.getuid()}_SingleOfficeIPC_" + "".join(f"{b:x}" for b in digest)


def _remove_ipc_pipe(profile: Path) -> None:
    name = _ipc_pipe_name(profile)
    for folder in _PIPE_DIRS:
        with contextlib.suppress(OSError):
            (folder / name).unlink()


# The instance waiting for this process's next document, by converter (one at most). A cold start
# of LibreOffice costs about 1-2 s on an idle 2-core machine, most of a conversion: so the next
# instance starts as soon as one is used, and a document is handed to one already running (the
# ``soffice.bin`` started for it forwards its arguments to the running instance over LibreOffice's
# own pipe, then exits). Each instance still converts one document only, with its own profile.
_spare: dict[str, _Instance] = {}


def _launch(converter: str, limits: RenderLimits) -> _Instance:
    scratch = Path(tempfile.mkdtemp(prefix=f"filesvc-office-{os.getpid()}-", dir=scratch_root()))
    profile = scratch / "profile"
    try:
        shutil.copytree(_template(converter), profile, symlinks=True)
        proc = _start(converter, profile, scratch, [], limits)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _Instance(converter, scratch, profile, proc)


@atexit.register
def _close_spares() -> None:
    while _spare:
        _spare.popitem()[1].close()


def _sweep(root: Path) -> None:
    """Remove scratch directories of processes that are gone (killed workers leave theirs)."""
    for entry in root.glob("filesvc-office-*"):
        owner = entry.name.removeprefix("filesvc-office-").removeprefix("profile-")
        pid = owner.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove_ipc_pipe(entry / "profile")
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


@functools.cache
def _template(converter: str) -> Path:
    """A profile made by a first start of LibreOffice, with our settings: copied for each
    conversion, so that no conversion pays for creating one (about a second) or shares one."""
    root = scratch_root()
    _sweep(root)
    home = Path(tempfile.mkdtemp(prefix=f"filesvc-office-profile-{os.getpid()}-", dir=root))
    atexit.register(shutil.rmtree, home, True)
    profile = home / "profile"
    proc = _start(converter, profile, home, ["--terminate_after_init"], RenderLimits())
    try:
        code = proc.wait(_TEMPLATE_SECONDS)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise RenderFailed("office converter did not start") from None
    if code not in (0, _RESTART) or not (profile / "user").is_dir():
        raise RenderFailed("office converter did not start")
    (profile / "user" / "registrymodifications.xcu").write_text(_PROFILE_SETTINGS)
    return profile


def _convert(path: Path, kind: str, limits: RenderLimits, converter: str) -> bytes:
    """The document converted to PDF (its first ``max_pdf_pages`` pages), by a fresh instance."""
    instance = _spare.pop(converter, None) or _launch(converter, limits)
    client: subprocess.Popen[bytes] | None = None
    try:
        scratch = instance.scratch
        source = scratch / "in" / f"document.{kind}"
        source.parent.mkdir()
        if str(path).startswith("/proc/"):
            # An in-memory file (filesvc.thumbnails.memfile): LibreOffice resolves links to a
            # real path and cannot open it, so the document is copied into the scratch
            # directory, which must then be memory too: plaintext never goes to a disk.
            if not in_memory(scratch):
                raise RenderFailed("office previews need /dev/shm (memory) for decrypted input")
            shutil.copyfile(path, source)
        else:
            source.symlink_to(path.absolute())
        out = scratch / "out"
        pages = {"PageRange": {"type": "string", "value": f"1-{limits.max_pdf_pages}"}}
        export = f"pdf:{_EXPORT_FILTERS[kind]}:{json.dumps(pages)}"
        args = ["--convert-to", export, "--outdir", str(out)]
        if kind == "txt":
            args += ["--infilter=Text (encoded):UTF8,LF,,"]
        client = _start(converter, instance.profile, scratch, [*args, str(source)], limits)
        try:
            code = client.wait(limits.office_seconds)
        except subprocess.TimeoutExpired:
            raise RenderFailed(
                f"office conversion took longer than {limits.office_seconds} s; stopped"
            ) from None
        converted = out / "document.pdf"
        if code != 0 or not converted.is_file():
            raise RenderFailed("office document could not be converted")
        return converted.read_bytes()
    finally:
        if client is not None:
            _kill(client)
        instance.close()
        # The next document's instance starts now, while this one's pages are rendered.
        with contextlib.suppress(OSError, RenderFailed):
            _spare[converter] = _launch(converter, limits)


def _start(
    converter: str, profile: Path, scratch: Path, args: list[str], limits: RenderLimits
) -> subprocess.Popen[bytes]:
    """soffice.bin in a session of its own, limited, dying with this process."""
    guard: list[str] = []
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    if prlimit is not None:
        guard += [prlimit, f"--as={limits.office_memory_bytes}", "--"]
    if setpriv is not None:
        guard += [setpriv, "--pdeathsig", "KILL", "--"]
    env = {
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "SAL_USE_VCLPLUGIN": "svp",
    }
    command = [
        *guard,
        converter,
        "--headless",
        "--invisible",
        "--nologo",
        "--norestore",
        "--nodefault",
        "--nolockcheck",
        "--nofirststartwizard",
        f"-env:UserInstallation={profile.as_uri()}",
        *args,
    ]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=scratch,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the converter's whole process group (it leads its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
