"""Office documents for the tests, built here: OpenDocument files written by hand (a ZIP of a few
XML parts), and the Microsoft and RTF formats made from them by LibreOffice itself."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"'
)
MEDIA_TYPES = {
    "odt": ("application/vnd.oasis.opendocument.text", "text"),
    "ods": ("application/vnd.oasis.opendocument.spreadsheet", "spreadsheet"),
    "odp": ("application/vnd.oasis.opendocument.presentation", "presentation"),
}
# A paragraph style that starts a new page, for multi-page documents.
PAGE_BREAK_STYLE = (
    '<office:automatic-styles><style:style style:name="PB" style:family="paragraph">'
    '<style:paragraph-properties fo:break-before="page"/></style:style>'
    "</office:automatic-styles>"
)


def odf(kind: str, body: str, *, styles: str = "", parts: dict[str, str] | None = None) -> bytes:
    """An OpenDocument file of ``kind`` (odt, ods, odp) whose body element holds ``body``;
    ``parts``: more XML files in the archive, by path."""
    parts = parts or {}
    media_type, element = MEDIA_TYPES[kind]
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {NS} '
        'xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" '
        f'office:version="1.2">{styles}<office:body><office:{element}>{body}'
        f"</office:{element}></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest='
        '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{media_type}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        + "".join(
            f'<manifest:file-entry manifest:full-path="{name}" manifest:media-type="text/xml"/>'
            for name in parts
        )
        + "</manifest:manifest>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), media_type)  # first, stored
        archive.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        archive.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        for name, text in parts.items():
            archive.writestr(name, text, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def text_document(*paragraphs: str, pages: int = 1) -> bytes:
    """An .odt with the paragraphs on the first page and ``pages - 1`` more pages."""
    body = "".join(f"<text:p>{p}</text:p>" for p in paragraphs)
    body += "".join(f'<text:p text:style-name="PB">Page {n}</text:p>' for n in range(2, pages + 1))
    return odf("odt", body, styles=PAGE_BREAK_STYLE)


def spreadsheet(rows: int = 3) -> bytes:
    cells = "".join(
        "<table:table-row>"
        + "".join(
            f'<table:table-cell office:value-type="float" office:value="{r * c}">'
            f"<text:p>{r * c}</text:p></table:table-cell>"
            for c in range(1, 5)
        )
        + "</table:table-row>"
        for r in range(1, rows + 1)
    )
    return odf("ods", f'<table:table table:name="Sheet1">{cells}</table:table>')


def presentation() -> bytes:
    frame = (
        '<draw:frame svg:x="2cm" svg:y="2cm" svg:width="20cm" svg:height="4cm">'
        "<draw:text-box><text:p>Quarterly review</text:p></draw:text-box></draw:frame>"
    )
    return odf("odp", f'<draw:page draw:name="one">{frame}</draw:page>')


def linked_image_document(*hrefs: str) -> bytes:
    """An .odt showing, at 8 cm square each, images LINKED (not embedded) from ``hrefs``."""
    images = "".join(
        f'<text:p><draw:frame draw:name="pic{n}" text:anchor-type="as-char" svg:width="8cm" '
        f'svg:height="8cm"><draw:image xlink:href="{href}" xlink:type="simple" '
        'xlink:show="embed" xlink:actuate="onLoad"/></draw:frame></text:p>'
        for n, href in enumerate(hrefs)
    )
    return odf("odt", "<text:p>Linked pictures below</text:p>" + images)


_BASIC_LIBRARIES = (
    '<?xml version="1.0" encoding="UTF-8"?><library:libraries xmlns:library='
    '"http://openoffice.org/2000/library" xmlns:xlink="http://www.w3.org/1999/xlink">'
    '<library:library library:name="Standard" library:link="false"/></library:libraries>'
)
_BASIC_LIBRARY = (
    '<?xml version="1.0" encoding="UTF-8"?><library:library xmlns:library='
    '"http://openoffice.org/2000/library" library:name="Standard" library:readonly="false" '
    'library:passwordprotected="false"><library:element library:name="Module1"/>'
    "</library:library>"
)


def macro_document(marker: Path, url: str) -> bytes:
    """An .odt whose Basic macro, bound to the document's load event, writes ``marker`` and asks
    ``url`` whether it exists (an HTTP request), then shows nothing different: the parts are laid
    out as LibreOffice itself saves a document with a macro (Basic/, the dom:load listener)."""
    basic = (
        "Sub Main\n"
        "  Dim n As Integer\n"
        "  n = FreeFile()\n"
        f'  Open "{marker}" For Output As #n\n'
        '  Print #n, "the macro ran"\n'
        "  Close #n\n"
        f'  Shell("/usr/bin/touch", 0, "{marker}.shell")\n'
        '  CreateUnoService("com.sun.star.ucb.SimpleFileAccess").exists("' + url + '")\n'
        "End Sub\n"
    )
    module = (
        '<?xml version="1.0" encoding="UTF-8"?><script:module xmlns:script='
        '"http://openoffice.org/2000/script" script:name="Module1" script:language="StarBasic">'
        f"{escape(basic)}</script:module>"
    )
    events = (
        "<office:scripts><office:event-listeners><script:event-listener script:language="
        '"ooo:script" script:event-name="dom:load" xlink:href="vnd.sun.star.script:'
        'Standard.Module1.Main?language=Basic&amp;location=document" xlink:type="simple"/>'
        "</office:event-listeners></office:scripts>"
    )
    return odf(
        "odt",
        "<text:p>A memo with a macro</text:p>",
        styles=events,
        parts={
            "Basic/script-lc.xml": _BASIC_LIBRARIES,
            "Basic/Standard/script-lb.xml": _BASIC_LIBRARY,
            "Basic/Standard/Module1.xml": module,
        },
    )


def convert_with_libreoffice(sources: dict[str, Path], target: str, work: Path) -> dict[str, Path]:
    """Convert each source to ``target`` (an extension) with LibreOffice's own command."""
    soffice = shutil.which("soffice")
    assert soffice is not None, "LibreOffice is installed by the test command"
    out = work / f"out-{target}"
    subprocess.run(
        [
            soffice,
            "--headless",
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--convert-to",
            target,
            "--outdir",
            str(out),
            *(str(p) for p in sources.values()),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return {name: out / f"{path.stem}.{target}" for name, path in sources.items()}


# The Microsoft and RTF files are committed under tests/fixtures/office (a few KiB each), made by
# ``python -m tests.office_media``: converting them at every run cost a LibreOffice start each.
# A .ppt made by LibreOffice is 450 KiB, so that one is converted when the tests run.
FIXTURES = Path(__file__).parent / "fixtures" / "office"
DERIVED = {
    "docx": "odt",
    "doc": "odt",
    "rtf": "odt",
    "xlsx": "ods",
    "xls": "ods",
    "pptx": "odp",
    "ppt": "odp",
}


def sources(directory: Path) -> dict[str, Path]:
    """The hand-built OpenDocument files, written into ``directory``."""
    made = {
        "odt": text_document("Hello from a memo", "Second line"),
        "ods": spreadsheet(),
        "odp": presentation(),
    }
    paths = {}
    for kind, data in made.items():
        paths[kind] = directory / f"sample.{kind}"
        paths[kind].write_bytes(data)
    return paths


def main() -> None:
    """Regenerate the committed fixtures from the hand-built sources."""
    import tempfile

    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        made = sources(Path(tmp))
        for target, source in DERIVED.items():
            if target == "ppt":
                continue
            converted = convert_with_libreoffice({target: made[source]}, target, Path(tmp))
            shutil.copyfile(converted[target], FIXTURES / f"sample.{target}")


if __name__ == "__main__":
    main()
