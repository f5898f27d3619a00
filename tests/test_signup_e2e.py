"""End to end in Chromium, keyboard only, as a person joins: the form, the confirmation email, its link, the
button; then the preferences page leaves another list. Against `serve` on uvicorn and a real SMTP server."""

from __future__ import annotations

import re

from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET
from test_send import workspace as workspace  # noqa: F401  (the fixture)
from test_signup import OPEN, status, wait_for_mail
from web_server import serving

from newsletter.sending.wiring import open_store
from newsletter.subscribers import add
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace


def focused(page) -> str:
    return page.evaluate("document.activeElement.name || document.activeElement.textContent")


def test_join_by_keyboard_confirm_then_leave_another_list(workspace, chromium_installed, monkeypatch):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from newsletter.preview import block_remote_requests, launch_chromium

    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN)
    with RunningSmtp(SmtpSink()) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(workspace)
        store = open_store(ws)
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base, sync_playwright() as playwright:
            ws.config.base_url = base
            browser = launch_chromium(playwright)
            page = browser.new_page()
            block_remote_requests(page)

            # The form, with the keyboard only: the labels name the fields, the honeypot is never reached.
            page.goto(f"{base}/subscribe/alliances")
            assert page.get_by_label("Adresse courriel").is_visible()
            trap = page.locator("input[name=website]").bounding_box()
            assert trap["x"] + trap["width"] <= 0  # off screen: people never see the honeypot
            page.keyboard.press("Tab")
            assert focused(page) == "email"
            page.keyboard.type("lea@example.org")
            page.keyboard.press("Tab")
            assert focused(page) == "name"
            page.keyboard.type("Léa Ouellet")
            page.keyboard.press("Tab")
            assert focused(page) == "M'abonner"
            page.keyboard.press("Enter")
            page.wait_for_selector("text=un courriel de confirmation")
            assert status(store, "lea@example.org") == "pending"

            # The confirmation email, its link, the button.
            wait_for_mail(mail.sink, 1)
            text = mail.sink.received[0].message.get_body(("plain",)).get_content()
            link = re.search(r"https?://\S+/confirm/\S+", text).group(0)
            page.goto(link)
            assert status(store, "lea@example.org") == "pending"  # opening the link is not confirming
            page.keyboard.press("Tab")
            assert focused(page) == "Confirmer"
            page.keyboard.press("Enter")
            page.wait_for_selector("text=C'est confirmé")
            assert status(store, "lea@example.org") == "subscribed"

            # The preferences page of her unsubscribe link: she leaves another list she is on.
            add(store, "evenements", "lea@example.org", None, list_name="Les événements")
            lea = next(
                m.subscriber_id for m in store.members(store.list_id("alliances")) if m.email == "lea@example.org"
            )
            page.goto(f"{base}/u/{TokenSigner(SECRET).sign(lea, 'alliances')}")
            row = page.locator("ul.lists li", has_text="Les événements")
            row.get_by_role("button", name="Me désabonner").focus()
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert "Les événements — désabonné·e" in page.content()
            browser.close()
        statuses = {found.slug: state for found, state in store.memberships_of(lea)}
        store.close()
    assert statuses == {"alliances": "subscribed", "evenements": "unsubscribed"}
