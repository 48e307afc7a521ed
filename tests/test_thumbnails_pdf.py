"""PDF pages through PDFium: one thumbnail per page, sized from the page, hardening."""

from __future__ import annotations

from pathlib import Path

import pytest

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails
from tests.thumbnail_media import (
    A4,
    LETTER_LANDSCAPE,
    LIMITS,
    decode,
    failed,
    make_pdf,
    mean_rgb,
    one,
    skipped,
    write,
)

# --- PDF ---------------------------------------------------------------------------------------


def test_pdf_gives_one_thumbnail_per_page_scaled_from_the_page_size(tmp_path: Path) -> None:
    path = write(tmp_path, "report.jpg", make_pdf([A4, LETTER_LANDSCAPE]))
    outcome = render_thumbnails(path, LIMITS)
    assert outcome.status == "done" and outcome.reason is None
    sizes = [(t.width, t.height, t.mime) for t in outcome.thumbnails]
    # A4 595x842 pt at 400/842 px per pt; Letter landscape 792x612 at 400/612.
    assert sizes == [(283, 400, "image/jpeg"), (518, 400, "image/jpeg")]
    page = decode(outcome.thumbnails[0])
    # White paper with a blue square in the bottom-left corner.
    assert page.crop(200, 10, 50, 50).min() > 240
    red, green, blue = mean_rgb(page.crop(8, 375, 15, 15))
    assert blue > 200 and red < 60 and green < 60
    # probe: the largest rendered page, not the page's size at any resolution.
    assert probe_pixels(path, LIMITS) == 518 * 400


def test_pdf_page_rotation_is_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, "scan.pdf", make_pdf([A4], rotate=90))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (567, 400)


def test_small_pdf_pages_are_not_enlarged(tmp_path: Path) -> None:
    path = write(tmp_path, "card.pdf", make_pdf([(252.0, 144.0)]))
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (252, 144)


def test_huge_pdf_page_is_rendered_at_thumbnail_size(tmp_path: Path) -> None:
    # 200 x 200 inches, the largest page the PDF spec allows without UserUnit.
    path = write(tmp_path, "poster.pdf", make_pdf([(14400.0, 14400.0)]))
    assert probe_pixels(path, LIMITS) == 400 * 400
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height) == (400, 400)


def test_pdf_stops_at_ten_pages(tmp_path: Path) -> None:
    path = write(tmp_path, "book.pdf", make_pdf([A4] * 12))
    outcome = render_thumbnails(path, LIMITS)
    assert outcome.status == "done"
    assert len(outcome.thumbnails) == 10
    for thumb in outcome.thumbnails:
        decode(thumb)


def test_pdf_with_more_pages_than_the_frame_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "many.pdf", make_pdf([A4] * 6))
    assert "6 pages" in skipped(render_thumbnails(path, RenderLimits(max_frames=5)))
    assert probe_pixels(path, RenderLimits(max_frames=5)) == 0


def test_encrypted_pdf_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pdf", make_pdf([A4], encrypted=True))
    assert failed(render_thumbnails(path, LIMITS)) == "PDF is encrypted"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"%PDF-1.7\nthis is not a pdf body\n", id="garbage"),
        pytest.param(make_pdf([A4])[:150], id="truncated"),
    ],
)
def test_broken_pdf_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, "broken.pdf", content)
    failed(render_thumbnails(path, LIMITS))
