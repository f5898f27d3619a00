"""`newsletter archive-import`: the past issues of a Mailchimp or Substack export brought into the web archive.

Where they live: archive/imported/<slug>/ in the workspace, one folder per issue, holding its page (index.html,
the HTML as it was sent, stripped of what tracked or addressed its readers) and meta.json (subject, date, source and
the id the other tool gave it). It is a folder of the user's: it can be looked at, committed, backed up, and an
issue taken out of the archive by deleting its folder (an import of the same export brings it back). `newsletter
archive` and serve's /archive/ list these issues among the sent ones, by date (archive.archived_entries); a sent
issue of the same slug wins.

What is read (tests/fixtures/archive-exports/README.md says where each layout is documented):
- Mailchimp's account export: campaigns.csv and campaigns_content/, an .html file per campaign. Its columns are
  matched by name, as several tools spell them (Unique Id or Campaign ID, Title, Subject, Send Date, Status), and a
  campaign's HTML is the .html file with its id in its path. Only sent campaigns come (status `sent`, or a send
  date where there is no status column).
- Substack's export: posts.csv (post_id, post_date, is_published, email_sent_at, type, title, subtitle, …) and
  posts/<post_id>.html, the post's body. Only published newsletters come (is_published true, type newsletter).
The others are counted as left out, each with why. The export is a folder or a .zip, read where it is: nothing is
extracted, no name from it ever becomes a path here (slugs are made from the date and the subject), a file of a
folder export is read only if it lies inside it (symlinks resolved), and a zip with a member named with `..` or an
absolute path is refused whole. An import run again writes nothing and reports every issue unchanged.

Stripping (clean_html, on the standard library's html.parser; the page is written again from the parsed tokens,
every text and attribute escaped, so what a browser parses is what was checked): scripts, iframes, objects, forms
and their controls, SVG and MathML, comments (Outlook's conditional ones too), event-handler attributes,
`javascript:` and every URL scheme but http(s), mailto and tel, CSS with expression() or bindings, <base> and
<meta http-equiv>; tracking pixels (Mailchimp's list-manage.com/track/open.php, any 1×1 image); the old
unsubscribe, preferences, "update profile" and forward links (Mailchimp's list-manage.com pages and *|UNSUB|*-style
merge tags, Substack's /action/ links, any URL naming unsubscribe): the link's text stays, its href goes. A click
redirect is unwrapped to its target when it carries it (list-manage.com/track/click?…&url=…, a Substack
/redirect/ whose token holds the URL); a Substack redirect that does not is kept, without the `j` parameter that
names the reader, as are links without Mailchimp's mc_eid and mc_cid. Merge tags left in the text are dropped, but
*|MC:SUBJECT|* becomes the subject and *|CURRENT_YEAR|* the year it was sent.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
import logging
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import SplitResult, parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from newsletter.archive import Entry, WebVersion, _write
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.slugs import slugify
from newsletter.workspace import SLUG_MAX, Workspace, is_slug

log = logging.getLogger("newsletter.archive")

Source = Literal["mailchimp", "substack"]
META_FORMAT = 1
MAX_FILE_BYTES = 25 * 1024 * 1024  # one campaign's HTML, or a CSV; past it a file is left out (a zip bomb)


def imported_dir(workspace: Workspace) -> Path:
    """archive/imported/ in the workspace: one folder per imported issue (index.html and meta.json)."""
    return workspace.root / "archive" / "imported"


# Reading the archive: what archive.py lists and serve shows.


def imported_entries(workspace: Workspace) -> list[Entry]:
    """Every imported issue whose folder holds its page and a readable meta.json, newest first."""
    entries = []
    folder = imported_dir(workspace)
    for slug in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if (entry := _entry(folder, slug)) is not None:
            entries.append(entry)
    return sorted(entries, key=lambda entry: entry.updated, reverse=True)


def imported_version(workspace: Workspace, slug: str) -> WebVersion | None:
    """The page of the imported issue slug, as archive/imported/<slug>/index.html holds it; None if there is none."""
    folder = imported_dir(workspace)
    entry = _entry(folder, slug)
    if entry is None:
        return None
    try:
        html = (folder / slug / "index.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("archive: imported %s is not shown: %s", slug, exc)
        return None
    return WebVersion(entry, html, {})


def _entry(folder: Path, slug: str) -> Entry | None:
    if not is_slug(slug):  # a slug only (it may come from a URL), never a path
        return None
    issue = folder / slug
    try:  # the user's own folder, but a link in it to elsewhere is not followed
        inside = issue.resolve().is_relative_to(folder.resolve())
    except OSError:
        return None
    if not inside or not (issue / "index.html").is_file() or not (issue / "meta.json").is_file():
        return None
    try:
        meta = json.loads((issue / "meta.json").read_text(encoding="utf-8"))
        date = dt.datetime.fromisoformat(meta["date"])
        subject = meta["subject"]
        if date.tzinfo is None or not isinstance(subject, str):
            raise ValueError("date without an offset, or no subject")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("archive: imported %s is not shown: its meta.json is unreadable (%s)", slug, exc)
        return None
    return Entry(slug, subject, date)


# The export: a folder or a zip, read in place.


class ExportFiles:
    """The files of an export by their names inside it (posix, relative); read only within it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: dict[str, Path | zipfile.ZipInfo] = {}
        self.outside: set[str] = set()  # a folder's files that are links to elsewhere: never read
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self._list_folder(path)
        elif path.is_file():
            self._open_zip(path)
        else:
            raise NewsletterError(f"{path}: no such export; give Mailchimp's or Substack's .zip or its folder")

    def _list_folder(self, root: Path) -> None:
        top = root.resolve()
        for folder, subfolders, files in os.walk(top):  # links to folders are not followed
            subfolders.sort()
            for name in sorted(files):
                file = Path(folder) / name
                relative = file.relative_to(top).as_posix()
                if file.resolve().is_relative_to(top) and file.resolve().is_file():
                    self.names[relative] = file
                else:
                    self.outside.add(relative)

    def _open_zip(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise NewsletterError(f"{path}: not a zip file nor a folder ({exc})") from None
        for info in self._zip.infolist():
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
                self._zip.close()
                raise NewsletterError(
                    f"{path}: the member {name!r} names a place outside the export; refused, nothing imported"
                )
            if not info.is_dir():
                self.names[PurePosixPath(*parts).as_posix()] = info

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str) -> bytes | None:
        """The bytes of the file name lists; None past MAX_FILE_BYTES."""
        found = self.names[name]
        if isinstance(found, Path):
            with found.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        else:
            assert self._zip is not None
            try:
                with self._zip.open(found) as stream:
                    data = stream.read(MAX_FILE_BYTES + 1)  # the size the header states may lie
            except (RuntimeError, zipfile.BadZipFile, ValueError) as exc:  # encrypted, corrupt
                raise NewsletterError(f"{self.path}: {name} cannot be read ({exc})") from None
        return None if len(data) > MAX_FILE_BYTES else data

    def find(self, file_name: str) -> str | None:
        """The shallowest file of that name (Mailchimp's zip may hold one folder around everything)."""
        found = [name for name in self.names if PurePosixPath(name).name == file_name]
        return min(found, key=lambda name: (name.count("/"), name)) if found else None


