"""One recipient's email, built from the issue rendered once: placeholders filled, headers set.

The values: the tool's own (%%name%%, %%email%%, %%unsubscribe_url%%, %%view_online_url%%), and the recipient's
fields by key for an issue's {{ prenom }} (%%field-prenom%%, field_placeholders.field_values), which never replace
the tool's own.

No MJML and no template runs here. Headers:
  From, To, Reply-To, Subject (RFC 2047 for non-ASCII names), Date, Message-ID unique per (campaign,
  subscriber) and stable across retries, List-Id (RFC 2919), Content-Language (RFC 3282: the version's, in a
  campaign with translations), List-Unsubscribe with the https link (and a mailto: when configured, RFC 2369),
  List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058).
Headers are written whole, never folded into RFC 2047 encoded-words (clients cannot parse a List-Unsubscribe
written so); no line of a message exceeds 998 octets. An address's international domain is written in A-labels
(xn--…); a local part that is not ASCII in UTF-8 (RFC 6532), which only a server offering SMTPUTF8 takes: the
transports decide. A domain with no ASCII form (no stored address has one) raises ValueError where it is
written; every transport makes that one message's failure. Names are cleaned (addresses.clean_name) here too,
for those stored before they were.

Speed: the body is multipart/alternative with two quoted-printable parts whose lines stay at RFC 2045's 76
characters. Encoding 60 KB of HTML per recipient would dominate the cost of a send, so Body encodes the issue's
literal text once per campaign, each placeholder standing on a line of its own between soft line breaks; a
recipient's message is those pieces joined with their own encoded values. The email package only parses the
result back when someone asks for Outgoing.message.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import email.utils
import functools
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.message import EmailMessage
from functools import cached_property
from urllib.parse import quote

import dkim

from newsletter.addresses import a_label_address, a_label_domain, clean_name
from newsletter.errors import ConfigError
from newsletter.field_placeholders import field_values
from newsletter.render import OTHER_VERSION_URL, RenderedIssue, Verbatim, escape_value
from newsletter.tokens import TokenSigner

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"


@dataclass(frozen=True)
class Mailbox:
    """A name and an address. (The email package's Address parses its argument: too slow per recipient.)"""

    name: str
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def addr_spec(self) -> str:
        """The address as the headers and the envelope write it: its domain in A-labels (ValueError if it has none)."""
        return a_label_address(self.address)

    def header(self) -> str:
        """For a From or To header: the name cleaned, quoted or RFC 2047-encoded as it needs, on one line under 998
        octets whatever it holds; the address as addr_spec."""
        return _mailbox_header(self.name, self.address)


@functools.lru_cache(maxsize=64)  # the sender's, asked for every message
def _mailbox_header(name: str, address: str) -> str:
    name = clean_name(name) or ""  # again here: a name stored before names were cleaned
    addr_spec = a_label_address(address)
    if not name:
        return addr_spec
    # formataddr refuses an address that is not ASCII (one RFC 6532 writes in UTF-8): it writes the name alone.
    return email.utils.formataddr((name, "x@x"), charset="utf-8").removesuffix("<x@x>") + f"<{addr_spec}>"


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    name: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    lang: str | None = None  # the language they read in (None: the list's first); the send picks their version by it


class _QuotedPrintableTemplate:
    """A text with placeholders, quoted-printable encoded once; fill() encodes only the values."""

    def __init__(self, parts: list, escape: Callable[[str], str]):
        self.escape = escape
        self.pieces: list[bytes | tuple[str, bytes]] = []
        for part in parts:
            if isinstance(part, str):
                self.pieces.append(_encode_literal(part))
            else:
                name, fallback = part
                # The fallback is template text (already escaped in HTML): encode it as it stands.
                self.pieces.append((name, _encode_value(fallback)))

    def fill(self, values: Mapping[str, str]) -> bytes:
        out = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            else:
                value = values.get(piece[0])
                out.append(_encode_value(self.escape(value)) if value else piece[1])
        return b"".join(out)


def _encode_literal(text: str) -> bytes:
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    encoded = _dot_safe(encoded.replace(b"\n", CRLF))
    return encoded if not encoded or encoded.endswith(CRLF) else encoded + SOFT_BREAK


def _encode_value(text: str) -> bytes:
    if not text:
        return b""
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=True, istext=False, header=False)
    return _dot_safe(encoded.replace(b"\n", CRLF)) + SOFT_BREAK


QP_LINE = 76  # RFC 2045's limit for a quoted-printable line, "=" of a soft break included


