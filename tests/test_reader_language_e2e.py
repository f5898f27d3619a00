"""A reader's language in Chromium at a phone's width (375 px), against `serve` on uvicorn and a real SMTP server:
a member switches to English on the preferences page of her unsubscribe link, with the keyboard; a person joins a
bilingual list choosing English on the French form, and everything after it speaks English."""

from __future__ import annotations

import re

import pytest
from test_reader_language_web import BILINGUAL
from test_send import SECRET
from test_send import workspace as workspace  # noqa: F401  (the fixture)
from test_signup import serving_with_mail, status, wait_for_mail

from newsletter.tokens import TokenSigner

PHONE = {"width": 375, "height": 740}


@pytest.fixture
def served(workspace, monkeypatch):  # noqa: F811
    with serving_with_mail(workspace, monkeypatch, BILINGUAL) as site:
        yield site


@pytest.fixture
def phone(chromium_installed):
    from playwright.sync_api import sync_playwright

    from newsletter.preview import block_remote_requests, launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=PHONE)
        block_remote_requests(page)
        yield page
        browser.close()


def fits(page, locator) -> None:
    """On screen at this width, and its text within it: neither cut nor spilling out."""
    box = locator.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    spill = locator.evaluate("b => [b.scrollWidth - b.clientWidth, document.documentElement.scrollWidth]")
    assert spill[0] <= 0 and spill[1] <= PHONE["width"]  # the button holds its text; the page scrolls not sideways


def tab_to(page, name: str, most: int = 20) -> None:
    """Press Tab until the button named `name` has the focus (the keyboard reaches it)."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == name:
            return
    raise AssertionError(f"the keyboard never reached {name!r}")


def test_the_preferences_page_switches_to_english_at_375_px(served, phone):
    base, store, sink = served
    marie = store.find_subscriber("marie@example.org")
    phone.goto(f"{base}/u/{TokenSigner(SECRET).sign(marie, 'alliances')}")
    assert phone.locator("html").get_attribute("lang") == "fr"
    switch = phone.get_by_role("button", name="Receive it in English")
    assert switch.is_visible() and switch.get_attribute("lang") == "en"
    fits(phone, switch)
    tab_to(phone, "Receive it in English")
    with phone.expect_navigation():
        phone.keyboard.press("Enter")
    assert phone.locator("html").get_attribute("lang") == "en"
    assert phone.get_by_role("status").inner_text() == "Done: you will receive it in English from now on."
    assert phone.get_by_role("heading", name="Unsubscribe").is_visible()
    back = phone.get_by_role("button", name="Le recevoir en français")
    assert back.get_attribute("lang") == "fr"
    fits(phone, back)
    fits(phone, phone.get_by_role("button", name="Unsubscribe me"))
    assert store.person("marie@example.org")["lang"] == "en"
    assert status(store, "marie@example.org") == "subscribed"


def test_joining_in_english_from_the_french_form_at_375_px(served, phone):
    base, store, sink = served
    phone.goto(f"{base}/subscribe/alliances")
    group = phone.get_by_role("group", name="Langue / Language")
    assert group.is_visible()
    french, english = group.get_by_label("Français"), group.get_by_label("English")
    assert french.is_checked() and not english.is_checked()  # the page's language, first and chosen
    fits(phone, group)
    phone.get_by_label("Adresse courriel").fill("ann@example.org")
    english.check()  # by its label, as a person taps it
    assert english.is_checked() and not french.is_checked()
    phone.get_by_role("button", name="M'abonner").click()
    phone.wait_for_selector("text=Thank you!")
    assert phone.locator("html").get_attribute("lang") == "en"

    wait_for_mail(sink, 1)
    message = sink.received[0].message
    assert message["Subject"] == "Confirm your subscription to The Alliances Newsletter"
    link = re.search(r"https?://\S+/confirm/\S+", message.get_body(("plain",)).get_content()).group(0)
    phone.goto(link)
    assert phone.locator("html").get_attribute("lang") == "en"
    phone.get_by_role("button", name="Confirm").click()
    phone.wait_for_selector("text=Confirmed:")
    assert status(store, "ann@example.org") == "subscribed" and store.person("ann@example.org")["lang"] == "en"
