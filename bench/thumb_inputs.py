"""The inputs of the thumbnail benchmark, generated once per run into a directory.

Photo-like content (gradients, blurred texture, grain) so that codecs work as on real photos;
sizes are what phones and cameras produce; the PDF and the .docx are made by LibreOffice from a
document written here, the video by the FFmpeg in PyAV's wheel.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

# format -> (file name, width, height); documents and videos have their own sizes.
IMAGES = {
    "jpeg": ("photo.jpg", 6000, 4000),
    "png": ("photo.png", 3000, 2000),
    "webp": ("photo.webp", 3000, 2000),
    "tiff": ("scan.tif", 3000, 2000),
    "gif": ("anim.gif", 1600, 1200),
    "avif": ("photo.avif", 2000, 1500),
    "heic": ("IMG_0001.heic", 3000, 2000),
}
FILES = {
    **{name: spec[0] for name, spec in IMAGES.items()},
    "pdf": "report.pdf",
    "video": "clip.mp4",
    "docx": "memo.docx",
}
VIDEO_SIZE = (1920, 1080)
DOCUMENT_PAGES = 10


def photo(width: int, height: int) -> object:
    """A photo-like sRGB pyvips image."""
    import pyvips

    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz.extract_band(0), xyz.extract_band(1)
    gradient = (x * (255 / width)).bandjoin(
        [y * (255 / height), (x + y) * (255 / (width + height))]
    )
    texture = pyvips.Image.gaussnoise(width, height, sigma=40, mean=0).gaussblur(2)
    grain = pyvips.Image.gaussnoise(width, height, sigma=6, mean=0)
    return (gradient + texture + grain).cast("uchar").copy(interpretation="srgb")


def make_all(directory: Path, formats: list[str] | None = None) -> dict[str, Path]:
    """Write the inputs of ``formats`` (default: all) into ``directory``; format -> path."""
    import pillow_heif
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    wanted = set(formats or FILES)
    paths = {name: directory / file for name, file in FILES.items() if name in wanted}
    for name, (_, width, height) in IMAGES.items():
        if name not in wanted:
            continue
        image = photo(width, height)
        target = str(paths[name])
        if name == "jpeg":
            image.jpegsave(target, Q=90)  # type: ignore[attr-defined]
        elif name == "png":
            image.pngsave(target, compression=6)  # type: ignore[attr-defined]
        elif name == "webp":
            image.webpsave(target, Q=80)  # type: ignore[attr-defined]
        elif name == "tiff":
            image.tiffsave(target, compression="lzw")  # type: ignore[attr-defined]
        elif name == "gif":
            image.gifsave(target)  # type: ignore[attr-defined]
        elif name == "avif":
            image.heifsave(target, compression="av1", Q=60, effort=0)  # type: ignore[attr-defined]
        else:
            pillow_heif.register_heif_opener()
            raw = image.write_to_memory()  # type: ignore[attr-defined]
            Image.frombytes("RGB", (width, height), raw).save(
                target, format="HEIF", quality=80, enc_params={"preset": "ultrafast"}
            )
    if "video" in wanted:
        _video(paths["video"])
    if wanted & {"pdf", "docx"}:
        _documents(directory, paths)
    return paths


def _video(path: Path) -> None:
    import av as pyav

    width, height = VIDEO_SIZE
    frame_image = photo(width, height).write_to_memory()  # type: ignore[attr-defined]
    with pyav.open(str(path), "w", format="mp4") as movie:
        stream = movie.add_stream("libx264", rate=30)
        assert isinstance(stream, pyav.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = pyav.VideoFrame(width, height, "rgb24")
        stride = frame.planes[0].line_size
        pad = bytes(stride - width * 3)
        frame.planes[0].update(
            b"".join(frame_image[y * width * 3 : (y + 1) * width * 3] + pad for y in range(height))
        )
        for _ in range(30):
            for packet in stream.encode(frame):
                movie.mux(packet)
        for packet in stream.encode():
            movie.mux(packet)


_ODT_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"'
)
_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest='
    '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" '
    'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    "</manifest:manifest>"
)
_PROSE = (
    "The quarterly review covers revenue, hiring and the roadmap for the next two quarters. " * 12
)


def _odt(pages: int) -> bytes:
    styles = (
        '<office:automatic-styles><style:style style:name="PB" style:family="paragraph">'
        '<style:paragraph-properties fo:break-before="page"/></style:style>'
        "</office:automatic-styles>"
    )
    breaks = ["" if n == 1 else ' text:style-name="PB"' for n in range(1, pages + 1)]
    body = "".join(
        f'<text:h text:outline-level="1"{brk}>Section {n}</text:h>'
        f"<text:p>{_PROSE}</text:p><text:p>{_PROSE}</text:p>"
        for n, brk in enumerate(breaks, start=1)
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_ODT_NS} '
        f'office:version="1.2">{styles}<office:body><office:text>{body}</office:text>'
        "</office:body></office:document-content>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        archive.writestr("META-INF/manifest.xml", _MANIFEST, zipfile.ZIP_DEFLATED)
        archive.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _documents(directory: Path, paths: dict[str, Path]) -> None:
    soffice = shutil.which("soffice")
    if soffice is None:
        raise RuntimeError("LibreOffice (soffice) is needed for the PDF and .docx inputs")
    source = directory / "memo.odt"
    source.write_bytes(_odt(DOCUMENT_PAGES))
    for target in ("docx", "pdf"):
        subprocess.run(
            [
                soffice,
                "--headless",
                f"-env:UserInstallation={(directory / 'lo-profile').as_uri()}",
                "--convert-to",
                target,
                "--outdir",
                str(directory),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    pdf = directory / "memo.pdf"
    if "pdf" in paths:
        pdf.rename(paths["pdf"])