# The campaigns each source lists.


@dataclass
class Campaign:
    """One past issue as its export lists it; why it is left out, or the name of its HTML inside the export."""

    source: Source
    id: str
    subject: str
    date: dt.datetime | None
    html_name: str | None = None
    subtitle: str = ""
    why_left_out: str | None = None


def _rows(files: ExportFiles, name: str) -> list[dict[str, str]]:
    """The CSV's rows, keyed by header names lowercased with only their letters and digits (Send Date: senddate)."""
    data = files.read(name)
    if data is None:
        raise NewsletterError(f"{files.path}: {name} is larger than {MAX_FILE_BYTES // 2**20} MB; not read")
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    keys = [re.sub(r"[^a-z0-9]", "", column.lower()) for column in header]
    return [{key: value.strip() for key, value in zip(keys, row, strict=False)} for row in reader if any(row)]


def _first(row: dict[str, str], *keys: str) -> str:
    return next((row[key] for key in keys if row.get(key)), "")


def read_mailchimp(files: ExportFiles, csv_name: str, config: Config) -> list[Campaign]:
    rows = _rows(files, csv_name)
    html_files = [name for name in [*files.names, *files.outside] if name.lower().endswith((".html", ".htm"))]
    campaigns = []
    for row in rows:
        campaign_id = _first(row, "uniqueid", "campaignid", "id", "webid")
        subject = _first(row, "subject", "subjectline", "emailsubject") or _first(row, "title", "campaignname")
        raw_date = _first(row, "senddate", "sendtime", "sentdate", "datesent", "sent")
        date = _parse_date(raw_date, config) if raw_date else None
        campaign = Campaign("mailchimp", campaign_id, subject, date)
        campaigns.append(campaign)
        status = row.get("status")
        if not campaign_id:
            campaign.why_left_out = "no campaign id"
        elif status is not None and status.lower() != "sent":
            campaign.why_left_out = f"not sent (status {status or 'empty'})"
        elif not raw_date:
            campaign.why_left_out = "not sent (no send date)"
        elif date is None:
            campaign.why_left_out = f"unreadable send date {raw_date!r}"
        else:
            campaign.html_name = _mailchimp_html(html_files, campaign_id)
    return campaigns


