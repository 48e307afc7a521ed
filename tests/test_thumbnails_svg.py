"""SVG: rendered only when it cannot reach anything outside itself."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from filesvc.thumbnails.limits import RenderLimits
from filesvc.thumbnails.render import probe_pixels, render_thumbnails
from tests.thumbnail_media import (
    LIMITS,
    failed,
    one,
    skipped,
    solid,
    write,
)

# --- SVG ---------------------------------------------------------------------------------------

SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
TINY_PNG_URI = "data:image/png;base64," + base64.b64encode(solid(4, 4).pngsave_buffer()).decode()

CLEAN_SVG = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"
  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
{SVG_OPEN} width="1200" height="800" viewBox="0 0 120 80"
     xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
     inkscape:export-filename="C:\\Users\\me\\drawing.png">
  <defs>
    <linearGradient id="g">
      <stop offset="0" stop-color="#f00"/><stop offset="1" stop-color="#00f"/>
    </linearGradient>
    <rect id="r" width="10" height="10"/>
  </defs>
  <style>.bg {{ fill: url(#g); }}</style>
  <rect class="bg" width="120" height="80"/>
  <use href="#r" x="5" y="5"/>
  <use xlink:href="#r" x="20" y="5" style="fill: url( '#g' )"/>
  <image href="{TINY_PNG_URI}" x="40" y="5" width="4" height="4"/>
  <text x="5" y="70">caf&#233; &amp; co</text>
</svg>
"""


