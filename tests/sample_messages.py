"""Messages for the sending tests: the example issue, built for recipients with French names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from newsletter.config import load_config
from newsletter.issue import load_issue
from newsletter.message import Campaign, Recipient, Version, parse_mailbox
from newsletter.render import render_issue
from newsletter.tokens import TokenSigner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "issues" / "2024-11-forum-des-alliances"
RECIPIENTS = [
    Recipient(1, "francoise@example.org", "Françoise Légaré-Pelletier"),
    Recipient(2, "audrey@example.org", "Audrey Charest"),
    Recipient(3, "zoe@example.net", "Zoé Côté-Bœuf"),
    Recipient(4, "jean@example.com", None),
]


def example_campaign() -> Campaign:
    config = load_config(ROOT)
    rendered = render_issue(
        load_issue(EXAMPLE), config, ROOT / "templates", asset_base_url="https://bulletin.crdbsl.example/archive"
    )
    return Campaign(
        id=12,
        list_slug="alliances",
        list_name="Le bulletin des Alliances",
        rendered=rendered,
        sender=parse_mailbox("Le bulletin des Alliances <alliancesolidarite@crdbsl.org>"),
        reply_to="alliancesolidarite@crdbsl.org",
        base_url="https://bulletin.crdbsl.example",
        signer=TokenSigner("test-key-" + "x" * 32),
    )


def bilingual_campaign() -> Campaign:
    """example_campaign with an English version (its subject and words marked as English), for a list of both
    languages: a member reading English gets it, the others the French."""
    french = example_campaign()
    english = dataclasses.replace(
        french.rendered,
        lang="en",
        subject="Looking back on the 2nd Forum des Alliances",
        html=french.rendered.html.replace("Retour sur le 2e Forum des Alliances", "Looking back on the 2nd Forum"),
        text=french.rendered.text.replace("Retour sur le 2e Forum des Alliances", "Looking back on the 2nd Forum"),
        path="en/",
        other_version=("fr", ""),
    )
    return dataclasses.replace(french, translations={"en": Version(english)}, langs=("fr", "en"))