def _mailchimp_html(html_files: list[str], campaign_id: str) -> str | None:
    """The .html file with the campaign's id in its path (its name, or its folder's), the shallowest first."""
    token = campaign_id.lower()
    found = [name for name in html_files if token in re.split(r"[^a-z0-9]+", name.lower())]
    found.sort(key=lambda name: (PurePosixPath(name).stem.lower() != token, name.count("/"), name))
    return found[0] if found else None


def read_substack(files: ExportFiles, csv_name: str, config: Config) -> list[Campaign]:
    base = csv_name[: -len("posts.csv")]  # posts/ beside posts.csv
    campaigns = []
    for row in _rows(files, csv_name):
        post_id = row.get("postid", "")
        raw_date = _first(row, "emailsentat", "postdate")
        date = _parse_date(raw_date, config) if raw_date else None
        campaign = Campaign("substack", post_id, row.get("title", ""), date, subtitle=row.get("subtitle", ""))
        campaigns.append(campaign)
        kind = row.get("type", "newsletter").lower() or "newsletter"
        if not post_id:
            campaign.why_left_out = "no post_id"
        elif row.get("ispublished", "").lower() not in ("true", "t", "1", "yes"):
            campaign.why_left_out = "not published (a draft)"
        elif kind != "newsletter":
            campaign.why_left_out = f"not a newsletter (type {kind})"
        elif not raw_date:
            campaign.why_left_out = "no date"
        elif date is None:
            campaign.why_left_out = f"unreadable date {raw_date!r}"
        else:  # looked up among the export's own names: a post_id holding ../ finds nothing
            name = f"{base}posts/{post_id}.html"
            campaign.html_name = name if name in files.names or name in files.outside else None
    return campaigns


_DATE_FORMATS = (
    "%b %d, %Y %I:%M %p",  # Nov 28, 2024 09:00 am, as Mailchimp's reports write dates
    "%B %d, %Y %I:%M %p",
    "%b %d, %Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%b %d, %Y",
    "%m/%d/%Y",
)


def _parse_date(text: str, config: Config) -> dt.datetime | None:
    """An export's date: ISO 8601 (Substack's), or one of the ways Mailchimp writes them; a date without an offset
    is taken in the newsletter's time zone (the machine's when newsletter.toml sets none)."""
    text = re.sub(r"\s+", " ", text.strip())
    moment = None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        for form in _DATE_FORMATS:
            try:
                moment = dt.datetime.strptime(text, form)
                break
            except ValueError:
                continue
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=config.zone) if config.zone else moment.astimezone()
    return moment.replace(microsecond=0)


