"""SVG, rendered by librsvg (through libvips) only when it cannot reach anything outside itself.

librsvg can fetch other files (images, ``<use>`` targets, stylesheets, XInclude, external
entities) relative to the document, so the document is scanned first (the policy is spelled out
above ``_SvgScan``); one that refers outside itself is ``done`` without thumbnails. Accepted
bytes are rendered from memory (no second read of the file) at the scale that fits the box.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import pyvips

from filesvc.thumbnails.imaging import VipsImage, encode, fit_scale
from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.plan import Plan, Settled
from filesvc.thumbnails.result import NOT_PREVIEWABLE, Rendered, RenderFailed, done, skipped


@dataclass(frozen=True)
class SvgPlan:
    data: bytes
    limits: RenderLimits
    scale: float
    pixels: int

    def render(self) -> Rendered:
        image: VipsImage = pyvips.Image.svgload_buffer(self.data, scale=self.scale)
        # Rounding may put a side one pixel over the box; this is a no-op otherwise.
        box = self.limits
        image = image.thumbnail_image(box.box_width, height=box.box_height, size="down")
        return done(encode(image))


def plan(path: Path, size: int, limits: RenderLimits) -> Plan:
    """The plan for a file that looks like SVG (``looks_like_svg``) of ``size`` bytes."""
    if size > limits.max_svg_bytes:
        return Settled(skipped(f"SVG larger than {limits.max_svg_bytes} bytes; not rendered"))
    with path.open("rb") as f:
        data = f.read(limits.max_svg_bytes + 1)
    if len(data) > limits.max_svg_bytes:
        return Settled(skipped(f"SVG larger than {limits.max_svg_bytes} bytes; not rendered"))
    return plan_bytes(data, limits)


#
# Policy: an SVG is rendered only if it is self-contained. librsvg can fetch other files (images,
# <use> targets, stylesheets, XInclude, external entities) relative to the document, so we refuse
# (done, no thumbnails) any document with:
#   - a DOCTYPE with an internal subset (entities: XXE, billion laughs), or any DOCTYPE other
#     than the W3C SVG one, or a processing instruction (<?xml-stylesheet?>);
#   - an href/src attribute in any namespace whose value is not a "#fragment" or a base64
#     data:image/{png,jpeg,gif,webp} URI (nested SVG in data: is refused too), and any embedded
#     raster whose header declares more than max_pixels (a bomb inside an SVG);
#   - CSS, in a <style> element or any SVG attribute, with @import, url() to anything but a
#     #fragment, or a backslash (CSS escapes could spell either);
#   - <script>, <foreignObject>, <iframe>, <object>, <embed>, <audio>, <video>, XInclude, an
#     on* event attribute, or xml:base;
#   - an encoding other than UTF-8/ASCII, or a NUL byte, so that this check and librsvg cannot
#     read different characters from the same bytes.
# The checked bytes are then rendered from memory: with no base file there is nothing relative
# for librsvg to resolve, a second line of defence. What stays possible is CPU cost (filters,
# deep <use> chains): the caller's time limit covers it.

_SVG_NS = "http://www.w3.org/2000/svg"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_BANNED_ELEMENTS = frozenset(
    {"script", "foreignobject", "iframe", "object", "embed", "audio", "video", "include", "handler"}
)
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|jpg|gif|webp);base64,(?P<b64>.*)", re.I | re.S)
_CSS_URL = re.compile(r"url\s*\(\s*['\"]?\s*(?P<target>[^)'\"]*)", re.I)
_EMBEDDED_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_EMBEDDED_LOADERS = frozenset(
    {"jpegload_buffer", "pngload_buffer", "gifload_buffer", "webpload_buffer"}
)


def looks_like_svg(head: bytes) -> bool:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"<") and b"<svg" in text


def plan_bytes(data: bytes, limits: RenderLimits) -> Plan:
    """The plan for an SVG document's bytes (already read, within the size limit)."""
    scan = _SvgScan()
    scan.run(data)
    if scan.root_local != "svg":
        # Some other XML or HTML document that happens to mention <svg>.
        return Settled(skipped(NOT_PREVIEWABLE))
    if scan.problem is not None:
        return Settled(skipped(f"SVG not rendered: {scan.problem}"))
    if scan.malformed:
        raise RenderFailed("SVG is not well-formed XML")
    for embedded in scan.embedded_images:
        problem = _embedded_image_problem(embedded, limits)
        if problem is not None:
            return Settled(skipped(f"SVG not rendered: {problem}"))
    try:
        header: VipsImage = pyvips.Image.svgload_buffer(data)
    except pyvips.Error:
        raise RenderFailed("SVG could not be parsed") from None
    if header.width < 1 or header.height < 1:
        raise RenderFailed("SVG has no size")
    scale = fit_scale(header.width, header.height, limits)
    pixels = math.ceil(header.width * scale) * math.ceil(header.height * scale)
    return SvgPlan(data, limits, scale, pixels)


