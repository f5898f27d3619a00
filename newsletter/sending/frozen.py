"""A campaign's frozen content: what all its messages share, fixed when the campaign is made (`freeze`), so that any
sender on any host builds the same messages from the store alone, and the archive shows what was sent.

The store keeps it as JSON in `campaigns.content` (`FrozenCampaign.to_json`); every reader goes through
`FrozenCampaign.from_json`. The document names its format (`"format": 1`). One without it was frozen before formats
were numbered and is format 1 as well, holding the keys its version wrote (`absent`: those it predates). A reader
refuses a format newer than it knows (`NewerContentFormat`) rather than build messages it might get wrong.
Format 2 is format 1 whose parts hold a subscriber's field as %%field-KEY%% (field_placeholders.py), which a
reader of format 1 would send as it stands, or that goes to a segment of its list; other content is still written
as format 1. Format 3 holds an issue's translations (`versions`: {lang: {subject, html, text, path, view_online,
calendars}}, and `langs`, the list's languages, which pick each member's): a reader of format 2 would send everyone
the first language, so it refuses it. A campaign in one language writes neither key: its document and its
message_digest are what they were.

Changing what is frozen: bump FORMAT, make from_json read every format down to OLDEST_READ, and keep
`message_digest` the same for the content already stored (an agent's code and a resumed campaign hash it).

This module imports no send path, transport nor check: `newsletter serve` and `newsletter archive` read it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from newsletter.errors import NewsletterError
from newsletter.message import Campaign, HostedUnsubscribe, Mailbox, Version
from newsletter.render import RenderedIssue
from newsletter.tokens import TokenSigner

if TYPE_CHECKING:  # only named in annotations: importing the store would bring SQLAlchemy
    from newsletter.config import Config
    from newsletter.store import CampaignRow, ListRow

LOCAL_BASE_URL = "http://127.0.0.1:8000"  # where `newsletter serve` listens by default
FORMAT_KEY = "format"
OLDEST_READ = 1  # the oldest format this version reads
# Keys format 1 gained over time, in the order they came: content frozen before one of them lacks it.
LATER_KEYS = (
    "hosted_unsubscribe",
    "view_online",
    "images",
    "images_url",
    "calendars",
    "segment",
    "segment_name",
    "return_path",
)
# What the content holds that is not in its messages: how fast they go, and where they may go.
NOT_IN_MESSAGES = ("rate", "per_hour", "local_only")


class NewerContentFormat(NewsletterError):
    """Content frozen by a later version of newsletter, in a format this one cannot read: nothing of it is sent."""

    def __init__(self, found: int, campaign_id: int | None = None):
        self.found, self.campaign_id = found, campaign_id
        reads = str(FrozenCampaign.FORMAT)
        if OLDEST_READ != FrozenCampaign.FORMAT:
            reads = f"{OLDEST_READ} to {FrozenCampaign.FORMAT}"
        self.reason = (
            f"frozen by a newer newsletter (content format {found}; this one reads {reads}): "
            "upgrade newsletter on this host"
        )
        super().__init__(f"campaign {campaign_id} was {self.reason}" if campaign_id is not None else self.reason)


@dataclass(frozen=True)
class FrozenCampaign:
    """Everything a campaign's messages are built from, and the limits its senders keep to."""

    FORMAT: ClassVar[int] = 3  # the newest this version writes (content_format: 1 unless fields, a segment or versions)

    slug: str
    lang: str
    subject: str
    html: str  # both parts rendered, recipients' placeholders still in
    text: str
    sender: Mailbox
    reply_to: str | None
    list_slug: str
    list_name: str
    base_url: str  # where the unsubscribe links go (`newsletter serve`)
    unsubscribe_mailto: str | None
    hosted_unsubscribe: HostedUnsubscribe | None  # the provider's, when the transport hosts the unsubscribe
    view_online: str | None  # the footer's link to the web version
    local_only: str | None  # why its messages must not leave the machine that made it, or None
    rate: float | None  # messages per second, for the whole campaign
    per_hour: int | None
    images: dict[str, str] | None  # each image's SHA-256 by its name under images/; None: frozen before images were
    calendars: dict[str, str]  # each event's .ics, which the archive publishes as sent
    images_url: str | None  # where its images are linked from, which the archive's copy links to images/ instead
    segment: str | None = None  # the part of the list it goes to (segments.parse's canonical text); None: all of it
    segment_name: str | None = None  # the name newsletter.toml gives that segment, if it was given by name
    # "bounces+{token}@domain" ([bounces] return_path): the SMTP envelope sender, each naming its recipient (VERP).
    # Not a format of its own: a reader that ignores it sends from the From address, and bounces are still matched
    # by the Message-ID they quote.
    return_path: str | None = None
    absent: frozenset[str] = field(default=frozenset())  # LATER_KEYS its document predates
    # The issue's other versions by language (a translation the list's languages include), and the list's languages
    # (first first), which pick each member's version (message.Campaign.build). Empty: one language, as before.
    versions: Mapping[str, FrozenVersion] = field(default_factory=dict)
    langs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The document the store keeps: read back by from_json as this same content."""
        hosted = self.hosted_unsubscribe
        document: dict[str, Any] = {
            FORMAT_KEY: 3 if self.versions else content_format(self.html, self.text, self.segment),
            "slug": self.slug,
            "lang": self.lang,
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "sender": {"name": self.sender.name, "address": self.sender.address},
            "reply_to": self.reply_to,
            "list_slug": self.list_slug,
            "list_name": self.list_name,
            "base_url": self.base_url,
            "unsubscribe_mailto": self.unsubscribe_mailto,
            "hosted_unsubscribe": None if hosted is None else _hosted_json(hosted),
            "view_online": self.view_online,
            "local_only": self.local_only,
            "rate": self.rate,
            "per_hour": self.per_hour,
            "images": None if self.images is None else dict(self.images),
            "calendars": dict(self.calendars),
            "images_url": self.images_url,
            "segment": self.segment,
            "segment_name": self.segment_name,
            "return_path": self.return_path,
        }
        for key in self.absent:
            del document[key]
        if self.versions:  # only then: a campaign in one language keeps its document's bytes
            document["langs"] = list(self.langs)
            document["versions"] = {lang: version.to_json() for lang, version in self.versions.items()}
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any], *, campaign_id: int | None = None) -> FrozenCampaign:
        """The content of a stored document; NewerContentFormat (naming campaign_id) when a later version froze it."""
        found = document.get(FORMAT_KEY, 1)  # unnumbered: frozen before formats were, which is format 1
        if not isinstance(found, int) or found < OLDEST_READ:
            whose = f"campaign {campaign_id}'s" if campaign_id is not None else "this"
            raise NewsletterError(f"{whose} frozen content has an unknown format ({found!r})")
        if found > cls.FORMAT:
            raise NewerContentFormat(found, campaign_id)
        hosted = document.get("hosted_unsubscribe")
        images = document.get("images")
        return cls(
            slug=document["slug"],
            lang=document["lang"],
            subject=document["subject"],
            html=document["html"],
            text=document["text"],
            sender=Mailbox(document["sender"]["name"], document["sender"]["address"]),
            reply_to=document["reply_to"],
            list_slug=document["list_slug"],
            list_name=document["list_name"],
            base_url=document["base_url"],
            unsubscribe_mailto=document["unsubscribe_mailto"],
            hosted_unsubscribe=HostedUnsubscribe(**hosted) if hosted else None,
            view_online=document.get("view_online"),
            local_only=document.get("local_only"),
            rate=document.get("rate"),
            per_hour=document.get("per_hour"),
            images=None if images is None else dict(images),
            calendars=dict(document.get("calendars") or {}),
            images_url=document.get("images_url"),
            segment=document.get("segment"),
            segment_name=document.get("segment_name"),
            return_path=document.get("return_path"),
            absent=frozenset(key for key in LATER_KEYS if key not in document),
            versions={lang: FrozenVersion.from_json(v) for lang, v in (document.get("versions") or {}).items()},
            langs=tuple(document.get("langs") or ()),
        )

    @classmethod
    def of(cls, row: CampaignRow) -> FrozenCampaign:
        """A campaign's frozen content (the caller checked it has some)."""
        return cls.from_json(row.content or {}, campaign_id=row.id)

    def message_digest(self) -> str:
        """What an agent's confirmation code binds: every byte a campaign's messages are made of (subject, both
        parts, sender, reply-to, the list's name and id, links, unsubscribe, and each image's bytes through its
        digest). The format is left out: the same messages have the same digest whichever version froze them."""
        made_of = {k: v for k, v in self.to_json().items() if k not in NOT_IN_MESSAGES and k != FORMAT_KEY}
        return hashlib.sha256(json.dumps(made_of, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    @property
    def from_shown(self) -> str:
        """The sender as a person reads it: Name <address>."""
        return f"{self.sender.name} <{self.sender.address}>" if self.sender.name else self.sender.address

    def campaign(self, campaign_id: int | str, signer: TokenSigner, subject_prefix: str = "") -> Campaign:
        """The message builder of this content (no issue files needed): each version's body is encoded once."""
        first = next(iter(self.versions), None)
        other = (first, self.versions[first].path) if first is not None else None
        rendered = RenderedIssue(self.slug, self.lang, self.subject, "", self.html, self.text, {}, other_version=other)
        translations = {
            lang: Version(
                RenderedIssue(
                    self.slug, lang, v.subject, "", v.html, v.text, {}, path=v.path, other_version=(self.lang, "")
                ),
                v.view_online,
            )
            for lang, v in self.versions.items()
        }
        return Campaign(
            id=campaign_id,
            list_slug=self.list_slug,
            list_name=self.list_name,
            rendered=rendered,
            sender=self.sender,
            reply_to=self.reply_to,
            base_url=self.base_url,
            signer=signer,
            unsubscribe_mailto=self.unsubscribe_mailto,
            subject_prefix=subject_prefix,
            hosted=self.hosted_unsubscribe,
            view_online=self.view_online,
            return_path=self.return_path,
            translations=translations,
            langs=self.langs,
        )


@dataclass(frozen=True)
class FrozenVersion:
    """One translation of a campaign's issue as frozen: what its messages differ in from the first language's."""

    subject: str
    html: str
    text: str
    path: str  # its web version's place in the issue's ("en/")
    view_online: str | None  # its web version's URL under archive_url, or None (serve's /archive/SLUG/PATH)
    calendars: dict[str, str]  # its events' .ics by name, published under its path

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "path": self.path,
            "view_online": self.view_online,
            "calendars": dict(self.calendars),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FrozenVersion:
        return cls(
            subject=document["subject"],
            html=document["html"],
            text=document["text"],
            path=document["path"],
            view_online=document.get("view_online"),
            calendars=dict(document.get("calendars") or {}),
        )


def freeze(
    config: Config,
    rendered: RenderedIssue,
    mailing_list: ListRow,
    *,
    sender: Mailbox,
    reply_to: str | None,
    hosted: HostedUnsubscribe | None,
    local_only: str | None,
    segment: str | None = None,
    segment_name: str | None = None,
    translations: Mapping[str, RenderedIssue] | None = None,
) -> FrozenCampaign:
    """What a campaign of this rendered issue (and its translations, by language) to this list freezes now: the
    translations in the list's languages only, which are the only ones its members can be given."""
    langs = config.list_languages(mailing_list.slug)
    sent = {lang: t for lang, t in (translations or {}).items() if lang in langs and lang != rendered.lang}
    versions = {
        lang: FrozenVersion(
            subject=t.subject,
            html=t.html,
            text=t.text,
            path=t.path,
            view_online=f"{config.archive_url}/{t.slug}/{t.path}" if config.archive_url else None,
            calendars=dict(t.calendars),
        )
        for lang, t in sent.items()
    }
    return FrozenCampaign(
        slug=rendered.slug,
        lang=rendered.lang,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        sender=sender,
        reply_to=reply_to,
        list_slug=mailing_list.slug,
        list_name=mailing_list.title(config.name),
        base_url=config.base_url or LOCAL_BASE_URL,
        unsubscribe_mailto=config.sending.unsubscribe_mailto,
        hosted_unsubscribe=hosted,
        view_online=f"{config.archive_url}/{rendered.slug}/{rendered.path}" if config.archive_url else None,
        local_only=local_only,
        rate=config.sending.rate,
        per_hour=config.sending.per_hour,
        images=image_digests(rendered, *sent.values()),
        calendars=dict(rendered.calendars),
        images_url=f"{config.asset_base_url}/{rendered.slug}/images/" if config.asset_base_url else None,
        segment=segment,
        segment_name=segment_name,
        return_path=config.bounces.return_path,
        versions=versions,
        langs=langs if versions else (),
    )


def frozen_segment(document: Mapping[str, Any] | None) -> dict[str, str | None] | None:
    """The segment a campaign goes to, {"name", "expression"}, from its frozen document; None: the whole list."""
    if not document or not document.get("segment"):
        return None
    return {"name": document.get("segment_name"), "expression": document["segment"]}


def frozen_subjects(document: Mapping[str, Any] | None) -> dict[str, str]:
    """A campaign in several languages: each version's subject by language, the first language's first, from its
    frozen document; else empty."""
    versions = (document or {}).get("versions") or {}
    if not versions or document is None:
        return {}
    return {document["lang"]: document["subject"], **{lang: v["subject"] for lang, v in versions.items()}}


def content_format(html: str, text: str, segment: str | None = None) -> int:
    """The format content is written in: 2 when its parts hold a field's placeholder (an older reader would send
    it as it stands) or it goes to a segment (an older reader would not know it goes to part of the list only),
    else 1, which every version reads."""
    parts = RenderedIssue("", "", "", "", html, text, {})
    return 2 if parts.field_names or segment else 1


def content_hash(rendered: RenderedIssue, translations: Mapping[str, RenderedIssue] | None = None) -> str:
    """What identifies a campaign's content: its subject and both parts, placeholders still in, and each
    translation's (by language) after them; without translations, what it always was."""
    parts = [rendered.subject, rendered.html, rendered.text]
    for lang, version in sorted((translations or {}).items()):
        parts += [lang, version.subject, version.html, version.text]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def thaw(row: CampaignRow, signer: TokenSigner) -> Campaign:
    """The message builder of a campaign, from its frozen content alone."""
    return FrozenCampaign.of(row).campaign(row.id, signer)


def image_digests(rendered: RenderedIssue, *translations: RenderedIssue) -> dict[str, str]:
    """The SHA-256 of each image the issue shows (in any of its versions given), by its name under images/: what
    its messages and its archive pages show, bound by an agent's code and checked by the archive before it serves a
    file."""
    images = {name: path for version in (rendered, *translations) for name, path in version.images.items()}
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in sorted(images.items())}


def _hosted_json(hosted: HostedUnsubscribe) -> dict[str, Any]:
    return {
        "provider": hosted.provider,
        "url": hosted.url,
        "description": hosted.description,
        "fields": dict(hosted.fields),
    }
