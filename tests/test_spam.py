"""SpamAssassin's local tests find nothing to score in our messages: 0.0, and no HTML or MIME rule fires.

Debian's spamassassin, run with -L (no network tests) on whole messages as the transports send them; skipped,
loudly, only where it is not installed (`./dev test` installs it).
"""

from __future__ import annotations

import dataclasses
import email
import re
import shutil
import subprocess

import pytest
from conftest import FIXTURES, ROOT
from sample_messages import RECIPIENTS, example_campaign

from newsletter.config import load_config
from newsletter.issue import load_issue
from newsletter.render import render_issue


@pytest.fixture(scope="module")
def spamassassin() -> str:
    found = shutil.which("spamassassin")
    if found is None:
        pytest.skip("NO SPAMASSASSIN, ITS TESTS SKIPPED: install Debian's spamassassin")
    return found


def score(spamassassin: str, message: bytes) -> tuple[float, list[str]]:
    """SpamAssassin's score for a message and the rules that fired, from its X-Spam-Status header."""
    checked = subprocess.run([spamassassin, "-L", "-t", "-x"], input=message, capture_output=True, check=True)
    status = email.message_from_bytes(checked.stdout)["X-Spam-Status"]
    found = re.search(r"score=(-?[\d.]+) .*tests=([^ ]*)", " ".join(status.split()))
    assert found, status
    return float(found.group(1)), [rule for rule in found.group(2).split(",") if rule and rule != "none"]


def every_section_campaign():
    example = example_campaign()
    folder = FIXTURES / "every-section"
    rendered = render_issue(
        load_issue(folder),
        load_config(ROOT),
        ROOT / "templates",
        asset_base_url="https://bulletin.crdbsl.example/archive",
    )
    return dataclasses.replace(example, rendered=rendered)


def html_or_mime_rules(rules: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return [r for r in rules if r.startswith(("HTML_", "MIME_")) and r != "HTML_MESSAGE" and not r.startswith(allowed)]


def test_the_example_scores_zero_with_no_html_or_mime_rule(spamassassin):
    message = example_campaign().build(RECIPIENTS[2]).to_bytes()  # Zoé Côté-Bœuf: an encoded To
    points, rules = score(spamassassin, message)
    assert html_or_mime_rules(rules) == []
    assert points == 0.0, rules


def test_every_section_fires_only_the_informational_image_ratio_rule(spamassassin):
    """No template trips a rule. The fixture's eight images beside ~1,100 characters of text do trip
    HTML_IMAGE_RATIO_06 (0.001 points, informational in every score set): SpamAssassin counts an image whose height
    is "auto", as MJML writes it for responsive images, as 200 px tall, which triples the fixture's image area."""
    points, rules = score(spamassassin, every_section_campaign().build(RECIPIENTS[2]).to_bytes())
    assert html_or_mime_rules(rules, allowed=("HTML_IMAGE_RATIO_",)) == []
    assert points == 0.0, rules


def test_the_check_sees_a_low_contrast_preheader(spamassassin):
    """The rule the old preheader tripped: its colour was the background's."""
    message = example_campaign().build(RECIPIENTS[0]).to_bytes()
    hidden_by_colour = message.replace(
        b"font-size: 1px; line-height: 1px;", b"font-size: 1px; line-height: 1px; color: #eef1f3;"
    )
    assert hidden_by_colour != message
    assert "HTML_FONT_LOW_CONTRAST" in score(spamassassin, hidden_by_colour)[1]