def _dot_safe(encoded: bytes) -> bytes:
    """Quoted-printable lines of which none starts with '.': such a line gets '=2E' instead (wrapped again to 76).

    Every piece of a body starts a line, so no line of a whole message starts with '.', and SMTP's DATA needs no
    dot-stuffing: the smtp transport sends the bytes as they are.
    """
    if not encoded.startswith(b".") and b"\n." not in encoded:
        return encoded
    lines = []
    for line in encoded.split(CRLF):
        while line.startswith(b"."):
            line = b"=2E" + line[1:]
            if len(line) <= QP_LINE:
                break
            cut = QP_LINE - 1  # room for the "=" of the soft break; never inside an "=XX"
            cut -= 1 if line[cut - 1 : cut] == b"=" else 2 if line[cut - 2 : cut - 1] == b"=" else 0
            lines.append(line[:cut] + b"=")
            line = line[cut:]
        lines.append(line)
    return CRLF.join(lines)


def _part_head(marker: bytes, media_type: bytes) -> bytes:
    """A part's boundary line and headers, up to the blank line before its quoted-printable UTF-8 content."""
    content_type = b"Content-Type: " + media_type + b'; charset="utf-8"'
    return CRLF.join([marker, content_type, b"Content-Transfer-Encoding: quoted-printable", b"", b""])


class Body:
    """The two parts of a campaign's messages, encoded once; body(values) is one recipient's MIME body."""

    def __init__(self, rendered: RenderedIssue):
        self.rendered = rendered
        self.text = _QuotedPrintableTemplate(rendered.text_parts, str)
        self.html = _QuotedPrintableTemplate(rendered.html_parts, escape_value)
        # "=_" never occurs in quoted-printable text, so this boundary cannot appear inside a part.
        self.boundary = "=_newsletter_" + hashlib.sha256(rendered.html.encode("utf-8")).hexdigest()[:24]
        marker = f"--{self.boundary}".encode()
        self._text_head = _part_head(marker, b"text/plain")
        self._html_head = CRLF + _part_head(marker, b"text/html")
        self._end = CRLF + marker + b"--" + CRLF

    def content_type(self) -> str:
        return f'multipart/alternative; boundary="{self.boundary}"'

    def mime(self, values: Mapping[str, str]) -> bytes:
        return self._text_head + self.text.fill(values) + self._html_head + self.html.fill(values) + self._end


@dataclass(frozen=True, eq=False)
class Outgoing:
    """One message ready to send. API transports read its fields; outbox and SMTP send to_bytes()."""

    key: str  # unique per (campaign, subscriber): ledger key, idempotency key, outbox file name
    sender: Mailbox
    recipient: Mailbox
    subject: str
    headers: dict[str, str]  # Date, Message-ID, List-Id, List-Unsubscribe, List-Unsubscribe-Post, Reply-To
    values: Mapping[str, str]  # the placeholders' values for this recipient
    body: Body
    envelope_sender: str | None = None  # MAIL FROM, where bounces go (VERP: it names the recipient); None: sender's

    @property
    def return_path(self) -> str:
        """The envelope sender an SMTP server is given (and writes as Return-Path on delivery)."""
        return self.envelope_sender or self.sender.addr_spec

    @cached_property
    def html(self) -> str:
        return self.body.rendered.fill(self.values)[0]

    @cached_property
    def text(self) -> str:
        return self.body.rendered.fill(self.values)[1]

    @property
    def message_id(self) -> str:
        return self.headers["Message-ID"]

    def to_bytes(self) -> bytes:
        """The whole message as sent: CRLF line ends, every line at most 998 octets. ASCII, but for an address whose
        local part is not (RFC 6532's UTF-8 headers); ValueError for a domain with no ASCII form."""
        lines = [
            f"From: {self.sender.header()}",
            f"To: {self.recipient.header()}",
            f"Subject: {_encode_header(self.subject)}",
            *(f"{name}: {_encode_header(value)}" for name, value in self.headers.items()),
            "MIME-Version: 1.0",
            f"Content-Type: {self.body.content_type()}",
        ]
        head = "\r\n".join(lines).encode("utf-8") + CRLF + CRLF
        return head + self.body.mime(self.values)

    @cached_property
    def message(self) -> EmailMessage:
        """The message parsed back by the email package, for whoever wants an object (tests, DKIM)."""
        return email.message_from_bytes(self.to_bytes(), policy=email.policy.default)


@functools.lru_cache(maxsize=256)  # a campaign's subject, asked for every message
def _encode_header(value: str) -> str:
    """ASCII stays as it is (a URL is never encoded); anything else becomes RFC 2047 encoded-words."""
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=998).encode(linesep="\r\n")


