"""The archive of an issue sent in two languages (issue 23), static and served, on SQLite and PostgreSQL: after one
send to a list in French and English, `newsletter archive` writes both versions' pages, each naming both in its
<head> (hreflang) and linking the other at its top by a link that opens from disk; `newsletter serve` answers the
English page with its subject, at the address the French page links; each language has its Atom feed, the feeds
naming each other, and the index links both versions."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from conftest import EXAMPLE_SLUG, REAL_BASE_URL
from test_bilingual_send import ENGLISH_SUBJECT, FRENCH_SUBJECT
from test_bilingual_send import bilingual as bilingual  # noqa: F401  (the fixtures: the list in two languages)
from test_bilingual_send import database_setting as database_setting  # noqa: F401
from test_send import SECRET, run, send_json
from web_server import serving

from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

ATOM = "{http://www.w3.org/2005/Atom}"
ARCHIVE = f"{REAL_BASE_URL}/archive"  # where the example's archive is published (serve's, from its base_url)


class Links(HTMLParser):
    """A page's hreflang links in <head>, its <a> links by their text, and its images' sources."""

    def __init__(self, html: str):
        super().__init__()
        self.alternates: dict[str, str] = {}
        self.anchors: list[tuple[str, str]] = []  # (href, text)
        self.images: list[str] = []
        self.in_head = False
        self.href: str | None = None
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "head":
            self.in_head = True
        elif tag == "link" and attributes.get("rel") == "alternate" and "hreflang" in attributes:
            assert self.in_head, "hreflang outside <head>"
            self.alternates[attributes["hreflang"]] = attributes["href"]
        elif tag == "a":
            self.href, self.text = attributes.get("href"), ""
        elif tag == "img":
            self.images.append(attributes.get("src") or "")

    def handle_endtag(self, tag):
        if tag == "head":
            self.in_head = False
        elif tag == "a" and self.href is not None:
            self.anchors.append((self.href, " ".join(self.text.split())))
            self.href = None

    def handle_data(self, data):
        if self.href is not None:
            self.text += data

    def link(self, label: str) -> str:
        return next(href for href, text in self.anchors if label in text)


def sent(bilingual: Path) -> None:  # noqa: F811
    result, summary = send_json("--no-dry-run", "--transport", "null://")
    assert result.exit_code == 0 and summary["sent"] == 3, result.output


def feed_of(data: bytes) -> ElementTree.Element:
    feed = ElementTree.fromstring(data)
    assert feed.tag == f"{ATOM}feed"
    return feed


def subjects(feed: ElementTree.Element) -> list[str | None]:
    return [entry.findtext(f"{ATOM}title") for entry in feed.findall(f"{ATOM}entry")]


def alternate_feeds(feed: ElementTree.Element) -> dict[str, str]:
    return {
        link.get("hreflang") or "": link.get("href") or ""
        for link in feed.findall(f"{ATOM}link")
        if link.get("rel") == "alternate" and link.get("type") == "application/atom+xml"
    }


def test_the_static_archive_writes_both_versions_linked_to_each_other(bilingual, tmp_path):  # noqa: F811
    sent(bilingual)
    out = tmp_path / "site"
    result = run("archive", "--out", str(out))
    assert result.exit_code == 0, result.output
    french_file, english_file = out / EXAMPLE_SLUG / "index.html", out / EXAMPLE_SLUG / "en" / "index.html"
    french, english = Links(french_file.read_text("utf-8")), Links(english_file.read_text("utf-8"))

    def target(page: Path, href: str) -> Path:
        assert not urlsplit(href).scheme, href  # relative: it opens from disk, and wherever the copy is put
        return (page.parent / href).resolve()

    for page, links in ((french_file, french), (english_file, english)):
        # Where the archive is published, as the view-online links are (the copy mirrors it).
        assert links.alternates == {"fr": f"{ARCHIVE}/{EXAMPLE_SLUG}/", "en": f"{ARCHIVE}/{EXAMPLE_SLUG}/en/"}
        assert links.images and all(target(page, src).is_file() for src in links.images if src)
    assert target(french_file, french.link("Read in English")) == english_file.resolve()
    assert target(english_file, english.link("Lire en français")) == french_file.resolve()
    assert ENGLISH_SUBJECT in english_file.read_text("utf-8") and "Unsubscribe" in english_file.read_text("utf-8")
    assert not (out / EXAMPLE_SLUG / "en" / "images").exists()  # the versions share the images/

    first, second = feed_of((out / "feed.xml").read_bytes()), feed_of((out / "feed.en.xml").read_bytes())
    assert subjects(first) == [FRENCH_SUBJECT] and subjects(second) == [ENGLISH_SUBJECT]
    assert first.get("{http://www.w3.org/XML/1998/namespace}lang") == "fr"
    assert second.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert alternate_feeds(first) == {"en": f"{ARCHIVE}/feed.en.xml"}
    assert alternate_feeds(second) == {"fr": f"{ARCHIVE}/feed.xml"}
    english_entry = second.find(f"{ATOM}entry")
    assert english_entry is not None
    english_link = english_entry.find(f"{ATOM}link")
    assert english_link is not None and english_link.get("href") == f"{ARCHIVE}/{EXAMPLE_SLUG}/en/"
    assert english_entry.findtext(f"{ATOM}id") != first.find(f"{ATOM}entry").findtext(f"{ATOM}id")  # type: ignore[union-attr]

    index = Links((out / "index.html").read_text("utf-8"))
    assert (out / index.link("Read in English")).resolve() == english_file.resolve()
    assert (out / index.link("Atom (en)")).resolve() == (out / "feed.en.xml").resolve()


def test_without_any_url_every_link_is_relative_to_a_file_of_the_copy(bilingual, tmp_path):  # noqa: F811
    sent(bilingual)
    config = bilingual / "newsletter.toml"
    config.write_text(config.read_text("utf-8").replace(f'base_url = "{REAL_BASE_URL}"', ""), "utf-8")
    out = tmp_path / "site"
    result = run("archive", "--out", str(out))
    assert result.exit_code == 0, result.output
    french_file, english_file = out / EXAMPLE_SLUG / "index.html", out / EXAMPLE_SLUG / "en" / "index.html"
    for page in (french_file, english_file):
        alternates = Links(page.read_text("utf-8")).alternates
        assert (page.parent / alternates["fr"]).resolve() == french_file.resolve()
        assert (page.parent / alternates["en"]).resolve() == english_file.resolve()
    first, second = feed_of((out / "feed.xml").read_bytes()), feed_of((out / "feed.en.xml").read_bytes())
    assert alternate_feeds(first) == {"en": "feed.en.xml"} and alternate_feeds(second) == {"fr": "feed.xml"}
    ids = [feed.findtext(f"{ATOM}id") for feed in (first, second)]
    assert all(str(i).startswith("urn:uuid:") for i in ids) and ids[0] != ids[1]
    english_link = second.find(f"{ATOM}entry/{ATOM}link")
    assert english_link is not None and (out / str(english_link.get("href"))).resolve() == english_file.resolve()


def test_serve_answers_the_english_page_where_the_french_one_links(bilingual):  # noqa: F811
    sent(bilingual)
    workspace = Workspace.discover(bilingual)
    store = open_store(workspace)
    try:
        with serving(create_app(workspace, store, TokenSigner(SECRET))) as base:
            archive = f"{base}/archive/{EXAMPLE_SLUG}/"
            english = httpx.get(f"{archive}en/")
            assert english.status_code == 200 and ENGLISH_SUBJECT in english.text
            assert "default-src 'none'" in english.headers["content-security-policy"]
            french = httpx.get(archive)
            assert french.status_code == 200
            assert Links(french.text).link("Read in English") == "en/"  # as the index links an issue on a server
            assert Links(english.text).link("Lire en français") == "../"
            linked = httpx.get(urljoin(archive, Links(french.text).link("Read in English")))
            assert linked.status_code == 200 and linked.text == english.text
            back = httpx.get(urljoin(f"{archive}en/", Links(english.text).link("Lire en français")))
            assert back.status_code == 200 and back.text == french.text
            for page, url in ((french.text, archive), (english.text, f"{archive}en/")):
                alternates = Links(page).alternates
                assert alternates == {"fr": f"{ARCHIVE}/{EXAMPLE_SLUG}/", "en": f"{ARCHIVE}/{EXAMPLE_SLUG}/en/"}
                for src in Links(page).images:
                    assert httpx.get(urljoin(url, src)).status_code == 200, src
            assert httpx.get(f"{archive}de/").status_code == 404  # no such version

            first = feed_of(httpx.get(f"{base}/archive/feed.xml").content)
            second = feed_of(httpx.get(f"{base}/archive/feed.en.xml").content)
            assert subjects(first) == [FRENCH_SUBJECT] and subjects(second) == [ENGLISH_SUBJECT]
            assert alternate_feeds(first) == {"en": f"{ARCHIVE}/feed.en.xml"}
            assert alternate_feeds(second) == {"fr": f"{ARCHIVE}/feed.xml"}
            assert httpx.get(f"{base}/archive/feed.de.xml").status_code == 404
            index = httpx.get(f"{base}/archive/").text
            assert httpx.get(urljoin(f"{base}/archive/", Links(index).link("Read in English"))).text == english.text
    finally:
        store.close()
