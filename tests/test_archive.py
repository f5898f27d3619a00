"""`newsletter archive`: the web archive as static files, opened from disk in Chromium; its Atom feed; archive_url."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import EXAMPLE_SLUG
from test_send import run
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)

from newsletter.preview import block_remote_requests

ATOM = "{http://www.w3.org/2005/Atom}"
WINTER = "2025-02-hiver"
WINTER_SUBJECT = "Bulletin d'hiver des Alliances"


def add_winter_issue(root: Path, slug: str = WINTER) -> Path:
    """A second issue: the example's sections under another slug, subject and date."""
    folder = root / "issues" / slug
    shutil.copytree(root / "issues" / EXAMPLE_SLUG, folder)
    text = (folder / "issue.yaml").read_text(encoding="utf-8")
    text = text.replace('subject: "Retour sur le 2e Forum des Alliances"', f'subject: "{WINTER_SUBJECT}"')
    (folder / "issue.yaml").write_text(text.replace("date: 2024-11-28", "date: 2025-02-14"), encoding="utf-8")
    return folder


def send(slug: str) -> None:
    result = run("send", slug, "--list", "alliances", "--no-dry-run", "--json")
    assert result.exit_code == 0, result.output


def archive(*args: str):
    """Run `newsletter archive --json ARGS`; the result and its JSON document."""
    result = run("archive", "--json", *args)
    assert result.exit_code == 0, result.output
    return result, json.loads(result.stdout)


def set_config(root: Path, old: str, new: str) -> None:
    text = (root / "newsletter.toml").read_text(encoding="utf-8")
    assert old in text
    (root / "newsletter.toml").write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def sent(workspace):  # noqa: F811
    """The example workspace with two issues sent (the example first, then the winter one)."""
    add_winter_issue(workspace)
    send(EXAMPLE_SLUG)
    send(WINTER)
    return workspace


def test_the_archive_opened_from_disk_links_every_sent_issue_with_its_images(sent, chromium_installed, tmp_path):
    out = tmp_path / "site"
    archive("--out", str(out))
    # Launched here, not by the module's `chromium` fixture: Playwright's loop would be running during the sends.
    from playwright.sync_api import sync_playwright

    from newsletter.preview import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            look_at_the_archive(browser, out)
        finally:
            browser.close()


def look_at_the_archive(browser, out: Path) -> None:
    page = browser.new_page()
    try:
        block_remote_requests(page)
        page.goto((out / "index.html").as_uri(), wait_until="load")
        assert page.evaluate("document.querySelector('link[rel=stylesheet]').sheet !== null")  # page.css found
        links = page.evaluate("Array.from(document.querySelectorAll('main li a')).map(a => [a.textContent, a.href])")
        assert [text for text, _ in links] == [WINTER_SUBJECT, "Retour sur le 2e Forum des Alliances"]  # newest first
        for (subject, href), slug in zip(links, [WINTER, EXAMPLE_SLUG], strict=True):
            assert href == (out / slug / "index.html").as_uri()
            page.goto((out / "index.html").as_uri(), wait_until="load")
            page.click(f"text={subject}")
            page.wait_for_load_state("load")
            assert page.url == href
            assert "Consulter les documents!" in page.content() and "%%" not in page.content()
            images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.getAttribute('src'),"
                " ok: i.complete && i.naturalWidth > 0}))"
            )
            assert len(images) == 4 and [i["src"] for i in images if not i["ok"]] == []
        page.goto((out / "index.html").as_uri(), wait_until="load")
        page.click("text=Atom")
        assert page.url == (out / "feed.xml").as_uri()
    finally:
        page.close()