def test_clean_svg_is_rendered_to_fit_the_box(tmp_path: Path) -> None:
    path = write(tmp_path, "drawing.png", CLEAN_SVG.encode())
    thumb = one(render_thumbnails(path, LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (600, 400, "image/jpeg")
    # Rendered at the final size, so the probe reports the box, not the declared 1200x800.
    assert probe_pixels(path, LIMITS) == 600 * 400


def test_transparent_svg_gives_png_and_is_not_enlarged(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN} width="60" height="30"><circle cx="15" cy="15" r="10"/></svg>'
    thumb = one(render_thumbnails(write(tmp_path, "icon.svg", svg.encode()), LIMITS))
    assert (thumb.width, thumb.height, thumb.mime) == (60, 30, "image/png")


SIZE = 'width="9" height="9"'
OUTSIDE = "reference outside the document"
ENTITIES = "DOCTYPE with an internal subset (entities)"
# name: (document, the rule that must refuse it)
HOSTILE_SVGS: dict[str, tuple[str, str]] = {
    "external-href": (f'{SVG_OPEN}><image href="http://evil.test/x.png" {SIZE}/></svg>', OUTSIDE),
    "file-xlink-href": (
        f'{SVG_OPEN}><image xlink:href="file:///etc/passwd" {SIZE}/></svg>',
        OUTSIDE,
    ),
    "relative-href": (f'{SVG_OPEN}><use href="other.svg#icon"/></svg>', OUTSIDE),
    "href-via-char-refs": (
        f'{SVG_OPEN}><image href="&#x66;ile:///etc/passwd" {SIZE}/></svg>',
        OUTSIDE,
    ),
    "href-padded": (f'{SVG_OPEN}><use href="  //evil.test/a.svg#x"/></svg>', OUTSIDE),
    "xxe-entity": (
        '<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f"{SVG_OPEN}><text>&xxe;</text></svg>",
        ENTITIES,
    ),
    "billion-laughs": (
        '<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">]>\n'
        f"{SVG_OPEN}><text>&b;</text></svg>",
        ENTITIES,
    ),
    "external-dtd": (
        f'<!DOCTYPE svg SYSTEM "file:///etc/passwd">\n{SVG_OPEN}><rect {SIZE}/></svg>',
        "DOCTYPE naming a non-SVG DTD",
    ),
    "xml-stylesheet": (
        '<?xml-stylesheet type="text/css" href="http://evil.test/x.css"?>\n'
        f"{SVG_OPEN}><rect {SIZE}/></svg>",
        "processing instruction",
    ),
    "css-import": (
        f"{SVG_OPEN}><style>@import url(http://evil.test/x.css);</style></svg>",
        "CSS @import",
    ),
    "css-url": (
        f"{SVG_OPEN}><style><![CDATA[rect {{ fill: url(http://evil.test/p#p) }}]]></style></svg>",
        "url() outside the document",
    ),
    "css-escape": (f'{SVG_OPEN}><style>@\\69mport "x.css";</style></svg>', "CSS escape"),
    "style-attribute-url": (
        f"{SVG_OPEN}><rect style=\"fill:url('file:///x.svg#p')\"/></svg>",
        "url() outside the document",
    ),
    "presentation-attribute-url": (
        f'{SVG_OPEN}><rect fill="URL(//evil.test/p#p)"/></svg>',
        "url() outside the document",
    ),
    "script": (f"{SVG_OPEN}><script>alert(1)</script></svg>", "<script> element"),
    "event-attribute": (f'{SVG_OPEN} onload="alert(1)"/>', "onload event attribute"),
    "foreign-object": (
        f'{SVG_OPEN}><foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" '
        'src="http://evil.test/"/></foreignObject></svg>',
        "<foreignObject> element",
    ),
    "xinclude": (
        f'{SVG_OPEN} xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="/etc/passwd" parse="text"/></svg>',
        "<include> element",
    ),
    "nested-svg-data-uri": (
        f'{SVG_OPEN}><image href="data:image/svg+xml;base64,'
        + base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"/>').decode()
        + '"/></svg>',
        OUTSIDE,
    ),
    "svg-disguised-as-png-data-uri": (
        f'{SVG_OPEN}><image href="data:image/png;base64,'
        + base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"/>').decode()
        + '"/></svg>',
        "embedded image is not a PNG, JPEG, GIF or WebP",
    ),
    "xml-base": (f'{SVG_OPEN} xml:base="http://evil.test/"><use href="#a"/></svg>', "xml:base"),
    "latin1-encoding": (
        f'<?xml version="1.0" encoding="ISO-8859-1"?>\n{SVG_OPEN}><rect {SIZE}/></svg>',
        "encoding other than UTF-8",
    ),
}


@pytest.mark.parametrize(("svg", "rule"), HOSTILE_SVGS.values(), ids=HOSTILE_SVGS.keys())
def test_svg_that_refers_outside_itself_is_not_rendered(
    tmp_path: Path, svg: str, rule: str
) -> None:
    path = write(tmp_path, "innocent.svg", svg.encode("latin-1" if "8859" in svg else "utf-8"))
    assert skipped(render_thumbnails(path, LIMITS)) == f"SVG not rendered: {rule}"
    assert probe_pixels(path, LIMITS) == 0


def test_utf16_svg_is_not_rendered(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN} width="10" height="10"><rect {SIZE}/></svg>'
    path = write(tmp_path, "wide.svg", svg.encode("utf-16"))
    skipped(render_thumbnails(path, LIMITS))


def test_svg_embedding_a_bomb_is_not_rendered(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN} width="10" height="10"><image href="{TINY_PNG_URI}"/></svg>'
    path = write(tmp_path, "a.svg", svg.encode())
    one(render_thumbnails(path, RenderLimits(max_pixels=16)))
    reason = skipped(render_thumbnails(path, RenderLimits(max_pixels=15)))
    assert "too many pixels" in reason


def test_malformed_svg_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.svg", f'{SVG_OPEN} width="10" height="10"><rect'.encode())
    assert failed(render_thumbnails(path, LIMITS)) == "SVG is not well-formed XML"


def test_xml_that_is_not_svg_is_not_an_image(tmp_path: Path) -> None:
    html = b"<html><body><p>an inline <svg></svg> in a page</p></body></html>"
    skipped(render_thumbnails(write(tmp_path, "page.svg", html), LIMITS))


def test_svg_size_limit(tmp_path: Path) -> None:
    data = CLEAN_SVG.encode()
    path = write(tmp_path, "big.svg", data)
    assert "SVG larger" in skipped(
        render_thumbnails(path, RenderLimits(max_svg_bytes=len(data) - 1))
    )
