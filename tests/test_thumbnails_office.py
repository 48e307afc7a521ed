"""Office documents: converted by the real LibreOffice, previewed as PDF pages, and hardened so
that a document can make it fetch nothing, run nothing and outlive nothing.

The documents are built here (OpenDocument by hand, the Microsoft and RTF formats converted from
them by LibreOffice's own command) and saved under names that say nothing of their type.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import pyvips

from filesvc.thumbnails import office
from filesvc.thumbnails.converter import resolve_converter
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails
from filesvc.thumbnails.result import Rendered
from tests.office_media import (
    DERIVED,
    FIXTURES,
    convert_with_libreoffice,
    linked_image_document,
    macro_document,
    sources,
    text_document,
)
from tests.thumbnail_media import LIMITS, decode, failed, make_pdf, skipped, solid, write

KINDS = ["odt", "ods", "odp", *DERIVED, "txt", "csv"]


@pytest.fixture(scope="module")
def converter() -> str:
    program = resolve_converter("soffice")
    assert program is not None, "LibreOffice is installed by the test command (make test)"
    return program


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("office")
    made = sources(work)
    made["txt"] = write(work, "notes.txt", "Plain notes\nwith two lines, accentuées.\n".encode())
    made["csv"] = write(work, "table.csv", b"name,amount\nalice,10\nbob,20\n")
    for kind in DERIVED:
        made[kind] = FIXTURES / f"sample.{kind}"
    made["ppt"] = convert_with_libreoffice({"ppt": made["odp"]}, "ppt", work)["ppt"]
    return made


def thumbnails(outcome: Rendered) -> list[pyvips.Image]:
    assert outcome.status == "done" and outcome.reason is None, outcome.reason
    assert outcome.thumbnails
    return [decode(t) for t in outcome.thumbnails]


@pytest.mark.parametrize("kind", KINDS)
def test_each_office_format_is_converted_and_previewed(
    tmp_path: Path, documents: dict[str, Path], converter: str, kind: str
) -> None:
    path = write(tmp_path, "upload.bin", documents[kind].read_bytes())
    head = path.read_bytes()[:65536]
    assert office.document_kind(path, head) == ("txt" if kind == "csv" else kind)
    pages = thumbnails(render_thumbnails(path, LIMITS, converter))
    assert pages[0].get("vips-loader") == "jpegload_buffer"
    assert probe_pixels(path, LIMITS, converter) == LIMITS.box_width * LIMITS.box_height


def test_a_long_document_gives_its_first_ten_pages(tmp_path: Path, converter: str) -> None:
    path = write(tmp_path, "long", text_document("Cover", pages=12))
    pages = thumbnails(render_thumbnails(path, LIMITS, converter))
    assert len(pages) == 10
    assert all((p.width, p.height) == (283, 400) for p in pages)  # A4 portrait


def test_without_a_converter_office_documents_are_done_without_thumbnails(
    tmp_path: Path, documents: dict[str, Path]
) -> None:
    path = write(tmp_path, "memo", documents["docx"].read_bytes())
    assert skipped(render_thumbnails(path, LIMITS, None)) == (
        "office document: no converter (LibreOffice) installed"
    )
    assert probe_pixels(path, LIMITS, None) == 0


def test_documents_over_the_size_limit_are_not_converted(
    tmp_path: Path, documents: dict[str, Path], converter: str
) -> None:
    data = documents["odt"].read_bytes()
    path = write(tmp_path, "memo", data)
    limits = RenderLimits(max_office_bytes=len(data) - 1)
    assert "not converted" in skipped(render_thumbnails(path, limits, converter))


def test_zip_and_ole_files_that_are_not_documents_are_not_previewed(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "not a document")
    assert office.document_kind(archive, archive.read_bytes()[:1024]) is None
    ole = write(tmp_path, "x.msg", bytes.fromhex("d0cf11e0a1b11ae1") + bytes(2000))
    assert office.document_kind(ole, ole.read_bytes()[:1024]) is None
    html = write(tmp_path, "page.txt", b"<html><img src='http://example.invalid/x.png'></html>")
    assert office.document_kind(html, html.read_bytes()) is None


# --- nothing outside the document --------------------------------------------------------------

RED_PNG = bytes(solid(200, 200, (255, 0, 0)).pngsave_buffer())


class ImageServer(http.server.BaseHTTPRequestHandler):
    """Serves a red square for any path and records every request."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(RED_PNG)))
        self.end_headers()
        self.wfile.write(RED_PNG)

    def do_HEAD(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def do_OPTIONS(self) -> None:
        self.do_HEAD()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Handler", (ImageServer,), {"seen": seen})
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def red_share(image: pyvips.Image) -> float:
    """The share of clearly red pixels."""
    r, g, b = image[0], image[1], image[2]
    return float(((r > 150) & (g < 100) & (b < 100)).avg() / 255)


def test_linked_images_are_never_fetched(
    tmp_path: Path, web: tuple[str, list[str]], converter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = web
    local = write(tmp_path, "red.png", RED_PNG)
    # One picture linked over HTTP, one from the local file system.
    path = write(tmp_path, "doc", linked_image_document(f"{url}/pixel.png", local.as_uri()))

    [page] = thumbnails(render_thumbnails(path, LIMITS, converter))
    assert seen == []
    assert red_share(page) < 0.001

    # The same document with outside links allowed does fetch and show both images: the checks
    # above can fail.
    allowing = office._PROFILE_SETTINGS.replace(
        'BlockUntrustedRefererLinks" oor:op="fuse"><value>true',
        'BlockUntrustedRefererLinks" oor:op="fuse"><value>false',
    )
    assert allowing != office._PROFILE_SETTINGS
    monkeypatch.setattr(office, "_PROFILE_SETTINGS", allowing)
    office._close_spares()
    office._template.cache_clear()
    try:
        [shown] = thumbnails(render_thumbnails(path, LIMITS, converter))
    finally:
        office._close_spares()
        office._template.cache_clear()
    assert seen != []
    assert red_share(shown) > 0.1  # two 8 cm squares on an A4 page


def test_a_document_macro_runs_nothing_and_the_document_is_still_previewed(
    tmp_path: Path, web: tuple[str, list[str]], converter: str
) -> None:
    # The Debian -nogui LibreOffice this suite installs ran neither this macro nor an embedded
    # Python one even with macros allowed (checked through UNO with MacroExecutionMode
    # ALWAYS_EXECUTE_NO_WARN): this guards a build that can run them, and the next test pins the
    # settings that keep them off whatever the build.
    url, seen = web
    marker = tmp_path / "macro-ran"
    path = write(tmp_path, "memo", macro_document(marker, f"{url}/from-a-macro"))
    [page] = thumbnails(render_thumbnails(path, LIMITS, converter))
    assert (page.width, page.height) == (283, 400)
    assert not marker.exists() and not Path(f"{marker}.shell").exists()
    assert seen == []


# Stands in for soffice.bin: converts by copying a PDF, and tells what it saw in its profile.
RECORDING_CONVERTER = """#!{python}
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
if "--terminate_after_init" in args:
    (Path(os.environ["HOME"]) / "profile" / "user").mkdir(parents=True)
    sys.exit(0)
if "--convert-to" not in args:
    time.sleep(600)  # the instance started ahead of the next document
    sys.exit(0)
[setting] = [a for a in args if a.startswith("-env:UserInstallation=file://")]
user = Path(setting.removeprefix("-env:UserInstallation=file://")) / "user"
trace = user / "left-by-a-conversion"
seen = {{"profile": str(user.parent), "inherited": trace.exists(),
        "settings": (user / "registrymodifications.xcu").read_text()}}
trace.write_text("x")
out = Path(args[args.index("--outdir") + 1])
out.mkdir()
(out / "document.pdf").write_bytes(Path({pdf!r}).read_bytes())
with open({log!r}, "a") as log:
    log.write(json.dumps(seen) + "\\n")
"""


def test_each_conversion_has_a_fresh_profile_that_runs_no_macro_and_fetches_nothing(
    tmp_path: Path, documents: dict[str, Path]
) -> None:
    import json
    import sys

    log = tmp_path / "conversions.jsonl"
    pdf_file = write(tmp_path, "page.pdf", make_pdf([(595, 842)]))
    fake = write(
        tmp_path,
        "soffice.bin",
        RECORDING_CONVERTER.format(python=sys.executable, pdf=str(pdf_file), log=str(log)).encode(),
    )
    fake.chmod(0o755)
    office._close_spares()
    office._template.cache_clear()
    try:
        for _ in range(2):
            thumbnails(render_thumbnails(documents["odt"], LIMITS, str(fake)))
    finally:
        office._close_spares()
        office._template.cache_clear()
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert first["profile"] != second["profile"]
    # What a document left in its profile is never seen by the next one, and nothing is kept.
    assert not first["inherited"] and not second["inherited"]
    assert not Path(first["profile"]).exists() and not Path(second["profile"]).exists()
    for seen in (first, second):
        settings = seen["settings"].replace("\n", "")
        for name, value in (
            ("DisableMacrosExecution", "true"),
            ("MacroSecurityLevel", "3"),
            ("BlockUntrustedRefererLinks", "true"),
        ):
            assert f'oor:name="{name}" oor:op="fuse"><value>{value}</value>' in settings


# --- time and memory ---------------------------------------------------------------------------

# Stands in for soffice.bin: starts a child that ignores SIGTERM, then never finishes.
STUCK_CONVERTER = """#!/bin/sh
case "$*" in *--terminate_after_init*) mkdir -p "${HOME}/profile/user"; exit 0;; esac
sh -c 'trap "" TERM; sleep 600' &
echo $! > "$HOME/child.pid"
trap "" TERM
sleep 600
"""


def test_an_overrunning_conversion_is_killed_with_its_process_tree(
    tmp_path: Path, documents: dict[str, Path]
) -> None:
    fake = write(tmp_path, "soffice.bin", STUCK_CONVERTER.encode())
    fake.chmod(0o755)
    office._template.cache_clear()
    before = {p.pid for p in psutil.process_iter()}
    started = time.monotonic()
    try:
        outcome = render_thumbnails(documents["odt"], RenderLimits(office_seconds=1), str(fake))
    finally:
        office._close_spares()  # the instance started for the next document
        office._template.cache_clear()
    assert failed(outcome) == "office conversion took longer than 1 s; stopped"
    assert time.monotonic() - started < 30
    time.sleep(0.2)
    left = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before and "sleep 600" in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []


def test_a_conversion_over_the_memory_limit_fails(
    tmp_path: Path, documents: dict[str, Path], converter: str
) -> None:
    office._template.cache_clear()
    path = write(tmp_path, "memo", documents["odt"].read_bytes())
    try:
        outcome = render_thumbnails(path, RenderLimits(office_memory_bytes=64 << 20), converter)
    finally:
        office._close_spares()
        office._template.cache_clear()
    assert outcome.status == "error" and outcome.thumbnails == ()


def bound_pipe(session_leader: int) -> Path:
    """The path of the Unix socket named OSL_PIPE_* that a process of the session binds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        leader = psutil.Process(session_leader)
        for proc in [leader, *leader.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                for conn in proc.net_connections(kind="unix"):
                    if isinstance(conn.laddr, str) and "/OSL_PIPE_" in conn.laddr:
                        return Path(conn.laddr)
        time.sleep(0.1)
    raise AssertionError("the LibreOffice instance bound no pipe")


def test_conversions_leave_nothing_behind(
    tmp_path: Path, documents: dict[str, Path], converter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A scratch root of the test's own: /dev/shm is shared with every other process.
    root = tmp_path / "shm"
    root.mkdir()
    monkeypatch.setattr(office, "scratch_root", lambda: root)
    office._close_spares()
    office._template.cache_clear()
    try:
        thumbnails(render_thumbnails(documents["odt"], LIMITS, converter))
        # What stays: the template profile and the instance waiting for the next document,
        # which goes when asked (or when the process exits).
        mine = f"-{os.getpid()}-"
        assert len(os.listdir(root)) == 2
        assert all(mine in name for name in os.listdir(root))
        # LibreOffice's single-instance pipe lives in /tmp whatever TMPDIR says, and a killed
        # instance leaves it: the one the waiting instance binds must go with it.
        pipe = bound_pipe(office._spare[converter].proc.pid)
        assert pipe.name == office._ipc_pipe_name(office._spare[converter].profile)
        office._close_spares()
        assert not pipe.exists()
        [left] = os.listdir(root)
        assert left.startswith(f"filesvc-office-profile-{os.getpid()}-")
    finally:
        office._close_spares()
        office._template.cache_clear()


async def test_a_worker_killed_on_overrun_takes_its_converter_with_it(
    tmp_path: Path, documents: dict[str, Path]
) -> None:
    from filesvc.thumbnails.pool import ProcessRenderer

    marker = f"filesvc-test-{os.getpid()}-{time.monotonic_ns()}"
    # One process that never finishes, recognisable by its arguments.
    fake = write(
        tmp_path,
        "soffice.bin",
        (
            '#!/bin/sh\ncase "$*" in *--terminate_after_init*) '
            'mkdir -p "$HOME/profile/user"; exit 0;; esac\n'
            f"exec python3 -c 'import time; time.sleep(600)' {marker}\n"
        ).encode(),
    )
    fake.chmod(0o755)
    renderer = ProcessRenderer(
        RenderLimits(office_seconds=600),
        workers=1,
        job_timeout=5,
        pixel_budget=1 << 30,
        converter=str(fake),
    )

    def converters() -> list[int]:
        return [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if marker in " ".join(p.info["cmdline"] or [])
        ]

    try:
        rendered = await renderer(documents["odt"])
    finally:
        await renderer.close()
    assert rendered == Rendered("error", (), "rendering took longer than 5s")
    for _ in range(100):
        if not await asyncio.to_thread(converters):
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(converters) == []
