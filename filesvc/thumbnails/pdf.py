"""PDF: pypdfium2 (PDFium, the Chrome PDF engine, shipped in the wheel, so it installs with pip
alone) renders one page at a chosen scale, so each page is rasterised directly at thumbnail size,
never at full size: the wheel's libvips has no PDF loader. One thumbnail per page, up to
``max_pdf_pages``. PDFium is not thread-safe, so all PDFium calls in a process are serialised by
one lock. Office documents reach this module as the PDF LibreOffice made of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pypdfium2 as pdfium
import pyvips

from filesvc.thumbnails.imaging import VipsImage, encode, fit_scale
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.result import Rendered, RenderFailed, Thumbnail, done, skipped

# PDF readers accept "%PDF-" within the first KiB.
PDF_MAGIC_WINDOW = 1024


def is_pdf(head: bytes) -> bool:
    """True when the first bytes say PDF."""
    return b"%PDF-" in head[:PDF_MAGIC_WINDOW]


@dataclass(frozen=True)
class PdfPlan:
    path: Path
    limits: RenderLimits
    pixels: int

    def render(self) -> Rendered:
        return render(self.path, self.limits)


def plan(path: Path, limits: RenderLimits) -> PdfPlan:
    """The plan for a PDF; opens it for its page sizes."""
    return PdfPlan(path, limits, pixels(path, limits))


class _PdfBitmap(Protocol):
    """The part of ``pypdfium2.PdfBitmap`` this module uses."""

    @property
    def buffer(self) -> ctypes.Array[ctypes.c_ubyte]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def n_channels(self) -> int: ...
    def close(self) -> None: ...


class _PdfPage(Protocol):
    """The part of ``pypdfium2.PdfPage`` this module uses."""

    def render(self, *, scale: float, rev_byteorder: bool, prefer_bgrx: bool) -> _PdfBitmap: ...
    def close(self) -> None: ...


class _PdfDocument(Protocol):
    """The part of ``pypdfium2.PdfDocument`` this module uses."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> _PdfPage: ...
    def get_page_size(self, index: int) -> tuple[float, float]: ...
    def close(self) -> None: ...


# PDFium keeps global state and is not thread-safe; pypdfium2 does not serialise calls itself.
# One lock per process (a spawned worker gets its own) covers every PDFium call in this module.
_PDFIUM_LOCK = threading.Lock()


@contextlib.contextmanager
def _open_pdf(source: Path | bytes) -> Iterator[_PdfDocument]:
    """Open a PDF under the PDFium lock; RenderFailed when it is broken or needs a password."""
    with _PDFIUM_LOCK:
        try:
            pdf: _PdfDocument = pdfium.PdfDocument(source)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
                raise RenderFailed("PDF is encrypted") from None
            raise RenderFailed("PDF could not be opened") from None
        try:
            yield pdf
        finally:
            pdf.close()


def _page_size(pdf: _PdfDocument, index: int) -> tuple[float, float]:
    """Page ``index``'s size in points, after its /Rotate; RenderFailed when it is not a size."""
    try:
        width, height = (float(side) for side in pdf.get_page_size(index))
    except pdfium.PdfiumError:
        raise RenderFailed("PDF page could not be read") from None
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise RenderFailed("PDF page has no usable size")
    return width, height


def _pdf_scale(width: float, height: float, limits: RenderLimits) -> float:
    """Scale (pixels per point) at which PDFium's bitmap already fits the box.

    One point becomes at most one pixel (72 dpi), the PDF counterpart of never enlarging. PDFium's
    bitmap is ceil(size x scale) pixels, so nudge the scale down until rounding cannot overflow.
    """
    scale = fit_scale(width, height, limits)
    while (
        math.ceil(width * scale) > limits.box_width or math.ceil(height * scale) > limits.box_height
    ):
        scale *= 1 - 1e-9
    return scale


def pixels(path: Path, limits: RenderLimits) -> int:
    """The largest page bitmap a render will hold (pages are rendered one at a time)."""
    with _open_pdf(path) as pdf:
        count = len(pdf)
        if count > limits.max_frames:
            return 0
        largest = 0
        for index in range(min(count, limits.max_pdf_pages)):
            width, height = _page_size(pdf, index)
            scale = _pdf_scale(width, height, limits)
            largest = max(largest, math.ceil(width * scale) * math.ceil(height * scale))
        return largest


def render(source: Path | bytes, limits: RenderLimits) -> Rendered:
    """One thumbnail per page, up to ``limits.max_pdf_pages``, of a PDF file or PDF bytes."""
    with _open_pdf(source) as pdf:
        count = len(pdf)
        if count == 0:
            raise RenderFailed("PDF has no pages")
        if count > limits.max_frames:
            return skipped(
                f"PDF declares {count} pages, over the limit of {limits.max_frames}; not rendered"
            )
        pages = tuple(
            _render_pdf_page(pdf, index, limits)
            for index in range(min(count, limits.max_pdf_pages))
        )
    return done(*pages)


def _render_pdf_page(pdf: _PdfDocument, index: int, limits: RenderLimits) -> Thumbnail:
    width, height = _page_size(pdf, index)
    scale = _pdf_scale(width, height, limits)
    try:
        page = pdf[index]
        try:
            # Rasterised directly at thumbnail scale: the bitmap is at most box-sized. RGBx keeps
            # rows free of padding (4 bytes per pixel); the page is painted on opaque white.
            bitmap = page.render(scale=scale, rev_byteorder=True, prefer_bgrx=True)
            try:
                if bitmap.n_channels != 4 or bitmap.stride % 4:
                    raise RenderFailed("PDF page rendered in an unexpected pixel format")
                pixels = bytes(bitmap.buffer)
                stride_px, bitmap_w, bitmap_h = bitmap.stride // 4, bitmap.width, bitmap.height
            finally:
                bitmap.close()
        finally:
            page.close()
    except pdfium.PdfiumError:
        raise RenderFailed("PDF page could not be rendered") from None
    rgbx: VipsImage = pyvips.Image.new_from_memory(pixels, stride_px, bitmap_h, 4, "uchar")
    image = rgbx.crop(0, 0, bitmap_w, bitmap_h).extract_band(0, n=3).copy(interpretation="srgb")
    # A no-op unless PDFium's rounding differs from ours.
    image = image.thumbnail_image(limits.box_width, height=limits.box_height, size="down")
    return encode(image)