def parse_feed(path: Path) -> ElementTree.Element:
    feed = ElementTree.fromstring(path.read_bytes())
    assert feed.tag == f"{ATOM}feed"
    # RFC 4287 4.1.1: exactly one id, title and updated; an author on the feed (then no entry needs its own).
    for required in ("id", "title", "updated"):
        assert len(feed.findall(f"{ATOM}{required}")) == 1, required
    author = feed.find(f"{ATOM}author/{ATOM}name")
    assert author is not None and author.text
    assert any(link.get("rel") == "alternate" for link in feed.findall(f"{ATOM}link"))
    for entry in feed.findall(f"{ATOM}entry"):
        for required in ("id", "title", "updated"):
            assert len(entry.findall(f"{ATOM}{required}")) == 1, required
        assert entry.find(f"{ATOM}link[@rel='alternate']") is not None
    for element in feed.iter():
        if element.tag in (f"{ATOM}id",):
            assert urlsplit(element.text).scheme in ("https", "urn"), element.text  # an absolute IRI
        if element.tag in (f"{ATOM}updated", f"{ATOM}published"):
            assert dt.datetime.fromisoformat(element.text or "").tzinfo is not None  # RFC 3339: with its offset
    ids = [e.text for e in feed.iter(f"{ATOM}id")]
    assert len(ids) == len(set(ids))
    return feed


def test_the_feed_is_atom_with_one_entry_per_issue_and_absolute_ids(sent, tmp_path):
    archive("--out", str(tmp_path / "site"))
    feed = parse_feed(tmp_path / "site" / "feed.xml")
    entries = feed.findall(f"{ATOM}entry")
    assert [e.find(f"{ATOM}title").text for e in entries] == [WINTER_SUBJECT, "Retour sur le 2e Forum des Alliances"]
    # base_url is set and archive_url is not: serve's archive is where the issues are read online.
    assert feed.find(f"{ATOM}id").text == "https://bulletin.crdbsl.org/archive/"
    assert entries[1].find(f"{ATOM}link").get("href") == f"https://bulletin.crdbsl.org/archive/{EXAMPLE_SLUG}/"
    assert feed.find(f"{ATOM}author/{ATOM}name").text.startswith("Collectif régional")


def test_without_any_url_the_feed_has_urn_ids_and_links_relative_to_itself(sent, tmp_path):
    set_config(sent, 'base_url = "https://bulletin.crdbsl.org"', "")
    archive("--out", str(tmp_path / "site"))
    feed = parse_feed(tmp_path / "site" / "feed.xml")
    ids = [e.text for e in feed.iter(f"{ATOM}id")]
    assert all(i.startswith("urn:uuid:") for i in ids) and len(ids) == 3
    for entry in feed.findall(f"{ATOM}entry"):
        assert (tmp_path / "site" / entry.find(f"{ATOM}link").get("href")).is_file()
    archive("--out", str(tmp_path / "again"))
    assert [e.text for e in parse_feed(tmp_path / "again" / "feed.xml").iter(f"{ATOM}id")] == ids  # stable


def test_archive_url_is_the_view_online_link_and_the_feeds_address(sent, tmp_path, monkeypatch):
    base_url = 'base_url = "https://bulletin.crdbsl.org"'
    set_config(sent, base_url, f'{base_url}\narchive_url = "https://crdbsl.org/bulletin/"')
    assert run("build", WINTER).exit_code == 0
    built = (sent / "build" / WINTER / "index.html").read_text(encoding="utf-8")
    assert f'href="https://crdbsl.org/bulletin/{WINTER}/"' in built and f'/archive/{WINTER}/"' not in built
    archive("--out", str(tmp_path / "site"))
    page = (tmp_path / "site" / WINTER / "index.html").read_text(encoding="utf-8")
    assert f'href="https://crdbsl.org/bulletin/{WINTER}/"' in page
    feed = parse_feed(tmp_path / "site" / "feed.xml")
    assert feed.find(f"{ATOM}link[@rel='self']").get("href") == "https://crdbsl.org/bulletin/feed.xml"
    assert feed.find(f"{ATOM}entry/{ATOM}id").text == f"https://crdbsl.org/bulletin/{WINTER}/"
    monkeypatch.setenv("NEWSLETTER_ARCHIVE_URL", "https://example.net/lettre")  # the environment overrides
    assert run("build", WINTER).exit_code == 0
    assert f'href="https://example.net/lettre/{WINTER}/"' in (sent / "build" / WINTER / "index.html").read_text()


