"""Turn one stored file into thumbnails: a pure, blocking module for a worker process.

``render_thumbnails(path, limits, converter)`` answers a ``Rendered``:

* ``done`` with one thumbnail per image or video, or per page of a PDF or office document (up to
  ``limits.max_pdf_pages``);
* ``done`` with **no** thumbnails and a ``reason`` when the file is not something we preview (not
  an image, PDF, video or office document; empty; an SVG that refers outside itself; an office
  document with no converter installed) or when its header declares more than the limits allow
  (it is then never decoded);
* ``error`` with a ``reason`` when the file looks like something we render but cannot be decoded
  (truncated, corrupt, encrypted PDF, a conversion that failed or overran).

It never raises. The format is decided by the content alone: the declared type and the name are
deliberately not parameters (a text file named ``.jpg`` is text, an SVG named ``.png`` is an SVG).
One module per family does the work: ``raster`` (libvips), ``heic`` (pillow-heif), ``svg``,
``pdf`` (PDFium), ``video`` (PyAV), ``office`` (LibreOffice, then ``pdf``).

Time limits and memory admission belong to the caller: ``probe_pixels`` reads headers only and
says how many pixels a render will hold, for a semaphore counted in pixels. The only module state
is a lock and a one-time libvips configuration per process. ``path`` must not change while a
call runs (stored blobs are immutable).
"""

from __future__ import annotations

import stat
from pathlib import Path

import av
import pyvips

from filesvc.thumbnails import allocator, office, pdf, raster, svg, video
from filesvc.thumbnails.imaging import configure_vips
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.plan import Plan, Settled
from filesvc.thumbnails.result import NOT_PREVIEWABLE, Rendered, RenderFailed, skipped
from filesvc.thumbnails.sniff import video_container

__all__ = ["RenderLimits", "probe_pixels", "render_thumbnails"]

# How much of the file is read to recognise its format (an SVG's XML declaration, comments and
# DOCTYPE may precede the root element; a ZIP's first entry names an office document's type).
_SNIFF_BYTES = 64 << 10


def probe_pixels(path: Path, limits: RenderLimits, converter: str | None = None) -> int:
    """Pixels that ``render_thumbnails`` will hold decoded, from headers only; 0 when none.

    A raster costs its declared width x height (shrink-on-load usually makes it far less: this is
    an upper bound), a video its frame size; an SVG, a PDF page or an office document's page is
    rendered at thumbnail size, so it costs that size. The answer never exceeds
    ``limits.max_pixels``, so a semaphore of at least that can never wait forever. Never raises.
    """
    try:
        return _plan(path, limits, converter).pixels
    except Exception:
        return 0


def render_thumbnails(path: Path, limits: RenderLimits, converter: str | None = None) -> Rendered:
    """Make the thumbnails of the file at ``path``; see the module docstring. Never raises.

    ``converter`` is the LibreOffice program for office documents (None: not installed).
    """
    try:
        return _plan(path, limits, converter).render()
    except RenderFailed as exc:
        return Rendered("error", (), exc.reason)
    except pyvips.Error:
        return Rendered("error", (), "image could not be decoded")
    except av.FFmpegError:
        return Rendered("error", (), "video could not be decoded")
    except OSError:
        return Rendered("error", (), "file could not be read")
    except Exception as exc:
        # A defect in this package or a library; the caller records it as a failed job.
        return Rendered("error", (), f"unexpected {type(exc).__name__} while rendering")
    finally:
        # The worker lives on: hand the job's pixels back rather than keep them for the next.
        allocator.release()


def _plan(path: Path, limits: RenderLimits, converter: str | None) -> Plan:
    """Decide from the content what the file is and whether it may be decoded. Headers only."""
    configure_vips()
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        # A FIFO or device would block or never end; stored blobs are regular files.
        raise RenderFailed("not a regular file")
    size = status.st_size
    if size == 0:
        return Settled(skipped("empty file"))
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    # Videos first: only their header and first frames are read, so their size is no cost.
    container = video_container(head)
    if container is not None:
        return video.plan(path, container, limits)
    if size > limits.max_input_bytes:
        return Settled(skipped(f"file larger than {limits.max_input_bytes} bytes; not decoded"))
    loader = raster.vips_loader(path)
    if loader in raster.RASTER_LOADERS:
        return raster.plan(path, loader, head, limits)
    if pdf.is_pdf(head):
        return pdf.plan(path, limits)
    if svg.looks_like_svg(head):
        return svg.plan(path, size, limits)
    kind = office.document_kind(path, head)
    if kind is not None:
        return office.plan(path, kind, size, limits, converter)
    return Settled(skipped(NOT_PREVIEWABLE))