def _embedded_image_problem(data: bytes, limits: RenderLimits) -> str | None:
    """Why an image embedded in an SVG as data: may not be rendered, or None."""
    # Check the magic first, so that no other libvips loader (SVG above all) sees the bytes.
    if not data.startswith(_EMBEDDED_MAGIC) and not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "embedded image is not a PNG, JPEG, GIF or WebP"
    try:
        header: VipsImage = pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error:
        return "embedded image is not a readable PNG, JPEG, GIF or WebP"
    loader = header.get("vips-loader")
    if loader not in _EMBEDDED_LOADERS:
        return "embedded image is not a PNG, JPEG, GIF or WebP"
    if header.width * header.height > limits.max_pixels:
        return "embedded image declares too many pixels"
    return None


def _css_problem(text: str) -> str | None:
    if "\\" in text:
        return "CSS escape"
    if "@import" in text.lower():
        return "CSS @import"
    for match in _CSS_URL.finditer(text):
        if not match.group("target").strip().startswith("#"):
            return "url() outside the document"
    return None


class _SvgScan:
    """One pass of expat over an SVG, recording the first reason not to render it."""

    def __init__(self) -> None:
        self.root_local: str | None = None
        self.problem: str | None = None
        self.malformed = False
        self.embedded_images: list[bytes] = []
        self._style_depth = 0
        self._style_text: list[str] = []

    def run(self, data: bytes) -> None:
        if b"\x00" in data:
            self._flag("NUL byte")
            return
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self._flag("not UTF-8")
            return
        # expat never fetches external entities or DTDs unless given a handler that does; the
        # handlers below only record what they see. No DOCTYPE internal subset is accepted, so
        # no entity is ever defined, let alone expanded.
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.XmlDeclHandler = self._xml_decl
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._entity
        parser.ExternalEntityRefHandler = self._external_entity
        parser.ProcessingInstructionHandler = self._processing_instruction
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        try:
            parser.Parse(data, True)
        except expat.ExpatError:
            self.malformed = True

    def _flag(self, why: str) -> None:
        if self.problem is None:
            self.problem = why

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8", "us-ascii", "ascii"):
            self._flag("encoding other than UTF-8")

    def _doctype(
        self, name: str, system_id: str | None, public_id: str | None, has_internal: int
    ) -> None:
        if has_internal:
            self._flag("DOCTYPE with an internal subset (entities)")
        elif system_id is not None and not (
            (public_id or "").startswith("-//W3C//DTD SVG")
            and system_id.startswith("http://www.w3.org/")
        ):
            self._flag("DOCTYPE naming a non-SVG DTD")

    def _entity(self, name: str, *_args: object) -> None:
        self._flag("entity declaration")

    def _external_entity(self, *_args: object) -> int:
        self._flag("external entity")
        return 0

    def _processing_instruction(self, target: str, data: str) -> None:
        self._flag("processing instruction")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rsplit(" ", 1)[-1]
        if self.root_local is None:
            self.root_local = local if name.startswith(_SVG_NS + " ") or " " not in name else ""
        if local.lower() in _BANNED_ELEMENTS:
            self._flag(f"<{local}> element")
        if local == "style":
            self._style_depth += 1
        for attr_name, value in attrs.items():
            namespace, _, attr_local = attr_name.rpartition(" ")
            self._attribute(namespace, attr_local.lower(), value)

    def _attribute(self, namespace: str, local: str, value: str) -> None:
        if namespace == _XML_NS and local == "base":
            # "#id" stays internal in librsvg whatever the base, but nothing needs one.
            self._flag("xml:base")
        if local.startswith("on"):
            self._flag(f"{local} event attribute")
        if local.endswith("href") or local == "src":
            target = value.strip()
            if target.startswith("#"):
                return
            match = _DATA_IMAGE.fullmatch(target)
            if match is None:
                self._flag("reference outside the document")
                return
            try:
                raw = "".join(match.group("b64").split())
                self.embedded_images.append(base64.b64decode(raw, validate=True))
            except (binascii.Error, ValueError):
                self._flag("malformed data: URI")
            return
        # Presentation attributes and style= are CSS. Attributes in other namespaces (Inkscape's
        # and Sodipodi's bookkeeping, which may hold Windows paths) are not read by librsvg.
        if namespace in ("", _SVG_NS):
            problem = _css_problem(value)
            if problem is not None:
                self._flag(problem)

    def _end(self, name: str) -> None:
        if name.rsplit(" ", 1)[-1] == "style" and self._style_depth > 0:
            self._style_depth -= 1
            if self._style_depth == 0:
                problem = _css_problem("".join(self._style_text))
                self._style_text.clear()
                if problem is not None:
                    self._flag(problem)

    def _text(self, text: str) -> None:
        if self._style_depth > 0:
            self._style_text.append(text)
