"""The web archive: which issues it holds, each one's web version and images, its index page and its Atom feed.

`newsletter serve` answers it under /archive/ (web/archive.py); `newsletter archive` writes the same pages as
static files (write_archive), all links relative, so the folder opens from disk and can be published under any
URL, e.g. at archive_url on the organisation's own website:

    index.html              the index (templates/pages/archive.html.j2), newest first
    feed.xml                Atom 1.0, one entry per issue (in the newsletter's language)
    feed.<lang>.xml         the same of the issues sent in another language too, in that language (feed.en.xml)
    <slug>/index.html       the web version (render.web_values), images relative
    <slug>/<lang>/index.html  its translation's, where its campaign sent one (content format 3): "en/"
    <slug>/images/<name>    the issue's images, which its versions share
    <slug>/event-<n>.ics    the calendar file of each event section, as its campaign sent it (a translation's
                            under <slug>/<lang>/)
    assets/page.css         the pages' stylesheet

The archive holds every issue a campaign started sending (Store.sent_issues), plus the issues named for it, so
that an issue's page can be published before its campaign goes and its view-online link works on arrival, and
the past issues brought from Mailchimp or Substack (archive/imported/, archive_import.py), among them by date.
A list's welcome email has its page too, as its latest version froze it, for its view-online link: listed in
neither the index nor the feed (welcome_entries).

An issue sent in two languages has a page per version, each linking to the other (%%other_version_url%%) and
naming both in its <head> (<link rel="alternate" hreflang>, added here: the page is the email's HTML as frozen);
the index links both, and each language has its feed, the feeds naming each other. An archive in one language is
written byte for byte as before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tempfile
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path

from newsletter.checks import check_issue
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.events import CALENDAR_NAME
from newsletter.i18n import format_date, translate
from newsletter.render import OTHER_VERSION_URL, RenderedIssue, image_file, published_url, web_values
from newsletter.sending.frozen import FrozenCampaign, NewerContentFormat
from newsletter.store import Store
from newsletter.workspace import Workspace

ATOM = "http://www.w3.org/2005/Atom"
log = logging.getLogger("newsletter.archive")


@dataclass(frozen=True)
class Entry:
    """One issue as the index and the feed list it."""

    slug: str
    subject: str
    updated: dt.datetime  # first sent; for an issue not sent yet, its date (or when issue.yaml last changed)
    sent: bool = True
    # The issue's other versions as sent, (lang, subject) each, their pages at <slug>/<lang>/; empty: one language.
    translations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WebVersion:
    """An issue's page in the archive: its web HTML and the images it shows (name under images/ -> file), each
    with the SHA-256 of the bytes its campaign sent when it has one (digests: None for an issue not sent yet), and
    its events' .ics files (event-3.ics -> text; as sent, none for an issue sent before campaigns froze them)."""

    entry: Entry
    html: str
    images: dict[str, Path]
    digests: dict[str, str] | None = None
    calendars: dict[str, str] = field(default_factory=dict)
    lang: str = ""  # its language, where it has translations ("": not needed, one language)
    path: str = ""  # its page's folder in the issue's: "" or a translation's "en/" (the images stay in images/)
    translations: tuple[WebVersion, ...] = ()  # the issue's other versions' pages, each with its path

    def image(self, name: str) -> bytes | None:
        """The bytes of the image the page names `name`, read once: None when the page shows no such image, or
        when the file is no longer what was sent (replaced since: the archive shows what readers got or nothing)."""
        file = self.images.get(name)
        if file is None or not file.is_file():
            return None
        data = file.read_bytes()
        if self.digests is not None and hashlib.sha256(data).hexdigest() != self.digests.get(name):
            log.warning("archive: %s/images/%s changed since it was sent; not shown", self.entry.slug, name)
            return None
        return data


def sent_entries(store: Store) -> list[Entry]:
    """Every issue a campaign started sending, newest first (not those only scheduled)."""
    return [Entry(slug, subject, at) for slug, subject, at in store.sent_issues()]


def welcome_entries(store: Store) -> list[Entry]:
    """The issues of the lists' welcome emails: each has its page, which no index nor feed lists."""
    return [Entry(slug, subject, at) for slug, subject, at in store.sent_issues(welcome=True)]


