"""Reading what people export from other mailers: a Mailchimp audience export (the zip it emails, the folder that
unzips to, or one of its files alone), Substack's email list, listmonk's subscribers export, or any CSV with an
email column, as ImportRow records that carry each person's status, fields, tags and consent evidence.

Nothing here writes to the store: subscribers.py's import validates each address and feeds the rows to it. Every
file is read as a stream, a zip's members through zipfile's own streams: once to learn its encoding and read its
header (so that what makes a file unreadable is found before the first row of any file is imported), once for its
rows. A row that would subscribe someone is rejected when anything in it cannot be read; a row that records
someone leaving is always kept, whatever else in it is unreadable.

Where each layout is documented (tests/fixtures/exports/README.md says more, and what each fixture holds):
- Mailchimp: the export is a zip (https://mailchimp.com/developer/marketing/docs/account-exports/) of one CSV per
  status (https://mailchimp.com/help/view-unsubscribed-contacts/ defines the four statuses,
  https://mailchimp.com/help/about-cleaned-contacts the cleaned). Mailchimp's pages do not list the columns: they
  are taken from public readers of real exports, TryGhost/migrate's mg-mailchimp-members test fixtures (a header
  per file) and buttondown/roadmap#2276.
- Substack: email_list.<publication>.csv of its export, as TryGhost/migrate's mg-substack-members-csv reads it and
  https://github.com/betacraft/substack_parser/wiki lists it.
- listmonk: https://listmonk.app/docs/concepts (attributes, statuses); the export's header is written by its
  cmd/subscribers.go (knadh/listmonk): uuid, email, name, attributes, status, created_at, updated_at, the times
  in Go's time.Time.String() form ("2023-03-14 18:05:22.123456 +0000 UTC").
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from newsletter.errors import NewsletterError
from newsletter.fields import distinct_tags, field_key
from newsletter.i18n import parse_language

CHUNK = 1 << 16  # bytes read at a time to learn a file's encoding: a zip member's read holds a few copies of it
SAMPLE = 8192  # characters the delimiter is guessed from
STATUSES = ("subscribed", "unsubscribed", "bounced", "complained", "nonsubscribed")
STATUS_ADVICE = "use subscribed, unsubscribed, bounced or complained"

Rejected = Callable[[str, int, str], None]  # (file, line, reason)


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One person of an export, as the file has them; the address is the cell as written, not yet validated."""

    file: str  # the file's name (a zip's member, a folder's file by its path in it)
    line: int  # the CSV line of the row (csv.reader.line_num)
    email: str
    name: str | None  # a name column, else "first last"
    fields: dict[str, str]  # display name as written in the header -> value, only non-empty ones
    tags: tuple[str, ...]  # cleaned, distinct (fields.distinct_tags)
    status: str  # one of STATUSES
    status_at: datetime | None  # when that status came, UTC; None when unknown
    reason: str | None  # why, as the file says; None when it does not
    consent: dict[str, str]  # among opted_in_at, opted_in_ip, confirmed_at, confirmed_ip, joined_at
    source: str  # mailchimp, substack, listmonk or csv
    lang: str | None = None  # the language they read in (fr, en), where the file says


@dataclass
class ExportFile:
    """One CSV file of an export, reported once its rows are being read."""

    name: str
    status: str | None  # the status all its rows have by the file's kind (cleaned_ -> bounced), None if per row
    encoding: str  # as ImportReport.encoding reports it: utf-8, utf-8-sig, utf-16-le, utf-16-be, cp1252
    delimiter: str
    rows: int = 0  # data rows read, rejected ones included (blank lines are no rows)


# Header names, compared by header_key: without case, accents, spaces or punctuation.
EMAIL_HEADERS = set(
    "email courriel mail adresse address emailaddress mailaddress adressecourriel adresseemail adressemail "
    "adressedecourriel adresseelectronique".split()
)
NAME_HEADERS = set("name nomcomplet fullname nometprenom prenometnom".split())
FIRST_NAME_HEADERS = set("firstname prenom givenname fname".split())
LAST_NAME_HEADERS = set("lastname nom nomdefamille surname familyname lname".split())
# A generic CSV's optional columns.
STATUS_HEADERS = set("status statut etat subscriptionstatus statutdabonnement statutabonnement".split())
TAG_HEADERS = set("tags tag etiquettes etiquette labels".split())
JOINED_HEADERS = set(
    "joined joinedat joindate subscribedat subscribedon subscriptiondate signupdate createdat datedinscription "
    "dateinscription datedabonnement dateabonnement inscritle abonnele".split()
)
STATUS_AT_HEADERS = set("statusat statuschangedat statusdate unsubscribedat datedustatut desabonnele".split())
REASON_HEADERS = set("reason statusreason unsubreason raison motif".split())
# The language a person reads in; its cells are read by i18n.parse_language (fr, en, français, English…).
LANG_HEADERS = set("lang langue language langage languepreferee preferredlanguage".split())
CONSENT_HEADERS = {
    "opted_in_at": {"optedinat", "optintime", "optinat"},
    "opted_in_ip": {"optedinip", "optinip"},
    "confirmed_at": {"confirmedat", "confirmtime"},
    "confirmed_ip": {"confirmedip", "confirmip"},
}