@dataclass(frozen=True)
class HostedUnsubscribe:
    """A provider's own unsubscribe (a transport's `unsubscribe=provider`): the footer's link is the provider's
    placeholder, which it replaces per recipient with a page of its own; the provider writes List-Unsubscribe and
    List-Unsubscribe-Post itself and keeps the suppression list that `send` reads back before sending."""

    provider: str  # "postmark": what a campaign records, so that only the same provider sends it on
    url: str  # the placeholder as written in the HTML's href and in the text part
    description: str  # what the dry run says the message carries
    fields: Mapping[str, object] = field(default_factory=dict)  # the setting that goes with it (a group id), frozen


@dataclass(frozen=True)
class Version:
    """One translation of a campaign's issue: its rendering, and its web version's URL (None: serve's archive)."""

    rendered: RenderedIssue
    view_online: str | None = None


@dataclass(frozen=True)
class Campaign:
    """What every message of one campaign shares. With `hosted`, the unsubscribe link and headers are the
    provider's: no token is signed, no List-Unsubscribe written here."""

    id: int | str
    list_slug: str
    list_name: str
    rendered: RenderedIssue
    sender: Mailbox
    reply_to: str | None
    base_url: str
    signer: TokenSigner
    unsubscribe_mailto: str | None = None
    subject_prefix: str = ""
    hosted: HostedUnsubscribe | None = None
    view_online: str | None = None  # the web version's URL when it is not base_url's archive (archive_url)
    return_path: str | None = None  # "bounces+{token}@domain": each message's envelope sender names its recipient
    # The issue's translations by language, and the list's languages (first first) that pick a member's: their own
    # when the list has it, else the list's first; the first language's (rendered) where the issue has no version
    # in it. Empty: everyone gets rendered.
    translations: Mapping[str, Version] = field(default_factory=dict)
    langs: tuple[str, ...] = ()

    @cached_property
    def body(self) -> Body:
        return Body(self.rendered)

    @cached_property
    def _versions(self) -> dict[str, tuple[RenderedIssue, Body, str, str | None]]:
        """Each language's (rendering, body encoded once, view-online URL, the other version's URL)."""
        urls = {self.rendered.path: self.view_online_url}
        urls.update({v.rendered.path: self._url_of(v) for v in self.translations.values()})
        found = {}
        for lang, rendered, body in (
            (self.rendered.lang, self.rendered, self.body),
            *((lang, v.rendered, Body(v.rendered)) for lang, v in self.translations.items()),
        ):
            other = urls.get(rendered.other_version[1]) if rendered.other_version else None
            found[lang] = (rendered, body, urls[rendered.path], other)
        return found

    def _url_of(self, version: Version) -> str:
        return version.view_online or f"{self.base_url}/archive/{version.rendered.slug}/{version.rendered.path}"

    def version_for(self, lang: str | None) -> RenderedIssue:
        """The rendering a member reading lang gets."""
        return self._version(lang)[0]

    def by_version(self, readers: Mapping[str | None, int]) -> dict[str, int]:
        """How many get each version (the first language's first), of how many read each language (None: no
        preference)."""
        counts = {lang: 0 for lang in (self.rendered.lang, *self.translations)}
        for lang, count in readers.items():
            counts[self.version_for(lang).lang] += count
        return counts

    def _version(self, lang: str | None) -> tuple[RenderedIssue, Body, str, str | None]:
        versions = self._versions
        if self.langs:
            lang = lang if lang in self.langs else self.langs[0]
        return versions.get(lang or "", None) or versions[self.rendered.lang]

    @cached_property
    def domain(self) -> str:
        """The sender's domain in A-labels, for Message-ID and List-Id."""
        return a_label_domain(self.sender.domain)

    @cached_property
    def list_id(self) -> str:
        return f"{self.list_name} <{self.list_slug}.{self.domain}>"

    @cached_property
    def view_online_url(self) -> str:
        return self.view_online or f"{self.base_url}/archive/{self.rendered.slug}/"

    def build(self, recipient: Recipient) -> Outgoing:
        """The message for one recipient, in their version: placeholder values and headers. No rendering happens
        here, and no encoding of a body: each version's is made once."""
        rendered, body, view_online_url, other_version_url = self._version(recipient.lang)
        unsubscribe_url: str  # Verbatim for the provider's own placeholder: never HTML-escaped
        if self.hosted is not None:
            token, unsubscribe_url = "", Verbatim(self.hosted.url)
        else:
            token = self.signer.sign(recipient.subscriber_id, self.list_slug)
            unsubscribe_url = f"{self.base_url}/u/{token}"
        values = {
            # As they were before fields had placeholders of their own (%%first_name%% in a frozen campaign).
            **{k: str(v) for k, v in recipient.fields.items()},
            # {{ prenom }}: %%field-prenom%%, by key, set for every one of them (the default when empty), so that
            # no field written under another name can stand in.
            **(field_values(recipient.fields, rendered.field_names) if rendered.field_names else {}),
            "name": recipient.name or "",
            "email": recipient.email,
            "unsubscribe_url": unsubscribe_url,
            "view_online_url": view_online_url,
        }
        if other_version_url is not None:
            values[OTHER_VERSION_URL] = other_version_url
        key = f"{self.id}-{recipient.subscriber_id}"
        digest = hashlib.sha256(f"{self.list_slug}:{key}".encode()).hexdigest()[:12]
        headers = {
            "Date": _date(int(time.time())),
            "Message-ID": f"<{key}.{digest}@{self.domain}>",
            "List-Id": self.list_id,
        }
        if self.translations:  # a campaign in one language writes the bytes it always has (a resumed one too)
            headers["Content-Language"] = rendered.lang
        if self.hosted is None:
            headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
            if self.unsubscribe_mailto:
                subject = quote("unsubscribe " + token)
                headers["List-Unsubscribe"] += f", <mailto:{self.unsubscribe_mailto}?subject={subject}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if self.reply_to:
            headers["Reply-To"] = self.reply_to
        envelope_sender = None
        if self.return_path and isinstance(self.id, int):
            token = self.signer.sign_return_path(self.id, recipient.subscriber_id)
            envelope_sender = a_label_address(self.return_path.replace("{token}", token))
        return Outgoing(
            key=key,
            sender=self.sender,
            # The name cleaned again (one stored before names were): every transport writes its To from this.
            recipient=Mailbox(clean_name(recipient.name) or "", recipient.email),
            subject=self.subject_prefix + rendered.subject,
            headers=headers,
            values=values,
            body=body,
            envelope_sender=envelope_sender,
        )