def archived_entries(workspace: Workspace, store: Store) -> list[Entry]:
    """The sent issues and those imported from another tool (archive_import.py), newest first; where both have a
    slug, the sent issue's."""
    from newsletter.archive_import import imported_entries

    sent = sent_entries(store)
    slugs = {entry.slug for entry in sent}
    imported = [entry for entry in imported_entries(workspace) if entry.slug not in slugs]
    return sorted([*sent, *imported], key=lambda entry: entry.updated, reverse=True)


def sent_version(
    workspace: Workspace,
    store: Store,
    entry: Entry,
    *,
    unsubscribe_url: str | None = None,
    welcome: bool = False,
    page: str = "index.html",
) -> WebVersion | None:
    """The page of an issue that was sent, as its latest campaign froze it (welcome: its latest welcome email): what
    readers got, whatever issue.yaml says today. A campaign begun before campaigns froze their images is shown from
    the issue as it is now, and only while its check passes. None when there is nothing to show (also when a newer
    version froze it). page ends the relative links between an issue's versions: "index.html" from disk, "" on a
    server (as index_issues's)."""
    found = store.sent_content(entry.slug, welcome=welcome)
    folder = workspace.issues_dir / entry.slug
    frozen = None
    if found is not None and found[1]:
        try:
            frozen = FrozenCampaign.from_json(found[1], campaign_id=found[0])
        except NewerContentFormat as exc:
            log.warning("archive: %s is not shown: %s", entry.slug, exc)
            return None
    if frozen is None or frozen.images is None:
        try:
            return web_version(workspace, folder, entry, unsubscribe_url=unsubscribe_url, strict=True)
        except NewsletterError as exc:
            log.warning("archive: %s is not shown: %s", entry.slug, exc)
            return None
    config = workspace.config
    images = {}
    for name in frozen.images:  # where the file was: images/<name>, or <name> when its src had no images/
        candidates = (image_file(folder, f"images/{name}"), image_file(folder, name))
        if (file := next((f for f in candidates if f is not None and f.is_file()), None)) is not None:
            images[name] = file
    paths = {frozen.lang: "", **{lang: version.path for lang, version in frozen.versions.items()}}
    first_other = next(iter(frozen.versions.values()), None)

    def filled_page(lang: str, html: str, path: str, other_path: str | None) -> str:
        """One version's page: its placeholders filled for the web, its images relative from its folder."""
        values = web_values(config, entry.slug, lang, path=path, other_path=other_path)
        if unsubscribe_url is not None:
            values["unsubscribe_url"] = unsubscribe_url
        if other_path is not None and frozen.versions:
            # Relative, not where the archive is published: the page's link opens the other from disk, from
            # serve and wherever the copy is put; its <head> names both where they are published (hreflang).
            values[OTHER_VERSION_URL] = relative_url(path, other_path, page)
        filled = RenderedIssue(frozen.slug, lang, "", "", html, "", {}).fill(values)[0]
        if frozen.images_url:  # the page and its images/ are published together: relative, as web_version's
            filled = filled.replace(f'"{frozen.images_url}', '"' + "../" * path.count("/") + "images/")
        if frozen.versions:
            filled = with_alternates(
                filled, {other: version_url(config, entry.slug, path, p, page) for other, p in paths.items()}
            )
        return filled

    def calendars_of(frozen_calendars: Mapping[str, str]) -> dict[str, str]:
        return {name: text for name, text in frozen_calendars.items() if CALENDAR_NAME.fullmatch(name)}

    translations = tuple(
        WebVersion(
            replace(entry, subject=version.subject),
            filled_page(lang, version.html, version.path, ""),
            images,
            dict(frozen.images),
            calendars_of(version.calendars),
            lang=lang,
            path=version.path,
        )
        for lang, version in frozen.versions.items()
    )
    html = filled_page(frozen.lang, frozen.html, "", first_other.path if first_other is not None else None)
    if not translations:  # one language: the page and its entry as they always were
        return WebVersion(entry, html, images, dict(frozen.images), calendars_of(frozen.calendars))
    entry = replace(entry, translations=tuple((t.lang, t.entry.subject) for t in translations))
    return WebVersion(
        entry, html, images, dict(frozen.images), calendars_of(frozen.calendars), frozen.lang, "", translations
    )


def version_url(config: Config, slug: str, path: str, other_path: str, page: str = "index.html") -> str:
    """Where the page of the issue's version at path names the version at other_path in its <head>: where the
    archive publishes it (render.published_url), else relative_url."""
    return published_url(config, slug, other_path) or relative_url(path, other_path, page)