# A status cell, by header_key: English, Mailchimp's and listmonk's words, and what a Quebec organisation writes
# ("abonné(e)", "Désinscrite", "rebond"). Yes and no are no status: a file that says "oui" says nothing of who left.
STATUS_WORDS = {
    "subscribed": "subscribed subscriber active actif actifs actives abonne abonnee abonnes abonnees inscrit "
    "inscrite inscrits inscrites confirmed confirme confirmee enabled optedin optin",
    "unsubscribed": "unsubscribed unsubscribe optedout optout desabonne desabonnee desabonnes desabonnees "
    "desinscrit desinscrite desinscrits desinscrites retire retiree retires retirees blocklisted blacklisted "
    "disabled desactive desactivee bloque bloquee",
    "bounced": "bounced bounce cleaned hardbounce rebond rebondi rebondie invalide invalid adresseinvalide "
    "undeliverable nonlivrable",
    "complained": "complained complaint spam spamcomplaint abuse plainte signalecommespam",
    "nonsubscribed": "nonsubscribed notsubscribed neversubscribed nonabonne nonabonnee pending unconfirmed "
    "enattente nonconfirme nonconfirmee transactional",
}
STATUS_OF_WORD = {word: status for status, words in STATUS_WORDS.items() for word in words.split()}

# Mailchimp's own columns, matched exactly as it writes them: a merge field may well be labelled "Région" or
# "Notes", and it is a field, not REGION or NOTES.
MAILCHIMP_LEFT_OUT = set(
    "MEMBER_RATING LATITUDE LONGITUDE GMTOFF DSTOFF TIMEZONE CC REGION LAST_CHANGED LEID EUID NOTES "
    "UNSUB_CAMPAIGN_TITLE UNSUB_CAMPAIGN_ID CLEAN_CAMPAIGN_TITLE CLEAN_CAMPAIGN_ID EMAIL_TYPE MC_LOCATION".split()
)
MAILCHIMP_CONSENT = {
    "OPTIN_TIME": "opted_in_at",
    "OPTIN_IP": "opted_in_ip",
    "CONFIRM_TIME": "confirmed_at",
    "CONFIRM_IP": "confirmed_ip",
}
MAILCHIMP_LEAVING = {"CLEAN_TIME": "bounced", "UNSUB_TIME": "unsubscribed"}  # a row with one has left
MAILCHIMP_OWN = set("MEMBER_RATING LEID EUID OPTIN_TIME CONFIRM_TIME LAST_CHANGED UNSUB_TIME CLEAN_TIME".split())
# subscribed_members_export_4f1c2a9b7e.csv and its kin (a segment's export: subscribed_segment_export_…).
MAILCHIMP_FILE = re.compile(r"^(cleaned|unsubscribed|non-?subscribed|subscribed)_[a-z_]*?export(?:_[^/]*)?\.csv$", re.I)
MAILCHIMP_STATUS = {"cleaned": "bounced", "unsubscribed": "unsubscribed", "subscribed": "subscribed"}
# Read in this order, so that an address in two files is first seen with its leaving status.
MAILCHIMP_ORDER = ("bounced", "unsubscribed", "nonsubscribed", "subscribed")
SUBSTACK_FILE = re.compile(r"^email_list\..*\.csv$", re.I)
SUBSTACK_DELETED = "@deletion-request.substack.com"  # what Substack leaves of someone who asked to be deleted
LISTMONK_HEADER = {"uuid", "email", "attributes", "status"}
LISTMONK_STATUS = {"enabled": "subscribed", "disabled": "unsubscribed", "blocklisted": "unsubscribed"}
TRUE_WORDS, FALSE_WORDS = {"true", "yes", "1", "vrai", "oui"}, {"false", "no", "0", "faux", "non", ""}

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
# Go's time.Time.String() (listmonk): 2023-03-14 18:05:22.123456 +0000 UTC, sometimes a monotonic m=+0.1 after.
_TIME = re.compile(
    r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?) ?([+-]\d\d:?\d\d|Z)?(?: [A-Za-z][\w+-]*)?(?: m=[+-][\d.]+)?$"
)
_SLASHED_DATE = re.compile(r"^\d{4}/\d\d/\d\d")
UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def header_key(header: str) -> str:
    """'Adresse courriel' -> 'adressecourriel'; 'E-mail' -> 'email'; '\\ufeffPrénom ' -> 'prenom'; 'abonné(e)' ->
    'abonnee'. Headers, status words and --keep names are all compared by it."""
    text = header.casefold().replace("œ", "oe").replace("æ", "ae")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _NOT_ALNUM.sub("", text)