def test_an_issue_named_is_published_before_it_is_sent_and_stays_after(workspace, tmp_path):  # noqa: F811
    add_winter_issue(workspace)
    send(EXAMPLE_SLUG)
    _, document = archive(WINTER)  # the default folder, build/archive
    assert document == {
        "out": str(workspace / "build" / "archive"),
        "issues": [WINTER, EXAMPLE_SLUG],
        "files": 2 * (4 + 1) + 3,
    }
    out = Path(document["out"])
    assert document["files"] == sum(1 for p in out.rglob("*") if p.is_file())
    assert not list(out.rglob("*.tmp"))
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f'href="{WINTER}/index.html"' in index and 'href="./assets/page.css"' in index
    # Not named again and not sent: out of the index and the feed, but its page is left for the links in flight.
    result = run("archive")
    assert result.exit_code == 0 and f"left in place, no longer in the archive: {WINTER}" in result.stdout
    assert WINTER not in (out / "index.html").read_text(encoding="utf-8")
    assert len(parse_feed(out / "feed.xml").findall(f"{ATOM}entry")) == 1
    assert (out / WINTER / "index.html").is_file()


def test_a_scheduled_issue_is_not_archived_unless_named(workspace, tmp_path):  # noqa: F811
    assert run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", "2099-01-01T09:00Z").exit_code == 0
    _, document = archive("--out", str(tmp_path / "site"))
    assert document["issues"] == [] and not (tmp_path / "site" / EXAMPLE_SLUG).exists()
    assert parse_feed(tmp_path / "site" / "feed.xml").findall(f"{ATOM}entry") == []


def test_a_missing_issue_fails_in_one_line_and_writes_nothing(sent, tmp_path):
    result = run("archive", "n-existe-pas", "--out", str(tmp_path / "site"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no issue 'n-existe-pas'") and result.stderr.count("\n") == 1
    assert not (tmp_path / "site").exists()


def test_an_issue_failing_its_check_fails_in_one_line_and_changes_nothing(sent, tmp_path):
    out = tmp_path / "site"
    archive("--out", str(out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = add_winter_issue(sent, "2025-03-casse")
    text = (broken / "issue.yaml").read_text(encoding="utf-8")
    text = text.replace("alt: Alliances pour la solidarité du Bas-Saint-Laurent", "alt: ''")  # the logo's
    (broken / "issue.yaml").write_text(text, encoding="utf-8")
    result = run("archive", "2025-03-casse", "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 2025-03-casse is not archived: ") and result.stderr.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_static_archive_writes_what_was_sent_and_nothing_from_outside_the_issue(sent, tmp_path):
    """An issue edited after its send to show the store's file as an image: the static copy is the page as sent,
    and no file from outside the issue's folder is copied into it."""
    (sent / "subscribers" / "secret.db").write_bytes(b"SQLite format 3\0 every subscriber")
    issue_file = sent / "issues" / WINTER / "issue.yaml"
    text = issue_file.read_text(encoding="utf-8").replace("Consulter les documents!", "Réécrit après l'envoi")
    issue_file.write_text(
        text + "  - type: image\n    src: ../../subscribers/secret.db\n    alt: x\n", encoding="utf-8"
    )
    out = tmp_path / "site"
    archive("--out", str(out))
    page = (out / WINTER / "index.html").read_text(encoding="utf-8")
    assert "Consulter les documents!" in page and "Réécrit" not in page
    copied = [p for p in out.rglob("*") if p.is_file()]
    assert not any(b"every subscriber" in p.read_bytes() for p in copied)
    assert sorted(p.name for p in (out / WINTER / "images").iterdir()) == sorted(
        p.name for p in (sent / "issues" / WINTER / "images").iterdir()
    )