def relative_url(path: str, other_path: str, page: str = "index.html") -> str:
    """The link from the page of the issue's version at path ("", "en/") to the version at other_path, ended by
    page: "../index.html", a file that opens from disk; "../" (page ""), what serve answers."""
    return ("../" * path.count("/") + f"{other_path}{page}") or "./"


def with_alternates(html: str, urls: Mapping[str, str]) -> str:
    """The page with a <link rel="alternate" hreflang> to each version (lang -> URL) at the end of its <head>."""
    links = "".join(
        f'<link rel="alternate" hreflang="{escape(lang)}" href="{escape(url)}">' for lang, url in urls.items()
    )
    at = html.lower().find("</head>")
    return html[:at] + links + html[at:] if at >= 0 else links + html


def web_version(
    workspace: Workspace,
    folder: Path,
    entry: Entry | None = None,
    *,
    unsubscribe_url: str | None = None,
    strict: bool = False,
) -> WebVersion | None:
    """Render the issue in folder as the archive shows it (images relative, under images/).

    Return None when it cannot be rendered; with strict, raise NewsletterError naming the issue instead, also
    when its check finds errors (an issue published before it is sent must pass the check `send` makes).
    """
    config = workspace.config
    if not (folder / "issue.yaml").is_file():
        if strict:
            raise NewsletterError(f"no issue '{folder.name}': {folder / 'issue.yaml'} does not exist")
        return None
    result = check_issue(folder, config, workspace.templates_dir, asset_base_url=None)
    if strict and (result.rendered is None or not result.report.ok):
        errors = result.report.errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0].format() if errors else "it does not render"
        raise NewsletterError(f"{folder.name} is not archived: {first}{more}; run `newsletter check {folder.name}`")
    if result.rendered is None or result.issue is None:
        return None
    rendered = result.rendered
    if entry is None:
        entry = Entry(rendered.slug, rendered.subject, _unsent_date(folder, result.issue.model.date, config), False)
    values = web_values(config, rendered.slug, rendered.lang)
    if unsubscribe_url is not None:
        values["unsubscribe_url"] = unsubscribe_url
    return WebVersion(entry, rendered.fill(values)[0], dict(rendered.images), calendars=dict(rendered.calendars))


def _unsent_date(folder: Path, date: dt.date | None, config: Config) -> dt.datetime:
    """The feed's date of an issue not sent yet: its publication date, else when its issue.yaml last changed."""
    if date is not None:  # midnight where the newsletter is written, so that the index shows that very date
        midnight = dt.datetime.combine(date, dt.time())
        return midnight.replace(tzinfo=config.zone) if config.zone else midnight.astimezone()
    return dt.datetime.fromtimestamp((folder / "issue.yaml").stat().st_mtime, dt.UTC).replace(microsecond=0)


def index_issues(entries: Sequence[Entry], config: Config, lang: str, *, page: str = "") -> list[dict]:
    """What archive.html.j2 lists: slug, subject, date (as a reader of lang writes it), href, and versions: the
    issue's other versions (lang, subject, label as "Read in English", href), empty for one language.

    href is relative to the index: "<slug>/" on a server, "<slug>/index.html" (page="index.html") from disk.
    """
    return [
        {
            "slug": entry.slug,
            "subject": entry.subject,
            "date": format_date(entry.updated.astimezone(config.zone).date(), lang),
            "href": f"{entry.slug}/{page}",
            "versions": [
                {
                    "lang": other,
                    "subject": subject,
                    "label": translate(other, "other_version"),
                    "href": f"{entry.slug}/{other}/{page}",
                }
                for other, subject in entry.translations
            ],
        }
        for entry in entries
    ]


def feed_languages(entries: Sequence[Entry]) -> list[str]:
    """The languages of the issues' other versions, each with its feed (feed.<lang>.xml), as they first come."""
    return list(dict.fromkeys(other for entry in entries for other, _ in entry.translations))


def feed_name(config: Config, lang: str) -> str:
    """The file of lang's feed beside the index: feed.xml for the newsletter's language, else feed.<lang>.xml."""
    return "feed.xml" if lang == config.lang else f"feed.{lang}.xml"


def index_feeds(config: Config, entries: Sequence[Entry]) -> list[dict[str, str]]:
    """The other languages' feeds the index links beside feed.xml (lang, href): none for one language."""
    return [{"lang": lang, "href": feed_name(config, lang)} for lang in feed_languages(entries)]