def detect_encoding(stream: IO[bytes], name: str | None = None) -> tuple[str, str, int]:
    """(encoding as reported, Python codec, length of the BOM) of a CSV file: UTF-16 with its BOM (Excel's
    "Unicode Text"), UTF-8 with or without BOM, else Windows-1252.

    Reads the whole file once, a chunk at a time: a file that is not all UTF-8 is Windows-1252, which must be
    known before its first row is read; one that announces UTF-8 or UTF-16 by its BOM and breaks it is refused
    before anything is imported (the message starts with `name: ` when it is given).
    """
    start = stream.read(3)
    if start.startswith(b"\xef\xbb\xbf"):
        reported, codec, bom = "utf-8-sig", "utf-8", 3
    elif start[:2] in UTF16_BOMS:
        reported, codec, bom = UTF16_BOMS[start[:2]], UTF16_BOMS[start[:2]], 2
    else:
        reported, codec, bom = "utf-8", "utf-8", 0
    stream.seek(bom)
    decoder = codecs.getincrementaldecoder(codec)()
    position = bom
    while True:
        chunk = stream.read(CHUNK)
        held = len(decoder.getstate()[0])  # bytes of a character the previous chunk cut in two
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            if bom == 0:
                return "cp1252", "cp1252", 0
            offset = position - held + exc.start
            form = codec.upper() if bom == 2 else "UTF-8 (with a BOM)"
            raise NewsletterError(
                f'{_where(name)}the file starts as {form} but byte {offset} is not; save it again as "Unicode Text" or '
                '"CSV UTF-8"'
            ) from None
        if not chunk:
            return reported, codec, bom
        position += len(chunk)


@dataclass
class _Format:
    encoding: str  # as reported
    codec: str
    bom: int
    delimiter: str