def _decode(data: bytes) -> str:
    """UTF-8 (with or without its BOM), else the charset the page declares, else Windows-1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = re.search(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", data[:2048])
    if declared:
        try:
            return data.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return data.decode("cp1252", errors="replace")


# Stripping the HTML.

# Dropped with everything inside them: what runs, embeds, submits, or is parsed by browsers unlike html.parser.
_DROPPED_WITH_CONTENT = frozenset(
    "script iframe frame frameset object embed applet noscript noembed noframes template svg math xmp plaintext "
    "button select textarea canvas portal param".split()
)
_DROPPED_TAG = frozenset("form input base isindex keygen bgsound".split())  # the tag goes, its content stays
_VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
_TAG_NAME = re.compile(r"[a-z][a-z0-9-]*(:[a-z][a-z0-9-]*)?")
_ATTRIBUTE_NAME = re.compile(r"[a-z_][a-z0-9_.:-]*")
_LINK_ATTRIBUTES = frozenset({"href", "cite", "longdesc", "xlink:href"})
_IMAGE_ATTRIBUTES = frozenset({"src", "background", "poster", "lowsrc", "dynsrc"})
_URL_ATTRIBUTES = _LINK_ATTRIBUTES | _IMAGE_ATTRIBUTES | {"srcset"}
_DROPPED_ATTRIBUTES = frozenset({"srcdoc", "formaction", "action", "ping", "manifest", "profile", "codebase"})
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_IMAGE_DATA = re.compile(r"data:image/(png|gif|jpe?g|webp)[;,]", re.IGNORECASE)
_MERGE_TAG = re.compile(r"\*\|([^|*]{1,80})\|\*")
_ENCODED_MERGE_TAG = re.compile(r"(\*|%2a)(\||%7c)", re.IGNORECASE)
_MAILCHIMP_HOST = re.compile(r"(^|\.)list-manage\d*\.com$")
_FORWARD_HOST = re.compile(r"(^|\.)forward-to-friend\d*\.com$")
_SUBSTACK_HOST = re.compile(r"(^|\.)substack\.com$")
_GONE_PATH = re.compile(r"unsubscribe|opt-?out", re.IGNORECASE)
_READER_PARAMETERS = frozenset({"mc_eid", "mc_cid"})  # Mailchimp's: the reader's id and the campaign's
_DANGEROUS_CSS = re.compile(r"expression\(|javascript:|vbscript:|-moz-binding|behavior:|list-manage", re.IGNORECASE)
_DOCTYPE = re.compile(r"doctype[\w\s\"'./:+-]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def _gone(url: str) -> bool:
    """Whether a URL holds a merge tag (*|UNSUB|*, or it percent-encoded): a per-reader link of the old tool."""
    return bool(_MERGE_TAG.search(url) or _ENCODED_MERGE_TAG.search(url) or "*|" in unquote(url))


def _normalized(url: str) -> str:
    """A URL as a browser reads it: no leading or trailing spaces or controls, no tab or line break inside."""
    return re.sub(r"[\t\n\r]", "", url).strip("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f \x7f")


def _scheme(url: str) -> str | None:
    found = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):", _CONTROL.sub("", url))
    return found.group(1).lower() if found else None


def clean_link(url: str, depth: int = 0) -> str | None:
    """The URL a link of an imported issue keeps, unwrapped from a click redirect where it can be; None when the
    link is to go (unsubscribe and preferences pages, a redirect whose target is unknown to us, javascript:)."""
    url = _normalized(url)
    if _gone(url) or depth > 4:
        return None
    scheme = _scheme(url)
    if scheme is not None and scheme not in _SAFE_SCHEMES:
        return None
    if scheme in ("mailto", "tel"):
        return url
    try:
        parts = urlsplit(url if scheme or not url.startswith("//") else f"https:{url}")
        host = (parts.hostname or "").lower()
    except ValueError:  # a malformed host: nowhere a reader can go
        return None
    if _MAILCHIMP_HOST.search(host):  # its click redirects, unsubscribe, profile, vcard and sign-up pages
        target = parse_qs(parts.query).get("url", [""])[0] if parts.path.startswith("/track/click") else ""
        return clean_link(target, depth + 1) if target else None
    if _FORWARD_HOST.search(host):
        return None
    if _SUBSTACK_HOST.search(host):
        if parts.path.startswith("/redirect/"):
            carried = _substack_target(parts.path, parts.query)
            return clean_link(carried, depth + 1) if carried else _without(url, parts, {"j"})
        if parts.path.startswith(("/action/", "/account", "/settings")):
            return None
    if _GONE_PATH.search(unquote(parts.path)) or any(_GONE_PATH.search(k) for k in parse_qs(parts.query)):
        return None
    return _without(url, parts, _READER_PARAMETERS)


def _without(url: str, parts: SplitResult, names: frozenset[str] | set[str]) -> str:
    """url without the query parameters names (the reader's ids), and untouched when it has none of them."""
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name in names for name, _ in pairs):
        return url
    query = urlencode([(name, value) for name, value in pairs if name not in names])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _substack_target(path: str, query: str) -> str | None:
    """The URL a Substack redirect carries: a `url`/`uri` parameter, or a base64url token (a JWT's payload)
    holding it as JSON (e, url, u) or as itself; None when it carries only an id to look up at Substack's."""
    for key in ("url", "uri"):
        if (value := parse_qs(query).get(key, [""])[0]).startswith(("http://", "https://")):
            return value
    for segment in path.split("/")[2:]:
        for piece in segment.split("."):
            try:
                text = base64.urlsafe_b64decode(piece + "=" * (-len(piece) % 4)).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            if text.startswith(("http://", "https://")):
                return text
            try:
                payload = json.loads(text)
            except ValueError:
                continue
            if isinstance(payload, dict):
                for key in ("e", "url", "u", "r"):
                    found = payload.get(key)
                    if isinstance(found, str) and found.startswith(("http://", "https://")):
                        return found
    return None


