"""The example issue reproduces the seed bulletin, whole, in French, in both parts of the email."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from conftest import EXAMPLE, EXAMPLE_SLUG, ROOT, SEED, render_folder

from newsletter.checks import check_issue
from newsletter.config import load_config
from newsletter.render import web_values


class _VisibleText(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.links: list[tuple[str, str]] = []
        self._skip = 0
        self._href: str | None = None
        self._label: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "title"):
            self._skip += 1
        if tag == "a":
            self._href, self._label = dict(attrs).get("href"), []
        if tag in ("p", "div", "br", "td", "li", "h1", "h2", "h3"):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title"):
            self._skip -= 1
        if tag == "a" and self._href is not None:
            self.links.append((normalise("".join(self._label)), self._href))
            self._href = None

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)
            if self._href is not None:
                self._label.append(data)


def normalise(text: str) -> str:
    return " ".join(text.replace("\xa0", " ").split())


def seed_items() -> list[str]:
    """Every paragraph, heading, call to action and card line of the seed, as a reader sees it."""
    items = []
    for line in SEED.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line == "[Unsubscribe](#)":
            continue
        line = re.sub(r"\[([^\]]+)\]\(#\)", r"\1", line).replace("*", "")
        items.append(normalise(line))
    return items


@pytest.fixture(scope="module")
def example():
    config = load_config(ROOT)
    rendered = render_folder(EXAMPLE)
    html, text = rendered.fill(web_values(config, rendered.slug, rendered.lang))
    parser = _VisibleText()
    parser.feed(html)
    return {
        "html": html,
        "text": text,
        "visible": normalise("".join(parser.parts)),
        "links": parser.links,
        "rendered": rendered,
    }


def test_example_checks_clean_but_its_fictional_settings_are_what_a_real_send_refuses():
    """The example's newsletter.toml is fictional on purpose: check says what a real send would refuse, and only
    that; with the settings a user fills in (conftest.with_real_settings), nothing."""
    report = check_issue(EXAMPLE, load_config(ROOT), ROOT / "templates").report
    assert report.ok
    assert [(d.code, d.path, d.line) for d in report.diagnostics] == [
        ("reserved-name", "base_url", 7),
        ("placeholder-address", "publisher.postal_address", 19),
    ]


def test_the_example_checks_clean_with_real_settings(example_workspace):
    report = check_issue(example_workspace / "issues" / EXAMPLE_SLUG, load_config(example_workspace)).report
    assert report.diagnostics == []


def test_seed_is_read_whole():
    items = seed_items()
    assert len(items) == 32
    assert "Consulter les documents!" in items and "✉ fllegare@crdbsl.org" in items


@pytest.mark.parametrize("item", seed_items())
def test_every_seed_item_is_in_the_html(example, item):
    assert item in example["visible"]


@pytest.mark.parametrize("item", seed_items())
def test_every_seed_item_is_in_the_text_part(example, item):
    assert item in normalise(example["text"])


def test_calls_to_action_are_real_links(example):
    links = dict(example["links"])
    assert links["Consulter les documents!"].startswith("https://crdbsl.org/")
    assert links["Complétez le formulaire!"].startswith("https://crdbsl.org/")
    assert links["Ressources en développement social des MRC"].startswith("https://crdbsl.org/")
    assert links["acharest@crdbsl.org"] == "mailto:acharest@crdbsl.org"
    assert links["581-232-1735"] == "tel:+1-581-232-1735"
    assert "#" not in links.values()


def test_text_part_gives_label_and_url_for_buttons(example):
    assert "Consulter les documents! : https://crdbsl.org/alliance-solidarite/forum-2024/documents" in example["text"]


def test_footer_is_french_with_publisher_and_address(example):
    html, text = example["html"], example["text"]
    for part in (example["visible"], text):
        assert "Se désabonner" in part
        assert "Voir ce courriel dans votre navigateur" in part
        assert "Collectif régional de développement du Bas-Saint-Laurent" in part
        assert "123, rue de l'Exemple" in normalise(part).replace("&#39;", "'")
        assert "Vous recevez ce bulletin" in part
        assert "Unsubscribe" not in part
    assert '<html lang="fr"' in html


def test_accents_survive(example):
    for word in (
        "Évaluation",
        "Légaré-Pelletier",
        "œil",
        "À la suite",
        "Complétez",
        "paraîtront",
        "abonné·e",
    ):
        assert word in example["visible"] and word in example["text"]


def test_partner_logos_and_masthead_have_alt_and_load_from_images(example):
    html = example["html"]
    images = re.findall(r"<img [^>]*>", html)
    assert len(images) == 4
    for tag in images:
        assert re.search(r'alt="[^"]+"', tag)
        assert re.search(r'src="images/[a-z-]+\.png"', tag)
    assert set(example["rendered"].images) == {
        "logo-alliances.png",
        "partenaire-solidarite-sociale.png",
        "partenaire-crd-bsl.png",
        "partenaire-entente-sectorielle.png",
    }


def test_preheader_is_a_hidden_block_before_the_content_and_not_coloured_like_the_background(example):
    html = example["html"]
    match = re.search(r'<div class="nl-preheader" style="([^"]*)">Documents du Forum', html)
    assert match and "display: none" in match.group(1).replace("display:none", "display: none")
    assert "max-height: 0px" in match.group(1) and "color" not in match.group(1)
    body = html[html.index("<body") :]
    assert body.index("nl-preheader") < body.index("Le Forum des Alliances qui")


def test_html_is_under_gmail_clipping(example):
    assert len(example["html"].encode()) < 102 * 1024