def _open_csv(
    stream: IO[bytes], name: str | None, known: _Format | None = None
) -> tuple[_Format, list[str], Any, io.TextIOWrapper]:
    """(its format, the header, a csv.reader past the header, the text stream under it) of a CSV file open in
    binary; the encoding is learnt (a whole pass over the file) unless `known`, the delimiter guessed from the
    first SAMPLE characters."""
    if known is None:
        encoding, codec, bom = detect_encoding(stream, name)
    else:
        encoding, codec, bom = known.encoding, known.codec, known.bom
    stream.seek(bom)
    text = io.TextIOWrapper(stream, encoding=codec, errors="replace" if codec == "cp1252" else "strict", newline="")
    sample = text.read(SAMPLE)
    if known is not None:
        delimiter = known.delimiter
    else:
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = max(",;\t", key=sample.count)
    head = sample + text.readline()  # to the end of the line the sample cuts: the csv reader takes whole lines
    reader = csv.reader(itertools.chain(io.StringIO(head, newline=""), text), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise NewsletterError(f"{_where(name)}the CSV file is empty")
    return _Format(encoding, codec, bom, delimiter), header, reader, text


def _where(name: str | None) -> str:
    """What starts a message about a file: its name, when there is one to give."""
    return f"{name}: " if name else ""


def _no_email_column(name: str | None, header: list[str]) -> NewsletterError:
    found = ", ".join(repr(h.strip().lstrip("\ufeff")) for h in header)
    return NewsletterError(f"{_where(name)}line 1: no email column among {found}; name one email or courriel")


def _column(keys: list[str], names: Collection[str], taken: Collection[int] = ()) -> int | None:
    return next((i for i, key in enumerate(keys) if key in names and i not in taken), None)


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


# The layouts.


def _time(text: str) -> datetime | None:
    """A time as exports write it, timezone-aware UTC (one without a zone is UTC: Mailchimp's "2023-03-14
    18:05:22"); None for Go's zero time (a null). Raise ValueError when it cannot be read."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        match = _TIME.match(text)  # Go's "… +0000 UTC", a date written 2023/03/14
        if match:
            text = match[1] + (match[2] or "")
        elif _SLASHED_DATE.match(text):
            text = text.replace("/", "-")
        else:
            raise
        value = datetime.fromisoformat(text)
    if value.year <= 1:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@functools.lru_cache(maxsize=4096)  # the contacts an import added share its time: CONFIRM_TIME repeats
def _timed(text: str) -> tuple[datetime, str] | None:
    """_time's answer and its ISO 8601 text, as consent keeps it."""
    value = _time(text)
    return None if value is None else (value, value.isoformat())


@functools.lru_cache(maxsize=4096)  # a list's people share a few combinations of tags
def _tags(cell: str, delimiter: str | None) -> tuple[str, ...]:
    return tuple(distinct_tags(split_tags(cell, delimiter)))


def split_tags(cell: str, delimiter: str | None = None) -> list[str]:
    """'"MRC Rimouski-Neigette","Rimouski"' (Mailchimp's TAGS) -> its two tags; 'a, b' or 'a; b' -> ['a', 'b']:
    separated by commas, or by semicolons when there are some outside quotes."""
    if delimiter is None:
        delimiter = ";" if ";" in re.sub(r'"[^"]*"', "", cell) else ","
    if '"' not in cell and delimiter not in cell:
        return [cell]
    return next(csv.reader([cell], delimiter=delimiter, skipinitialspace=True), [])


def _truth(text: str) -> bool:
    word = text.strip().casefold()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(text)


@dataclass
class _Layout:
    """Which column of a file is what, decided from its header before any row is read."""

    kind: str  # mailchimp, substack, listmonk, csv
    header: list[str]  # as written, stripped
    email: int
    name: int | None = None
    first: int | None = None
    last: int | None = None
    fields: list[tuple[int, str]] = field(default_factory=list)  # (column, display name), one per field key
    tags: int | None = None
    tags_delimiter: str | None = None
    status: str | None = None  # every row's status, by the file's kind (Mailchimp's files)
    status_column: int | None = None  # a generic CSV's status words, listmonk's status, Substack's email_disabled
    leaving: list[tuple[str, int]] = field(default_factory=list)  # (status, column): a Mailchimp row with it left
    status_at: int | None = None
    status_at_if_left: bool = False  # listmonk's updated_at says when someone left, not when they joined
    lang: int | None = None  # a generic CSV's language column, or Mailchimp's MC_LANGUAGE
    # Mailchimp's MC_LANGUAGE is its guess (the browser's language) and any of its own: one that is neither fr nor
    # en leaves the person's unset rather than rejecting the row.
    lang_guessed: bool = False
    reasons: list[int] = field(default_factory=list)  # joined with ": " (Mailchimp's UNSUB_REASON and _OTHER)
    consent: list[tuple[str, int]] = field(default_factory=list)  # (key, column)
    joined: list[int] = field(default_factory=list)  # the first of these with a date is joined_at
    attributes: int | None = None  # listmonk's JSON object
    left_out: list[str] = field(default_factory=list)  # the columns not imported unless kept


def _start(kind: str, name: str, header: list[str], keys: list[str]) -> tuple[_Layout, set[int]]:
    """A layout with its email and name columns found, and the columns they took."""
    email = _column(keys, EMAIL_HEADERS)
    if email is None:
        raise _no_email_column(name, header)
    layout = _Layout(kind, [h.strip().lstrip("\ufeff") for h in header], email)
    taken = {email}
    if kind == "listmonk":
        layout.name = _column(keys, {"name"}, taken)
    else:
        layout.name = _column(keys, NAME_HEADERS, taken)
        layout.first = _column(keys, FIRST_NAME_HEADERS, taken)
        layout.last = _column(keys, LAST_NAME_HEADERS, taken)
    taken.update(i for i in (layout.name, layout.first, layout.last) if i is not None)
    return layout, taken


def _add_fields(layout: _Layout, columns: Collection[int]) -> None:
    """These columns become fields under their header as written, one per field key (the first column of a key
    wins). The name columns are not fields: they make the name, and the first name is kept as "first_name"
    (today's key, which %%first_name%% and {{ first_name }} use), whatever its header."""
    seen = {"first_name"}
    for i in sorted(set(columns)):
        display = layout.header[i]
        key = field_key(display)
        if key and key not in seen:
            seen.add(key)
            layout.fields.append((i, display))


def _mailchimp(name: str, header: list[str], keys: list[str], status: str | None, keep: set[str]) -> _Layout:
    layout, taken = _start("mailchimp", name, header, keys)
    exact = layout.header
    if status is None:  # a file renamed: its columns tell an unsubscribed or a cleaned one
        status = next((s for column, s in MAILCHIMP_LEAVING.items() if column in exact), None)
        if status is None:
            raise NewsletterError(
                f"{name}: a Mailchimp export whose name does not say whom it holds; give it back the name "
                "Mailchimp gave it (subscribed_members_export_….csv, unsubscribed_…, cleaned_…, nonsubscribed_…)"
            )
    layout.status = status
    fields = []
    for i, column in enumerate(exact):
        if i in taken:
            continue
        if column in MAILCHIMP_CONSENT:
            layout.consent.append((MAILCHIMP_CONSENT[column], i))
        elif column == "TAGS":
            layout.tags, layout.tags_delimiter = i, ","
        elif column == "MC_LANGUAGE":  # "fr", "fr_CA", "en", "es"…
            layout.lang, layout.lang_guessed = i, True
        elif column in MAILCHIMP_LEAVING:
            layout.leaving.append((MAILCHIMP_LEAVING[column], i))
        elif column in ("UNSUB_REASON", "UNSUB_REASON_OTHER"):
            layout.reasons.append(i)
        elif column in MAILCHIMP_LEFT_OUT:
            layout.left_out.append(column)
            if keys[i] in keep:
                fields.append(i)
        else:  # a merge field, by its label
            fields.append(i)
    # When someone opted in, else (added by an import or by hand, Mailchimp records only that) when confirmed.
    consent = dict(layout.consent)
    layout.joined = [consent[key] for key in ("opted_in_at", "confirmed_at") if key in consent]
    _add_fields(layout, fields)
    return layout


def _substack(name: str, header: list[str], keys: list[str], keep: set[str]) -> _Layout:
    layout, taken = _start("substack", name, header, keys)
    fields = []
    for i, key in enumerate(keys):
        if i in taken:
            continue
        if key == "emaildisabled":
            layout.status_column = i
        elif key == "createdat":
            layout.joined = [i]
        else:  # active_subscription, expiry, plan, digest_enabled, …: a paid plan's terms, not who someone is
            layout.left_out.append(layout.header[i])
            if key in keep:
                fields.append(i)
    _add_fields(layout, fields)
    return layout


def _listmonk(name: str, header: list[str], keys: list[str], keep: set[str]) -> _Layout:
    layout, taken = _start("listmonk", name, header, keys)
    fields = []
    for i, key in enumerate(keys):
        if i in taken:
            continue
        if key == "attributes":
            layout.attributes = i
        elif key == "status":
            layout.status_column = i
        elif key == "createdat":
            layout.joined = [i]
        elif key == "updatedat":  # when a blocklisted or disabled one was last changed: when they left
            layout.status_at, layout.status_at_if_left = i, True
        else:  # uuid
            layout.left_out.append(layout.header[i])
            if key in keep:
                fields.append(i)
    _add_fields(layout, fields)
    return layout


def _generic(name: str, header: list[str], keys: list[str]) -> _Layout:
    layout, taken = _start("csv", name, header, keys)

    def claim(names: Collection[str]) -> int | None:
        found = _column(keys, names, taken)
        if found is not None:
            taken.add(found)
        return found

    layout.status_column = claim(STATUS_HEADERS)
    layout.tags = claim(TAG_HEADERS)
    layout.status_at = claim(STATUS_AT_HEADERS)
    layout.lang = claim(LANG_HEADERS)
    layout.reasons = [i for i in [claim(REASON_HEADERS)] if i is not None]
    for key, names in CONSENT_HEADERS.items():
        if (found := claim(names)) is not None:
            layout.consent.append((key, found))
    layout.joined = [i for i in [claim(JOINED_HEADERS)] if i is not None]
    _add_fields(layout, [i for i in range(len(header)) if i not in taken])
    return layout


def _mailchimp_status(base: str) -> str | None:
    """The status a Mailchimp export's file name gives its rows; None for another name."""
    match = MAILCHIMP_FILE.match(base)
    if match is None:
        return None
    return MAILCHIMP_STATUS.get(match[1].lower(), "nonsubscribed")


def _layout(name: str, header: list[str], status: str | None, kind: str | None, keep: set[str]) -> _Layout:
    """What a file is, by its name (`kind` and `status` when the export it came in told them) and its header."""
    keys = [header_key(h) for h in header]
    if kind is None:
        base = PurePosixPath(name).name
        if MAILCHIMP_FILE.match(base):
            kind, status = "mailchimp", _mailchimp_status(base)
        elif SUBSTACK_FILE.match(base) or {"email", "emaildisabled"} <= set(keys):
            kind = "substack"
        elif set(keys) >= LISTMONK_HEADER:
            kind = "listmonk"
        elif "emailaddress" in keys and any(h.strip().lstrip("\ufeff") in MAILCHIMP_OWN for h in header):
            kind = "mailchimp"
        else:
            kind = "csv"
    if kind == "mailchimp":
        return _mailchimp(name, header, keys, status, keep)
    if kind == "substack":
        return _substack(name, header, keys, keep)
    if kind == "listmonk":
        return _listmonk(name, header, keys, keep)
    return _generic(name, header, keys)


# Rows.


def _attributes(text: str) -> dict[str, str]:
    """listmonk's attributes: top-level text as it is, other scalars and nested values as JSON writes them (true,
    3, ["CA", "Finances"])."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    found = {}
    for key, item in value.items():
        shown = item.strip() if isinstance(item, str) else "" if item is None else json.dumps(item, ensure_ascii=False)
        if str(key).strip() and shown:
            found[str(key).strip()] = shown
    return found


def _status(layout: _Layout, row: list[str], email: str) -> str:
    """The row's status; raise ValueError with why it has none that can be trusted."""
    if layout.status is not None:  # Mailchimp's: a row that records a bounce or an unsubscribe has left
        for leaving, i in layout.leaving:
            if i < len(row) and row[i].strip():
                return leaving
        return layout.status
    cell = _cell(row, layout.status_column)
    if layout.kind == "substack":
        if email.lower().endswith(SUBSTACK_DELETED):
            raise ValueError("a Substack deletion request: this person asked to be deleted")
        try:
            return "unsubscribed" if _truth(cell) else "subscribed"
        except ValueError:
            raise ValueError(f"unknown email_disabled '{cell}'; expected true or false") from None
    if layout.kind == "listmonk":
        if cell.casefold() not in LISTMONK_STATUS:
            raise ValueError(f"unknown listmonk status '{cell}'; expected enabled, disabled or blocklisted")
        return LISTMONK_STATUS[cell.casefold()]
    if layout.status_column is None:  # a plain list of addresses: subscribed, as it always was
        return "subscribed"
    if not cell:
        raise ValueError(f"no status; {STATUS_ADVICE}")
    status = STATUS_OF_WORD.get(header_key(cell))
    if status is None:
        raise ValueError(f"unknown status '{cell}'; {STATUS_ADVICE}")
    return status


def _row(layout: _Layout, file: str, line: int, row: list[str]) -> ImportRow | str:
    """The row, or why it is rejected."""
    email = _cell(row, layout.email)
    if not email:
        return "no address"
    try:
        status = _status(layout, row, email)
    except ValueError as exc:
        return str(exc)
    problems: list[str] = []  # what cannot be read: a row that would subscribe someone is rejected for it

    read: dict[int, tuple[datetime, str] | None] = {}  # by column: joined_at is often a consent time read already

    def timed(index: int) -> tuple[datetime, str] | None:
        if index not in read:
            text = _cell(row, index)
            try:
                read[index] = _timed(text) if text else None
            except ValueError:
                problems.append(f"unreadable date '{text}' in {layout.header[index]}; write it as 2023-03-14 18:05:22")
                read[index] = None
        return read[index]

    def when(index: int) -> datetime | None:
        found = timed(index)
        return found[0] if found else None

    status_at = None
    if layout.status is not None:  # Mailchimp's UNSUB_TIME or CLEAN_TIME, for the status they give
        status_at = next((when(i) for s, i in layout.leaving if s == status), None)
    elif layout.status_at is not None and not (layout.status_at_if_left and status == "subscribed"):
        status_at = when(layout.status_at)
    reason = ": ".join(text for text in (_cell(row, i) for i in layout.reasons) if text) or None

    consent: dict[str, str] = {}
    for key, index in layout.consent:
        if key.endswith("_ip"):
            if text := _cell(row, index):
                consent[key] = text
        elif (found := timed(index)) is not None:
            consent[key] = found[1]
    for index in layout.joined:
        if (found := timed(index)) is not None:
            consent["joined_at"] = found[1]
            break

    first, last = _cell(row, layout.first), _cell(row, layout.last)
    name = _cell(row, layout.name) or " ".join(p for p in (first, last) if p) or None
    fields = {display: value for i, display in layout.fields if i < len(row) and (value := row[i].strip())}
    if first:
        fields["first_name"] = first
    if layout.attributes is not None:
        try:
            attributes = _attributes(_cell(row, layout.attributes))
        except ValueError as exc:
            problems.append(f"attributes that are not a JSON object ({exc})")
        else:
            seen = {field_key(name) for name in fields}
            for key, value in attributes.items():
                if field_key(key) not in seen:
                    seen.add(field_key(key))
                    fields[key] = value

    tags: tuple[str, ...] = ()
    if layout.tags is not None and (cell := _cell(row, layout.tags)):
        tags = _tags(cell, layout.tags_delimiter)

    lang = None
    if layout.lang is not None and (cell := _cell(row, layout.lang)):  # an empty cell leaves theirs as it is
        try:
            lang = parse_language(cell)
        except ValueError:
            if not layout.lang_guessed:
                problems.append(
                    f"unknown language '{cell}' in {layout.header[layout.lang]}; write fr or en (français, "
                    "anglais, French, English)"
                )

    if problems and status == "subscribed":
        return problems[0]
    return ImportRow(file, line, email, name, fields, tags, status, status_at, reason, consent, layout.kind, lang)


# Files, folders and zips.


@dataclass
class _Source:
    """One CSV file of an export, its encoding learnt and its header read before any row is."""

    name: str
    open: Callable[[], IO[bytes]]
    size: int
    kind: str | None = None  # as the export's file names tell it
    status: str | None = None
    form: _Format | None = None
    layout: _Layout | None = None


def _nothing() -> None:
    pass


class Export:
    """An export, ready to read: `rows()` streams its files' rows in order (Mailchimp's leaving files first),
    `files` fills as each is reached, `position()` and `size` are for a progress bar."""

    def __init__(self, kind: str, sources: list[_Source], on_reject: Rejected, closing: Callable[[], None]):
        self.kind = kind
        self.files: list[ExportFile] = []
        self.size = sum(source.size for source in sources)  # bytes of its CSV files (a zip's uncompressed)
        self._sources, self._on_reject, self._closing = sources, on_reject, closing
        self._done = 0  # bytes of the files read whole
        self._stream: IO[bytes] | None = None

    def position(self) -> int:
        """Bytes read so far across the files (the progress bar's numerator)."""
        stream = self._stream
        try:
            return self._done + (stream.tell() if stream is not None else 0)
        except (ValueError, OSError):  # closed meanwhile
            return self._done

    def rows(self) -> Iterator[ImportRow]:
        """Every row of every file, once; a row without an address, or that cannot be read or trusted, goes to
        on_reject(file, line, reason) instead."""
        try:
            for source in self._sources:
                assert source.layout is not None and source.form is not None  # open_export read every header
                yield from self._read(source, source.layout, source.form)
                self._done += source.size
        finally:
            self._stream = None
            self.close()

    def _read(self, source: _Source, layout: _Layout, form: _Format) -> Iterator[ImportRow]:
        report = ExportFile(source.name, layout.status, form.encoding, form.delimiter)
        self.files.append(report)
        with source.open() as stream:
            self._stream = stream
            _, _, reader, _ = _open_csv(stream, source.name, form)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:  # a field past csv's size limit, a stray NUL
                    report.rows += 1
                    self._on_reject(source.name, reader.line_num, f"unreadable row: {exc}")
                    continue
                if not "".join(row).strip():
                    continue
                report.rows += 1
                found = _row(layout, source.name, reader.line_num, row)
                if isinstance(found, str):
                    self._on_reject(source.name, reader.line_num, found)
                else:
                    yield found
            self._stream = None

    def close(self) -> None:
        """Close a zip it reads from (rows() does once it has read all)."""
        self._closing()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _survey(source: _Source, keep: set[str]) -> None:
    """Learn a file's encoding and read its header: what makes it unreadable is said before anything is read."""
    with source.open() as stream:
        source.form, header, _, text = _open_csv(stream, source.name)
        text.detach()  # the stream closes with the `with`, not when the wrapper is collected
    source.layout = _layout(source.name, header, source.status, source.kind, keep)


def _is_junk(name: str) -> bool:
    """A macOS zip's __MACOSX/ and ._ copies, hidden files."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def _choose(where: str, sources: list[_Source]) -> tuple[str, list[_Source]]:
    """Which files of a zip or folder to read, in which order, and what export they are ("" when it is one CSV
    file, whose header will tell)."""
    csvs = [s for s in sources if s.name.lower().endswith(".csv") and not _is_junk(s.name)]
    if not csvs:
        raise NewsletterError(f"{where}: no CSV file in it")
    mailchimp = [s for s in csvs if MAILCHIMP_FILE.match(PurePosixPath(s.name).name)]
    substack = [s for s in csvs if SUBSTACK_FILE.match(PurePosixPath(s.name).name)]
    if mailchimp and substack:
        raise NewsletterError(f"{where}: holds both a Mailchimp and a Substack export; import each on its own")
    if mailchimp:
        for source in mailchimp:
            source.kind, source.status = "mailchimp", _mailchimp_status(PurePosixPath(source.name).name)
        folders = {PurePosixPath(s.name).parent for s in mailchimp}
        statuses = [s.status for s in mailchimp]
        if len(folders) > 1 or len(set(statuses)) < len(statuses):  # an account export: one folder an audience
            names = ", ".join(sorted(s.name for s in mailchimp))
            raise NewsletterError(
                f"{where}: holds the exports of more than one Mailchimp audience ({names}); import each audience's "
                "files on their own"
            )
        return "mailchimp", sorted(mailchimp, key=lambda s: MAILCHIMP_ORDER.index(s.status or "subscribed"))
    if len(substack) > 1:
        names = ", ".join(sorted(s.name for s in substack))
        raise NewsletterError(f"{where}: holds the email lists of more than one publication ({names})")
    if substack:
        substack[0].kind = "substack"
        return "substack", substack  # its posts.csv and the posts' own CSVs are no list
    if len(csvs) == 1:
        return "", csvs
    names = ", ".join(sorted(s.name for s in csvs)[:5]) + (", …" if len(csvs) > 5 else "")
    raise NewsletterError(
        f"{where}: no Mailchimp or Substack export in it (CSV files: {names}); import one CSV file at a time"
    )


def _file_source(path: Path, name: str) -> _Source:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NewsletterError(f"cannot read {path}: {exc.strerror}") from None

    def opener() -> IO[bytes]:
        try:
            return path.open("rb")
        except OSError as exc:
            raise NewsletterError(f"cannot read {path}: {exc.strerror}") from None

    return _Source(name, opener, size)


def _zip_sources(path: Path) -> tuple[zipfile.ZipFile, list[_Source]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NewsletterError(f"{path.name}: not a zip file that can be read ({exc})") from None

    def member(info: zipfile.ZipInfo) -> _Source:
        return _Source(info.filename, lambda: archive.open(info), info.file_size)

    return archive, [member(info) for info in archive.infolist() if not info.is_dir()]


def open_export(path: Path, *, keep: Collection[str] = (), on_reject: Rejected) -> Export:
    """An export to read: a CSV file, a .zip, or a folder (Mailchimp's zip or the folder it unzips to, Substack's
    export, or one CSV file of any kind). Every file's encoding and header are checked here, before any row is
    read: a NewsletterError names the file for what makes one unreadable (no email column, a broken BOM, a zip
    with no CSV of a known export, a `keep` that names no column).

    keep: columns left out by default (Mailchimp's MEMBER_RATING, Substack's plan, listmonk's uuid, …), matched
    like headers, to import as fields. on_reject(file, line, reason): a row without an address, one that cannot
    be read, or one whose status cannot be trusted (an unknown status word), which is never a subscription.
    """
    keep_keys = {header_key(k): k for k in keep}
    closing: Callable[[], None] = _nothing
    kind = ""
    where = path.name or str(path)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file())
        kind, sources = _choose(where, [_file_source(p, p.relative_to(path).as_posix()) for p in found])
    elif zipfile.is_zipfile(path):
        archive, members = _zip_sources(path)
        closing = archive.close
        try:
            kind, sources = _choose(where, members)
        except BaseException:
            archive.close()
            raise
    else:
        sources = [_file_source(path, path.name)]
    try:
        for source in sources:
            _survey(source, set(keep_keys))
        _check_keep(where, keep_keys, sources)
    except BaseException:
        closing()
        raise
    return Export(kind or _layouts(sources)[0].kind, sources, on_reject, closing)


def _layouts(sources: list[_Source]) -> list[_Layout]:
    return [source.layout for source in sources if source.layout is not None]


def _check_keep(where: str, keep_keys: dict[str, str], sources: list[_Source]) -> None:
    """A `keep` that names no column of any file is a typo to point at, not a silent nothing."""
    present = {header_key(h) for layout in _layouts(sources) for h in layout.header}
    left_out = list(dict.fromkeys(h for layout in _layouts(sources) for h in layout.left_out))
    for key, asked in keep_keys.items():
        if key not in present:
            among = f"the columns left out are {', '.join(left_out)}" if left_out else "it leaves no column out"
            raise NewsletterError(f"{where}: no column '{asked}' to keep; {among}")