def clean_image(url: str) -> str | None:
    """The src an image keeps; None for a tracking pixel's address or a scheme a page must not load."""
    url = _normalized(url)
    if _gone(url):
        return None
    scheme = _scheme(url)
    if scheme == "data":
        return url if _IMAGE_DATA.match(_CONTROL.sub("", url)) else None
    if scheme is not None and scheme not in ("http", "https"):
        return None
    try:
        host = (urlsplit(url if scheme or not url.startswith("//") else f"https:{url}").hostname or "").lower()
    except ValueError:
        return None
    return None if _MAILCHIMP_HOST.search(host) else url


def _tiny(attributes: dict[str, str]) -> bool:
    """An image of at most 1×1 pixel, by its attributes or its style: a tracking pixel, whatever its host."""

    def size(name: str) -> float | None:
        value = attributes.get(name)
        style = re.search(rf"(?:^|;)\s*{name}\s*:\s*([\d.]+)\s*(px)?\s*(?:;|$)", attributes.get("style", ""))
        text = value if value is not None else style.group(1) if style else None
        found = re.match(r"\s*([\d.]+)\s*(px)?\s*$", text) if text is not None else None
        return float(found.group(1)) if found else None

    width, height = size("width"), size("height")
    return width is not None and height is not None and width <= 1 and height <= 1


