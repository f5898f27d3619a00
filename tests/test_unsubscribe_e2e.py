"""End to end, as a subscriber lives it: an email arrives, they click unsubscribe in Chromium, and hear no more."""

from __future__ import annotations

import re

import httpx
from conftest import EXAMPLE_SLUG
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET, send_json
from test_send import workspace as workspace  # noqa: F401  (the fixture)
from web_server import serving

from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace


def footer_link(message) -> str:
    html = message.get_body(("html",)).get_content()
    return re.search(r'<a href="([^"]+)"[^>]*>Se désabonner</a>', html).group(1)


def test_click_the_footer_link_in_chromium_then_receive_nothing(workspace, chromium_installed, monkeypatch):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from newsletter.preview import block_remote_requests, launch_chromium

    ws = Workspace.discover(workspace)
    store = open_store(ws)
    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        monkeypatch.setenv("NEWSLETTER_BASE_URL", base)
        with RunningSmtp(SmtpSink()) as server:
            result, document = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0 and document["sent"] == 4
        received = {r.recipients[0]: r.message for r in server.sink.received}

        # Françoise clicks the link in the footer, sees the page, and confirms.
        link = footer_link(received["francoise@example.org"])
        assert link.startswith(f"{base}/u/")
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page()
            block_remote_requests(page)
            page.goto(link)
            assert "F•••@example.org" in page.content() or "f•••@example.org" in page.content()
            page.get_by_role("button", name="Me désabonner").click()
            page.wait_for_selector("text=C'est fait")
            browser.close()

        # Zoé's mail client uses the List-Unsubscribe header: one click, as Gmail posts it.
        header = received["zoe@example.org"]["List-Unsubscribe"]
        one_click = re.match(r"<(https?://[^>]+)>", header).group(1)
        response = httpx.post(
            one_click,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200

        statuses = {m.email: m.status for m in store.members(store.list_id("alliances"))}
        assert statuses["francoise@example.org"] == "unsubscribed" and statuses["zoe@example.org"] == "unsubscribed"
        sources = [e["source"] for e in store.history(_id(store, "francoise@example.org"))]
        assert sources[-1] == "page"

        # The next campaign (a corrected issue) reaches the others only.
        issue = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
        issue.write_text(issue.read_text().replace("Prochaines étapes", "Les prochaines étapes"))
        with RunningSmtp(SmtpSink()) as server:
            result, document = send_json("--no-dry-run", "--new-campaign", "--transport", server.dsn())
        assert result.exit_code == 0 and document["sent"] == 2
        assert set(server.sink.per_recipient()) == {"marie@example.org", "jean@example.org"}
    store.close()


def _id(store, email):
    return {m.email: m.subscriber_id for m in store.members(store.list_id("alliances"))}[email]