def public_url(config: Config) -> str | None:
    """Where readers find the archive: archive_url (the static copy), else serve's {base_url}/archive."""
    if config.archive_url:
        return config.archive_url
    return f"{config.base_url}/archive" if config.base_url else None


def feed_document(
    config: Config, entries: Sequence[Entry], url: str | None, *, page: str = "", lang: str | None = None
) -> bytes:
    """An Atom 1.0 feed (RFC 4287) of the entries, for the archive published at url (None: unknown).

    With a url, links and ids are absolute ({url}/{slug}/); without one, links are relative to the feed
    (which sits beside the index) and ids are urn:uuid IRIs derived from the publisher and the slug, so they
    stay the same from one run to the next. page is appended to every issue link ("index.html" from disk).

    lang (default: the newsletter's) other than the newsletter's: the feed of the entries sent in that language
    too, each with its subject and page there (feed_name). Where some issue has another version, each feed links
    the others (rel="alternate" hreflang) and the first language's entries their other versions' pages.
    """
    lang = lang or config.lang
    first = lang == config.lang
    others = [other for other in feed_languages(entries) if other != lang]
    if not first:
        others.insert(0, config.lang)
        entries = [
            replace(entry, subject=dict(entry.translations)[lang], translations=())
            for entry in entries
            if lang in dict(entry.translations)
        ]
    version = "" if first else f"{lang}/"
    # Atom's names unprefixed under its default namespace, attributes in none, as RFC 4287's examples are written.
    feed = ElementTree.Element("feed", {"xmlns": ATOM, "xml:lang": lang})

    def add(parent: ElementTree.Element, tag: str, text: str | None = None, **attributes: str):
        child = ElementTree.SubElement(parent, tag, attributes)
        child.text = text
        return child

    def link(slug: str | None, version: str = version) -> str:
        path = (f"{slug}/{version}" if slug else "") + page
        return f"{url}/{path}" if url else path or "./"

    def iri(slug: str | None) -> str:
        if not slug and not first:  # the feed's own: not the first language's feed's
            name = feed_name(config, lang)
            return f"{url}/{name}" if url else _urn(config, name)
        if url:
            return f"{url}/{slug}/{version}" if slug else f"{url}/"
        return _urn(config, f"{slug}/{version}" if slug and version else slug or "")

    def feed_link(name: str) -> str:
        return f"{url}/{name}" if url else name

    newest = max((entry.updated for entry in entries), default=None)
    add(feed, "title", config.name)
    add(feed, "id", iri(None))
    add(feed, "updated", _rfc3339(newest or dt.datetime.now(dt.UTC)))
    add(feed, "link", rel="alternate", type="text/html", href=link(None))
    if url:
        add(feed, "link", rel="self", type="application/atom+xml", href=feed_link(feed_name(config, lang)))
    for other in others:
        add(
            feed,
            "link",
            rel="alternate",
            type="application/atom+xml",
            hreflang=other,
            href=feed_link(feed_name(config, other)),
        )
    author = add(feed, "author")
    add(author, "name", config.publisher.name or config.name)
    if config.publisher.website:
        add(author, "uri", config.publisher.website)
    for entry in entries:
        item = add(feed, "entry")
        add(item, "title", entry.subject)
        add(item, "id", iri(entry.slug))
        add(item, "updated", _rfc3339(entry.updated))
        if entry.sent:
            add(item, "published", _rfc3339(entry.updated))
        add(item, "link", rel="alternate", type="text/html", href=link(entry.slug))
        for other, _ in entry.translations:
            add(item, "link", rel="alternate", type="text/html", hreflang=other, href=link(entry.slug, f"{other}/"))
    return ElementTree.tostring(feed, encoding="utf-8", xml_declaration=True)


def _urn(config: Config, name: str) -> str:
    """A feed's or an entry's id without a URL: a urn:uuid IRI from the publisher and the name, the same each run."""
    who = config.publisher.website or config.publisher.email or config.name
    return uuid.uuid5(uuid.NAMESPACE_URL, f"newsletter-archive:{who}/{name}").urn


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class ArchiveResult:
    out: Path
    issues: list[str]  # slugs, in the index's order
    files: int  # files written
    skipped: list[str] = field(default_factory=list)  # sent issues whose folder is gone or no longer renders
    left: list[str] = field(default_factory=list)  # pages in out of issues no longer in the archive, left in place

    def to_json(self) -> dict:
        return {"out": str(self.out), "issues": self.issues, "files": self.files}