class _Cleaner(HTMLParser):
    """Writes the page again from html.parser's tokens, leaving out what clean_html's rules drop."""

    def __init__(self, *, subject: str, year: int, document: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.subject, self.year, self.document = subject, year, document
        self.skipping: str | None = None  # the element being dropped with its content, and how deep in it
        self.skip_depth = 0
        self.style: list[str] | None = None  # a <style> block's start tag and text, until its end tag
        self.charset_written = False

    def merge_tags(self, text: str) -> str:
        def value(found: re.Match[str]) -> str:
            tag = found.group(1).strip().upper()
            if tag in ("MC:SUBJECT", "SUBJECT"):
                return self.subject
            return str(self.year) if tag == "CURRENT_YEAR" else ""

        return _MERGE_TAG.sub(value, text)

    def attributes(self, tag: str, pairs: list[tuple[str, str | None]]) -> dict[str, str | None] | None:
        """The attributes the tag keeps; None when the element itself goes (a tracking pixel, a stray link)."""
        kept: dict[str, str | None] = {}
        for name, raw in pairs:
            if not _ATTRIBUTE_NAME.fullmatch(name) or name.startswith("on") or name in _DROPPED_ATTRIBUTES:
                continue
            if name in kept:  # the first one counts, as for browsers
                continue
            # A URL is judged as written: a merge tag in it (*|UNSUB|*) makes it a link of the old tool's.
            value = self.merge_tags(raw) if raw is not None and name not in _URL_ATTRIBUTES else raw
            if value is not None and name in _LINK_ATTRIBUTES:
                value = clean_link(value)
            elif value is not None and name in _IMAGE_ATTRIBUTES:
                value = clean_image(value)
                if value is None and tag == "img":
                    return None
            elif value is not None and name == "srcset":
                if not all(clean_image(item.split()[0]) for item in value.split(",") if item.split()):
                    value = None
            elif name in ("style", "usemap") and value is not None and not _harmless(name, value):
                value = None
            if value is not None or raw is None:
                kept[name] = value
        if tag == "img" and (_tiny({k: v for k, v in kept.items() if v is not None}) or not kept.get("src")):
            return None
        if tag == "a" and "href" not in kept:
            kept.pop("target", None)
        if tag == "link" and not (kept.get("href") and "stylesheet" in (kept.get("rel") or "").lower().split()):
            return None
        if tag == "meta" and ("http-equiv" in kept or "charset" in kept):
            return None  # a refresh, a cookie, or a charset this page no longer has (it is written in UTF-8)
        return kept

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start(tag, attrs, closed=True)  # <br/> is one tag: the default would add a </br> (a second <br>)

    def start(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        if self.skipping is not None:
            self.skip_depth += tag == self.skipping and not closed
            return
        if tag in _DROPPED_WITH_CONTENT:
            if not closed and tag not in _VOID:
                self.skipping, self.skip_depth = tag, 1
            return
        if tag in _DROPPED_TAG or not _TAG_NAME.fullmatch(tag) or self.style is not None:
            return
        kept = self.attributes(tag, attrs)
        if kept is None:
            return
        if self.document and not self.charset_written and tag not in ("html", "head"):
            self.out.append('<meta charset="utf-8">')  # before the first tag of the head (or in its place)
            self.charset_written = True
        text = f"<{tag}" + "".join(f" {k}" if v is None else f' {k}="{escape(v)}"' for k, v in kept.items()) + ">"
        if tag == "style" and not closed:
            self.style = [text]
            return
        self.out.append(text)
        if tag == "head" and self.document and not self.charset_written:
            self.out.append('<meta charset="utf-8">')
            self.charset_written = True

    def handle_endtag(self, tag: str) -> None:
        if self.skipping is not None:
            if tag == self.skipping:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skipping = None
            return
        if tag == "style" and self.style is not None:
            self.end_style()
            return
        if tag in _DROPPED_TAG or tag in _DROPPED_WITH_CONTENT or not _TAG_NAME.fullmatch(tag):
            return
        self.out.append(f"</{tag}>")

    def end_style(self) -> None:
        assert self.style is not None
        start, css = self.style[0], "".join(self.style[1:])
        self.style = None
        if not _DANGEROUS_CSS.search(_css(css)):
            # html.parser ends a style block only at "</style>", a browser at "</style" and a space or a slash
            # too: no "</" is left in it, so that both end it where this writes its end tag.
            self.out.append(start + css.replace("</", "<\\/") + "</style>")

    def handle_data(self, data: str) -> None:
        if self.skipping is not None:
            return
        if self.style is not None:
            self.style.append(data)
            return
        self.out.append(escape(self.merge_tags(data), quote=False))

    def handle_decl(self, decl: str) -> None:
        if self.skipping is None and _DOCTYPE.fullmatch(decl):
            self.out.append(f"<!{decl}>")

    # Comments (Outlook's conditional ones too), processing instructions and <![…]> sections are left out.
    def handle_comment(self, data: str) -> None:
        pass

    def handle_pi(self, data: str) -> None:
        pass

    def unknown_decl(self, data: str) -> None:
        pass

    def result(self) -> str:
        self.close()
        if self.style is not None:
            self.end_style()
        return "".join(self.out)


def _harmless(name: str, value: str) -> bool:
    """A style that runs or loads nothing it should not; a usemap naming a map of this page."""
    return value.startswith("#") if name == "usemap" else not _DANGEROUS_CSS.search(_css(value))


def _css(text: str) -> str:
    """CSS as it is matched against _DANGEROUS_CSS: without comments, escapes or spaces (java\\73 cript: too)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"\\([0-9a-fA-F]{1,6})\s?", lambda found: chr(min(int(found.group(1), 16), 0x10FFFF)), text)
    return re.sub(r"[\s\\]", "", text)


_FRAGMENT_STYLE = (
    "body{margin:0 auto;max-width:42rem;padding:1.5rem 1rem;font:1.0625rem/1.6 Georgia,serif;color:#222}"
    "img{max-width:100%;height:auto}.subtitle{color:#555;font-size:1.2rem}"
)


def clean_html(html: str, *, subject: str, year: int, lang: str = "en", subtitle: str = "") -> str:
    """The page of an imported issue: html as it was sent, stripped as this module's docstring says. A fragment
    (Substack's post body) becomes a page of its own, headed by its subject and subtitle."""
    document = re.search(r"<(html|body)[\s>]", html, re.IGNORECASE) is not None
    cleaner = _Cleaner(subject=subject, year=year, document=document)
    cleaner.feed(html)
    page = cleaner.result()
    if document:
        return page
    heading = f"<h1>{escape(subject)}</h1>\n" + (f'<p class="subtitle">{escape(subtitle)}</p>\n' if subtitle else "")
    return (
        f'<!DOCTYPE html>\n<html lang="{escape(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(subject)}</title>\n<style>{_FRAGMENT_STYLE}</style>\n</head>\n<body>\n"
        f"{heading}{page}\n</body>\n</html>\n"
    )


# The import.


@dataclass
class ImportReport:
    source: Source
    export: Path
    folder: Path
    dry_run: bool
    imported: list[dict[str, str]] = field(default_factory=list)
    updated: list[dict[str, str]] = field(default_factory=list)
    unchanged: list[dict[str, str]] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)  # id, subject, why

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "export": str(self.export),
            "folder": str(self.folder),
            "dry_run": self.dry_run,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "left_out": self.left_out,
        }

    def summary(self) -> str:
        """One line: what was brought in, and what was left out and why, by reason."""
        verb = "would import" if self.dry_run else "imported"
        reasons = Counter(re.sub(r" \(.*\)$|\s+'.*'$", "", item["why"]) for item in self.left_out)
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        left = f", {len(self.left_out)} left out ({why})" if self.left_out else ", none left out"
        changed = f", {len(self.updated)} {'to update' if self.dry_run else 'updated'}" if self.updated else ""
        return f"{self.source} export: {verb} {len(self.imported)}{changed}, {len(self.unchanged)} unchanged{left}"


def import_archive(workspace: Workspace, export: Path, *, dry_run: bool = False) -> ImportReport:
    """Bring the sent campaigns of a Mailchimp or Substack export (its .zip or folder) into archive/imported/.

    Every page is made before anything is written; each file is written whole (a temporary file renamed), the
    page before its meta.json, so that the archive never lists a page not yet there. The same campaign keeps its
    folder from one run to the next (found by its source and id), so a second run reports it unchanged.
    """
    files = ExportFiles(export)
    try:
        source, campaigns = _campaigns(files, workspace.config)
        pages = {id(c): _page(files, c, workspace.config) for c in campaigns if c.why_left_out is None}
    finally:
        files.close()
    report = ImportReport(source, export, imported_dir(workspace), dry_run)
    known = _known(imported_dir(workspace))
    taken = set(known.values())
    seen: set[str] = set()
    writes: list[tuple[Path, bytes]] = []
    for campaign in campaigns:
        if campaign.why_left_out is None and campaign.id in seen:
            campaign.why_left_out = "listed twice"
        seen.add(campaign.id)
        if campaign.why_left_out is not None:
            report.left_out.append({"id": campaign.id, "subject": campaign.subject, "why": campaign.why_left_out})
    chosen = [c for c in campaigns if c.why_left_out is None]
    chosen.sort(key=lambda c: (c.date.timestamp() if c.date else 0.0, c.id))  # the same slugs on every run
    for campaign in chosen:
        assert campaign.date is not None
        slug = known.get((source, campaign.id)) or _new_slug(workspace, campaign, taken)
        taken.add(slug)
        page = pages[id(campaign)]
        assert page is not None
        date = campaign.date.isoformat()
        meta = {
            "format": META_FORMAT,
            "source": source,
            "id": campaign.id,
            "subject": campaign.subject,
            "date": date,
        }
        meta_bytes = (json.dumps(meta, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        folder = report.folder / slug
        item = {"slug": slug, "subject": campaign.subject, "date": date, "id": campaign.id}
        before = [_read(folder / "index.html"), _read(folder / "meta.json")]
        if before == [page, meta_bytes]:
            report.unchanged.append(item)
            continue
        (report.updated if any(before) else report.imported).append(item)
        writes += [(folder / "index.html", page), (folder / "meta.json", meta_bytes)]
    if not dry_run:
        for path, data in writes:
            _write(path, data)
    return report


def _campaigns(files: ExportFiles, config: Config) -> tuple[Source, list[Campaign]]:
    mailchimp, substack = files.find("campaigns.csv"), files.find("posts.csv")
    if mailchimp and substack:
        raise NewsletterError(f"{files.path} holds both campaigns.csv and posts.csv: import one export at a time")
    if mailchimp:
        return "mailchimp", read_mailchimp(files, mailchimp, config)
    if substack:
        return "substack", read_substack(files, substack, config)
    raise NewsletterError(
        f"{files.path} is neither Mailchimp's account export (campaigns.csv) nor Substack's (posts.csv)"
    )


def _page(files: ExportFiles, campaign: Campaign, config: Config) -> bytes | None:
    """The campaign's cleaned page, as UTF-8; None (why_left_out set) when its HTML cannot be read."""
    if campaign.html_name is None:
        campaign.why_left_out = "no HTML file for it in the export"
        return None
    if campaign.html_name in files.outside:
        campaign.why_left_out = f"its HTML {campaign.html_name} leads outside the export; not read"
        return None
    data = files.read(campaign.html_name)
    if data is None:
        campaign.why_left_out = f"its HTML is larger than {MAX_FILE_BYTES // 2**20} MB"
        return None
    assert campaign.date is not None
    if not campaign.subject:
        campaign.subject = campaign.id
    html = clean_html(
        _decode(data), subject=campaign.subject, year=campaign.date.year, lang=config.lang, subtitle=campaign.subtitle
    )
    return html.encode("utf-8")


def _known(folder: Path) -> dict[tuple[str, str], str]:
    """(source, id) -> slug of the issues imported before, from their meta.json."""
    known: dict[tuple[str, str], str] = {}
    for slug in sorted(os.listdir(folder)) if folder.is_dir() else []:
        try:
            meta = json.loads((folder / slug / "meta.json").read_text(encoding="utf-8"))
            known.setdefault((str(meta["source"]), str(meta["id"])), slug)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return known


def _new_slug(workspace: Workspace, campaign: Campaign, taken: set[str]) -> str:
    """<date>-<subject> as a slug, with -2, -3… when an issue or another imported one already has it."""
    assert campaign.date is not None
    base = slugify(f"{campaign.date:%Y-%m-%d} {campaign.subject}")[: SLUG_MAX - 4].rstrip("-")
    for number in range(1, 10_000):
        slug = base if number == 1 else f"{base}-{number}"
        if slug not in taken and not (workspace.issues_dir / slug).exists() and not _occupied(workspace, slug):
            return slug
    raise NewsletterError(f"no free slug for {campaign.subject!r} in {imported_dir(workspace)}")


def _occupied(workspace: Workspace, slug: str) -> bool:
    """A folder of that name already in archive/imported/ (another issue's, or the user's own)."""
    return (imported_dir(workspace) / slug).exists()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