@dataclass(frozen=True)
class Notice:
    """A message to one person outside any campaign (a sign-up's confirmation): built, encoded and signed like a
    campaign's messages, without their list headers; marked Auto-Submitted (RFC 3834) so that nobody replies."""

    kind: str  # "confirm": in the Message-ID and the key
    rendered: RenderedIssue  # its subject and parts, with %%placeholders%%
    sender: Mailbox
    reply_to: str | None = None

    @cached_property
    def body(self) -> Body:
        return Body(self.rendered)

    def build(self, address: str, name: str | None, key: str, values: Mapping[str, str]) -> Outgoing:
        key = f"{self.kind}-{key}"
        digest = hashlib.sha256(f"{address}:{key}".encode()).hexdigest()[:12]
        headers = {
            "Date": _date(int(time.time())),
            "Message-ID": f"<{key}.{digest}@{a_label_domain(self.sender.domain)}>",
            "Auto-Submitted": "auto-generated",
        }
        if self.reply_to:
            headers["Reply-To"] = self.reply_to
        return Outgoing(
            key,
            self.sender,
            Mailbox(clean_name(name) or "", address),
            self.rendered.subject,
            headers,
            {"name": name or "", "email": address, **values},
            self.body,
        )


@functools.lru_cache(maxsize=2)  # formatted once a second: it cost more than the rest of a notice's headers
def _date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def parse_mailbox(text: str) -> Mailbox:
    """'Name <a@b.org>' -> Mailbox; raise ConfigError for anything else."""
    name, address = email.utils.parseaddr(text)
    if "@" not in address:
        raise ConfigError(f"'{text}' is not an email address; write it as \"Name <news@example.org>\"")
    return Mailbox(name, address)


class DkimSigner:
    """DKIM-signs messages (relaxed/relaxed) for the smtp transport; the List-Unsubscribe headers are signed too."""

    SIGNED_HEADERS = tuple(
        b"from to subject date message-id reply-to mime-version content-type list-id list-unsubscribe "
        b"list-unsubscribe-post".split()
    )

    def __init__(self, domain: str, selector: str, private_key: bytes):
        self.domain, self.selector, self.private_key = domain.encode(), selector.encode(), private_key

    def sign(self, message: bytes) -> bytes:
        signature = dkim.sign(
            message,
            self.selector,
            self.domain,
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(self.SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return signature + message