def write_archive(workspace: Workspace, store: Store, named: Sequence[Path], out: Path | None = None) -> ArchiveResult:
    """Write the archive as static files to out (default build/archive): the sent issues and those named.

    Everything is rendered before anything is written, so a named issue that is missing or fails its check
    writes nothing. Each file is written under a temporary name and renamed: an interrupted run leaves every
    file whole, and two runs at once do not mix their files. Pages of issues that left the archive are not
    deleted (a page published before its send must keep working); they are reported in `left`.
    """
    config = workspace.config
    out = out or workspace.build_dir / "archive"
    named_versions = {folder.name: web_version(workspace, folder, strict=True) for folder in named}
    sent = sent_entries(store)
    sent_slugs = {entry.slug for entry in sent}
    versions = [v for slug, v in named_versions.items() if v is not None and slug not in sent_slugs]
    versions.sort(key=lambda v: v.entry.updated, reverse=True)  # not sent yet: the next to go, on top
    skipped = []
    published: list[WebVersion] = []
    for entry in sent:
        if (version := named_versions.get(entry.slug)) is not None:
            version = replace(version, entry=entry)
        else:
            version = sent_version(workspace, store, entry)
        if version is None:
            skipped.append(entry.slug)
        else:
            published.append(version)
    from newsletter.archive_import import imported_entries, imported_version

    for entry in imported_entries(workspace):  # among the sent ones, by date; a sent or named issue's slug wins
        taken = entry.slug in sent_slugs or entry.slug in named_versions
        if not taken and (version := imported_version(workspace, entry.slug)) is not None:
            published.append(version)
    published.sort(key=lambda v: v.entry.updated, reverse=True)
    versions += published
    entries = [v.entry for v in versions]
    listed = {entry.slug for entry in entries}
    for entry in welcome_entries(store):  # a page for the welcome's view-online link, in no index nor feed
        if entry.slug not in listed and (version := sent_version(workspace, store, entry, welcome=True)) is not None:
            versions.append(version)

    from newsletter.pages import Pages  # the pages' templates, with the workspace's overrides

    pages = Pages(config, workspace.templates_dir)
    issues = index_issues(entries, config, config.lang, page="index.html")
    index = pages.text("archive.html.j2", config.lang, root=".", issues=issues, feeds=index_feeds(config, entries))
    page = "" if public_url(config) else "index.html"
    feeds = {
        feed_name(config, lang): feed_document(config, entries, public_url(config), page=page, lang=lang)
        for lang in dict.fromkeys([config.lang, *feed_languages(entries)])  # an issue whose other version is the first
    }

    written = 0
    for version in versions:
        folder = out / version.entry.slug
        for name in version.images:
            data = version.image(name)  # confined to the issue's folder by render.image_file, and what was sent
            if data is None:
                continue  # what serve answers too (404)
            _write(folder / "images" / name, data)
            written += 1
        for each in (*version.translations, version):  # the first language's page last: it links the others
            for name, calendar in each.calendars.items():  # names made by events.calendar_name only
                _write(folder / each.path / name, calendar.encode("utf-8"))
                written += 1
            _write(folder / each.path / "index.html", each.html.encode("utf-8"))
            written += 1
    # The index and the feeds last: they never link to a page not yet written.
    _write(out / "assets" / "page.css", pages.css.encode("utf-8"))
    for name, feed in feeds.items():
        _write(out / name, feed)
    _write(out / "index.html", index.encode("utf-8"))
    written += 2 + len(feeds)
    # Only folders named for an issue of this workspace: out may be a folder of a bigger site.
    archived = {version.entry.slug for version in versions}
    left = sorted(
        page.parent.name
        for page in out.glob("*/index.html")
        if page.parent.name not in archived and (workspace.issues_dir / page.parent.name).is_dir()
    )
    return ArchiveResult(out, [entry.slug for entry in entries], written, skipped, left)


def _write(path: Path, data: bytes) -> None:
    _replace(path, lambda stream: stream.write(data))


def _replace(path: Path, fill) -> None:
    """Write path through a temporary file of its own beside it, renamed over it once whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            fill(tmp)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o644)  # mkstemp's 0600 would hide the page from the web server that publishes it
    os.replace(tmp.name, path)
