"""Helpers for the tests that look at pages in Chromium: screenshots and pixel comparison."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageChops

from newsletter.preview import block_remote_requests

# A pixel counts as changed when one of its channels moved by more than this (of 255), as in
# REFERENCE-RENDERING.md; anti-aliasing noise stays below it.
CHANNEL_THRESHOLD = 32


def screenshot(browser, url: str, width: int, output: Path) -> Path:
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        block_remote_requests(page)
        page.goto(url, wait_until="load")
        page.screenshot(path=str(output), full_page=True)
    finally:
        page.close()
    return output


def changed_pixel_ratio(first: Path, second: Path) -> float:
    """Share of pixels that differ between two screenshots; a height difference counts as changed pixels."""
    a, b = Image.open(first).convert("RGB"), Image.open(second).convert("RGB")
    size = (max(a.width, b.width), max(a.height, b.height))
    canvas_a, canvas_b = Image.new("RGB", size, (255, 0, 255)), Image.new("RGB", size, (0, 255, 0))
    canvas_a.paste(a)
    canvas_b.paste(b)
    red, green, blue = ImageChops.difference(canvas_a, canvas_b).split()
    largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    changed = largest.point(lambda v: 255 if v > CHANNEL_THRESHOLD else 0).histogram()[255]
    return changed / (size[0] * size[1])
