"""The built email in Chromium, on a phone and a desktop: nothing overflows sideways, every image loads."""

from __future__ import annotations

import pytest
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
