"""The built email in Chromium, on a phone and a desktop: nothing overflows sideways, every image loads."""

from __future__ import annotations

import re

import pytest
from browser import changed_pixel_ratio, screenshot
from conftest import EXAMPLE, FIXTURES

from newsletter.build import build_issue
from newsletter.preview import block_remote_requests
from newsletter.workspace import Workspace


@pytest.mark.parametrize("folder", [EXAMPLE, FIXTURES / "every-section"], ids=["example", "every-section"])
@pytest.mark.parametrize("width", [375, 600])
def test_built_email_fits_and_loads_its_images(folder, width, chromium, tmp_path):
    result = build_issue(Workspace.discover(folder.parent), folder, tmp_path / "out")  # the repository's config
    page = chromium.new_page(viewport={"width": width, "height": 900})
    try:
        block_remote_requests(page)
        page.goto(result.html.as_uri(), wait_until="load")
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        images = page.evaluate(
            "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,"
            " right: i.getBoundingClientRect().right}))"
        )
    finally:
        page.close()
    assert scroll_width <= width
    assert images, "the email has images"
    assert [i["src"] for i in images if not i["ok"]] == []
    assert all(i["right"] <= width for i in images)


PREHEADER = re.compile(r'<div class="nl-preheader" style="([^"]*)">.*?</div>', re.DOTALL)


@pytest.mark.parametrize("folder", [EXAMPLE, FIXTURES / "every-section"], ids=["example", "every-section"])
@pytest.mark.parametrize("width", [375, 600])
def test_the_preheader_is_invisible_even_where_display_none_and_opacity_are_ignored(folder, width, chromium, tmp_path):
    """Gmail's mobile webmail ignores display:none and opacity (caniemail): max-height:0 on a block still hides it.

    Each variant is compared, pixel for pixel, with the same email without any preheader.
    """
    result = build_issue(Workspace.discover(folder.parent), folder, tmp_path / "out")
    html = result.html.read_text(encoding="utf-8")
    assert len(PREHEADER.findall(html)) == 1
    ignored = {"display", "opacity"}

    def without_ignored(match: re.Match) -> str:
        kept = [d for d in match.group(1).split(";") if d.strip() and d.split(":")[0].strip() not in ignored]
        return match.group(0).replace(match.group(1), ";".join(kept) + ";")

    variants = {
        "as sent": html,
        "display and opacity ignored": PREHEADER.sub(without_ignored, html),
        "without preheader": PREHEADER.sub("", html),
    }
    assert "max-height" in (style := PREHEADER.search(variants["display and opacity ignored"]).group(1))
    assert "display" not in style and "opacity" not in style
    shots = {}
    for name, text in variants.items():
        page_file = result.html.with_name(f"{name.replace(' ', '-')}.html")
        page_file.write_text(text, encoding="utf-8")
        shots[name] = screenshot(chromium, page_file.as_uri(), width, tmp_path / f"{name}.png")
    assert changed_pixel_ratio(shots["as sent"], shots["without preheader"]) == 0
    assert changed_pixel_ratio(shots["display and opacity ignored"], shots["without preheader"]) == 0


# Words of every length before each range, so that at some line end a range would straddle the edge.
YEAR_RANGES = " ".join(f"{'x' * (n % 9 + 1)} {2000 + n}{'-' if n % 2 else '–'}{2003 + n}" for n in range(60))
BROKEN_RANGES = """(style) => Array.from(document.querySelectorAll('span'))
  .filter(s => /^\\d{4}.\\d{4}$/.test(s.textContent))
  .map(s => { s.style.whiteSpace = style || s.style.whiteSpace; return s; })
  .filter(s => s.getClientRects().length > 1).map(s => s.textContent)"""


def test_a_year_range_stays_on_one_line_on_a_phone(make_issue, chromium, tmp_path):
    """At 375 px, no range 2023-2026 (or 2023–2026) is split at its dash; the same spans without white-space:nowrap
    are, which shows that the paragraph does reach the cases that matter."""
    folder = make_issue(
        "subject: Des priorités sur plusieurs années\npreheader: Un aperçu\nlang: fr\nsections:\n"
        f"  - type: text\n    text: {YEAR_RANGES}\n"
    )
    result = build_issue(Workspace.discover(folder), folder, tmp_path / "out")
    page = chromium.new_page(viewport={"width": 375, "height": 900})
    try:
        block_remote_requests(page)
        page.goto(result.html.as_uri(), wait_until="load")
        assert page.evaluate("document.querySelectorAll('span[style*=nowrap]').length") == 60
        assert page.evaluate(BROKEN_RANGES, "") == []
        assert page.evaluate(BROKEN_RANGES, "normal") != []  # the control: the same text, breakable
    finally:
        page.close()
