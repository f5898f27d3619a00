"""newsletter.toml and the environment.

The file holds what may be shared in a repository: publisher, sender, brand, URLs. Secrets (SMTP passwords, API
tokens, the signing key) are read from the environment only, by the modules that need them.
Environment overrides: NEWSLETTER_BASE_URL, NEWSLETTER_ASSET_BASE_URL, NEWSLETTER_ARCHIVE_URL.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from newsletter.errors import ConfigError, Diagnostic
from newsletter.i18n import LANGUAGES
from newsletter.phones import DEFAULT_REGION, REGION_BY_LANG, is_region
from newsletter.segments import NAME, checked_segment

CONFIG_FILE = "newsletter.toml"
# The settings the environment overrides, by the variable that does.
OVERRIDES = {
    "base_url": "NEWSLETTER_BASE_URL",
    "asset_base_url": "NEWSLETTER_ASSET_BASE_URL",
    "archive_url": "NEWSLETTER_ARCHIVE_URL",
}

# MRML copies colours into bgcolor attributes that Outlook reads; 6-digit hex is what both render the same.
HexColor = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$", description="6-digit hex colour, e.g. #00677f")]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Publisher(_Table):
    name: str | None = Field(None, description="Who publishes the newsletter; shown in the footer.")
    postal_address: str | None = Field(
        None, description="Postal address shown in every footer (required by CASL and CAN-SPAM)."
    )
    website: str | None = None
    email: str | None = Field(None, description="Contact address; the web version's unsubscribe link writes here.")


class Sender(_Table):
    from_: str | None = Field(None, alias="from", description='Default From, e.g. "Name <news@example.org>".')
    reply_to: str | None = None


class Footer(_Table):
    reason: dict[str, str] = Field(
        default_factory=dict,
        description="Why the reader receives this, per language ({fr = '…', en = '…'}); a default otherwise.",
    )


class Brand(_Table):
    primary_color: HexColor = "#00677f"
    text_color: HexColor = "#24292f"
    muted_color: HexColor = "#5b6770"
    background_color: HexColor = "#eef1f3"
    content_background_color: HexColor = "#ffffff"
    callout_background_color: HexColor = "#e8f3f5"
    button_text_color: HexColor = "#ffffff"
    # A web-safe stack: no web-font <link>, so nothing is fetched when the email opens.
    font_family: str = "Helvetica, Arial, sans-serif"


DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '2d' (or a number of seconds) -> seconds; ValueError for anything else."""
    text = str(text).strip()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    found = DURATION.fullmatch(text)
    if found is None:
        raise ValueError(f'\'{text}\' is not a duration; write e.g. "90s", "30m", "6h" or "2d"')
    return float(found.group(1)) * DURATION_UNITS[found.group(2)]


def _checked_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_checked_duration)]  # a setting such as "90s", "30m", "6h" or "2d"
Segment = Annotated[str, AfterValidator(checked_segment)]  # a segment's text, parsed as the file loads


class Sending(_Table):
    rate: float | None = Field(
        None, gt=0, description="Messages per second at most, for a campaign as a whole (the provider's limit)."
    )
    per_hour: int | None = Field(None, gt=0, description="Messages in any hour at most, for a campaign as a whole.")
    concurrency: int = Field(4, ge=1, le=64, description="Batches in flight at once, in each sending process.")
    max_attempts: int = Field(5, ge=1, le=50, description="Tries per message before it counts as failed.")
    lease: float = Field(
        60, ge=1, le=3600, description="Seconds a sender holds a claimed batch before another may take it over."
    )
    max_lateness: Duration = Field(
        "6h", description='How late a scheduled campaign may still start ("90s", "30m", "6h", "2d"); then it expires.'
    )

    unsubscribe_mailto: str | None = Field(
        None, description="An address that unsubscribes whoever writes to it, added to List-Unsubscribe."
    )


RETURN_PATH_TOKEN = "{token}"


def _checked_return_path(text: str) -> str:
    local, at, domain = text.rpartition("@")
    if not at or not domain or "." not in domain or local.count(RETURN_PATH_TOKEN) != 1 or " " in text:
        raise ValueError(
            f"'{text}' is not a return path: write the bounce address with {RETURN_PATH_TOKEN} in its local part, "
            'e.g. "bounces+{token}@example.org"'
        )
    return text


def _checked_mailbox(text: str) -> str:
    scheme = text.partition("://")[0].lower()
    if scheme not in ("imap", "imaps", "maildir"):
        raise ValueError(f"'{text}' is not a mailbox: write imaps://USER@HOST/INBOX or maildir:///path/to/Maildir")
    return text


class Bounces(_Table):
    return_path: Annotated[str, AfterValidator(_checked_return_path)] | None = Field(
        None,
        description="The envelope sender of every SMTP message, with a signed token naming its campaign and "
        'recipient (VERP), e.g. "bounces+{token}@example.org": a bounce is then matched even when it keeps '
        "nothing of the message. Its domain's SPF record must allow the SMTP server.",
    )
    mailbox: Annotated[str, AfterValidator(_checked_mailbox)] | None = Field(
        None,
        description="Where the bounces arrive, read by `newsletter bounces scan` and the worker: "
        '"imaps://USER@HOST/INBOX" (NEWSLETTER_BOUNCES_PASSWORD or NEWSLETTER_BOUNCES_OAUTH2_TOKEN in the '
        'environment) or "maildir:///var/mail/bounces".',
    )
    processed: str = Field(
        "Processed", min_length=1, description="The folder a scan moves what it acted on into (created if missing)."
    )
    soft_limit: int = Field(
        3, ge=1, le=100, description="Soft bounces, from distinct campaigns, that mark a member bounced."
    )
    soft_window: Duration = Field("30d", description="How far back the soft bounces are counted.")
    every: Duration = Field("5m", description="How often `newsletter worker` scans the mailbox.")


class Dkim(_Table):
    domain: str | None = Field(None, description="d= of the DKIM signature (smtp transport only).")
    selector: str | None = Field(None, description="s= of the signature; the key is NEWSLETTER_DKIM_PRIVATE_KEY.")


class ListSettings(_Table):
    subscribe: bool = Field(False, description="Open the list to sign-ups: GET/POST /subscribe/<list> on serve.")
    title: str | dict[str, str] | None = Field(
        None,
        description="The list's name on the pages and in the confirmation email, or one per language "
        "({fr = '…', en = '…'}): the first language's is its name in the store and in List-Id.",
    )
    lang: str | None = Field(None, description=f"The pages' and the email's language: {', '.join(LANGUAGES)}.")
    langs: list[str] | None = Field(
        None,
        description='The list\'s languages, its first language first: ["fr", "en"]. Each member gets theirs '
        "(the first when they have none); the sign-up form offers them, the preferences page switches them.",
    )
    consent: str | dict[str, str] | None = Field(
        None,
        description="The consent sentence shown above the button, or one per language ({fr = '…', en = '…'}); "
        "a default per language otherwise.",
    )
    segments: dict[str, Segment] = Field(
        default_factory=dict,
        description='Named parts of the list, for `send --segment NAME`: est = "tag:rimouski or tag:matane" '
        "(the language: newsletter/segments.py).",
    )
    welcome: str | None = Field(
        None,
        description="An issue in issues/ (its slug) that each person receives once, when they confirm a sign-up "
        "(or by `subscribers add --welcome`, `subscribers import --welcome`).",
    )

    @field_validator("welcome")
    @classmethod
    def _welcome(cls, value: str | None) -> str | None:
        from newsletter.workspace import is_slug  # workspace imports this module

        if value is not None and not is_slug(value):
            raise ValueError(f"'{value}' cannot name an issue: give the slug of a folder in issues/, e.g. bienvenue")
        return value

    @field_validator("segments")
    @classmethod
    def _segment_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not NAME.fullmatch(name):
                raise ValueError(f"'{name}' cannot name a segment: a name is one word (letters, digits, - and _)")
        return value

    @field_validator("lang")
    @classmethod
    def _lang(cls, value: str | None) -> str | None:
        if value is not None and value not in LANGUAGES:
            raise ValueError(f"'{value}' is not a language of this tool; use one of {', '.join(LANGUAGES)}")
        return value

    @field_validator("langs")
    @classmethod
    def _langs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError('name at least one language, the list\'s first first: langs = ["fr", "en"]')
        for lang in value:
            if lang not in LANGUAGES:
                raise ValueError(f"'{lang}' is not a language of this tool; use {', '.join(LANGUAGES)}")
        if len(set(value)) < len(value):
            raise ValueError(f"{value}: name each language once")
        return value

    @field_validator("consent", "title")
    @classmethod
    def _per_language(cls, value: str | dict[str, str] | None, info: ValidationInfo) -> str | dict[str, str] | None:
        for lang in value if isinstance(value, dict) else ():
            if lang not in LANGUAGES:
                raise ValueError(f"{info.field_name}.{lang}: not a language of this tool; use {', '.join(LANGUAGES)}")
        return value

    def consent_in(self, lang: str) -> str | None:
        """The consent sentence written for this language (one sentence for all, or the table's), else None."""
        return self.consent.get(lang) if isinstance(self.consent, dict) else self.consent

    @model_validator(mode="after")
    def _first_language(self) -> ListSettings:
        if self.lang and self.langs and self.lang != self.langs[0]:
            raise ValueError(
                f'lang = "{self.lang}" but langs starts with "{self.langs[0]}": drop lang (langs\' first is the '
                "list's first language) or make them agree"
            )
        return self


def _checked_proxy(text: str) -> str:
    try:
        ipaddress.ip_network(text)  # a bare address is its own network: 10.0.0.7 is 10.0.0.7/32
    except ValueError:
        raise ValueError(
            f'\'{text}\' is not an IP address or network; write e.g. "127.0.0.1" or "10.0.0.0/8" '
            "(a network by its first address)"
        ) from None
    return text


Proxy = Annotated[str, AfterValidator(_checked_proxy)]  # an IP address or a network (CIDR) of one


class Serve(_Table):
    signups_per_block: int = Field(
        100, ge=1, description="Sign-ups an address block (IPv4 /24, IPv6 /48) may make in an hour, per serve process."
    )
    purge_pending_after: Duration | None = Field(
        None,
        description='Remove the sign-ups never confirmed this long after their last request ("7d", "30d"), '
        "every hour; by default never (`subscribers purge-pending` does it on demand).",
    )
    trusted_proxies: list[Proxy] = Field(
        default_factory=list,
        description="The proxies in front of serve whose X-Forwarded-For and X-Forwarded-Proto "
        'are believed, as addresses or networks (["127.0.0.1"], ["10.0.0.0/8"]); by default none: the limits count '
        "by the connecting address.",
    )


class Approval(_Table):
    approvers: list[str] = Field(
        default_factory=list,
        description="Who must approve a send or a schedule made through the MCP server (and `send --no-dry-run` "
        'without --no-approval), by address: ["direction@example.org"]. Empty: no approval.',
    )
    required: int = Field(1, ge=1, description="How many of the approvers must approve; one decline declines.")
    expires: Duration = Field("48h", description='How long an approval request stays valid ("48h", "7d").')

    @field_validator("approvers")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        from newsletter.addresses import normalize_address

        checked = []
        for text in value:
            try:
                checked.append(normalize_address(text))
            except ValueError as exc:
                raise ValueError(f"'{text}' is not an email address ({exc})") from None
        return list(dict.fromkeys(checked))

    @model_validator(mode="after")
    def _enough(self) -> Approval:
        if self.approvers and self.required > len(self.approvers):
            raise ValueError(f"required = {self.required} but only {len(self.approvers)} approvers are listed")
        return self

    @property
    def lifetime(self) -> dt.timedelta:
        return dt.timedelta(seconds=parse_duration(self.expires))


class Config(_Table):
    name: str = Field("Newsletter", description="The newsletter's name (archive title, List-Id label).")
    lang: str = Field("fr", description=f"Default language of new issues: one of {', '.join(LANGUAGES)}.")
    timezone: str | None = Field(
        None,
        description="IANA time zone of `send --at` times and of the times shown, e.g. America/Toronto "
        "(default: the machine's).",
    )
    phone_region: str | None = Field(
        None,
        description="Where a phone number written without +country code is (ISO 3166 code: CA, FR, BE, "
        "CH…); default: CA for both languages.",
    )
    base_url: str | None = Field(None, description="Public URL of `newsletter serve` (unsubscribe links).")
    asset_base_url: str | None = Field(None, description="Public URL where the build/ folder is published.")
    archive_url: str | None = Field(
        None,
        description="Public URL where the folder `newsletter archive` writes is published; the web version's "
        "view-online link is then {archive_url}/{slug}/ (else {base_url}/archive/{slug}/).",
    )
    sender: Sender = Field(default_factory=Sender)
    publisher: Publisher = Field(default_factory=Publisher)
    footer: Footer = Field(default_factory=Footer)
    brand: Brand = Field(default_factory=Brand)
    sending: Sending = Field(default_factory=Sending)
    dkim: Dkim = Field(default_factory=Dkim)
    bounces: Bounces = Field(default_factory=Bounces)
    serve: Serve = Field(default_factory=Serve)
    approval: Approval = Field(default_factory=Approval)
    lists: dict[str, ListSettings] = Field(
        default_factory=dict,
        description="Per list, by slug: [lists.alliances] subscribe = true, title, lang or langs, consent, welcome.",
    )

    # Where it was read from; not part of the file.
    file: Path | None = Field(None, exclude=True)

    @field_validator("lists")
    @classmethod
    def _slugs(cls, value: dict[str, ListSettings]) -> dict[str, ListSettings]:
        from newsletter.slugs import LIST_SLUG

        for slug in value:
            if not LIST_SLUG.fullmatch(slug):
                raise ValueError(f"[lists.{slug}]: a list is named by its slug (lowercase letters, digits, hyphens)")
        return value

    def list_settings(self, slug: str) -> ListSettings:
        return self.lists.get(slug) or ListSettings()

    def list_title(self, slug: str, lang: str | None = None) -> str | None:
        """The list's name ([lists.SLUG] title) in lang (None: its first language), else in its first language,
        else None: one title is every language's."""
        title = self.list_settings(slug).title
        if not isinstance(title, dict):
            return title
        first = self.list_languages(slug)[0]
        return title.get(lang or first) or title.get(first) or next(iter(title.values()), None)

    def list_languages(self, slug: str) -> tuple[str, ...]:
        """The languages a list is sent in, its first language first: [lists.SLUG] langs, else its lang, else the
        newsletter's. What every part asks (the pages, the sign-up form, a send)."""
        settings = self.list_settings(slug)
        if settings.langs:
            return tuple(settings.langs)
        return (settings.lang or self.lang,)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone '{value}'; use an IANA name such as America/Toronto") from None
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not is_region(value):
            raise ValueError(f"'{value}' is not a region of phone numbers; write its ISO 3166 code, e.g. CA or FR")
        return value

    @property
    def region(self) -> str:
        """The region of a phone number written without its country code."""
        return self.phone_region or REGION_BY_LANG.get(self.lang, DEFAULT_REGION)

    @property
    def zone(self) -> dt.tzinfo | None:
        """The configured time zone; None means the machine's."""
        return ZoneInfo(self.timezone) if self.timezone else None

    def footer_reason(self, lang: str) -> str | None:
        return self.footer.reason.get(lang)


def reader_language(config: Config, slug: str, lang: str | None) -> str:
    """The language a member of a list reads it in: their own when the list offers it, else the list's first."""
    offered = config.list_languages(slug)
    return lang if lang in offered else offered[0]


def load_config(root: Path) -> Config:
    """Read root/newsletter.toml (the defaults when it is absent) and apply the environment overrides."""
    path = root / CONFIG_FILE
    data: dict = {}
    text = ""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}; fix the TOML syntax there") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(part) for part in err["loc"])
        line = toml_line(text, loc)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {'.'.join(loc)}: {err['msg']}") from None
    config.file = path if path.is_file() else None
    for field, variable in OVERRIDES.items():
        if os.environ.get(variable):
            setattr(config, field, os.environ[variable])
    config.base_url = config.base_url.rstrip("/") if config.base_url else None
    config.asset_base_url = config.asset_base_url.rstrip("/") if config.asset_base_url else None
    config.archive_url = config.archive_url.rstrip("/") if config.archive_url else None
    return config


def config_diagnostics(config: Config) -> list[Diagnostic]:
    """Return what newsletter.toml lacks for a lawful email (CASL): a publisher, its postal address, and an email
    address or a website where it can be reached."""
    file = str(config.file) if config.file else CONFIG_FILE
    text = config.file.read_text(encoding="utf-8") if config.file else ""
    missing = [
        (key, f'no {what}: set [publisher] {key} = "…" (every footer must identify the sender with a postal address)')
        for key, what in (("name", "publisher name"), ("postal_address", "postal address"))
        if not getattr(config.publisher, key)
    ]
    if not (config.publisher.email or config.publisher.website):
        missing.append(
            (
                "email",
                'no way to reach the publisher: set [publisher] email = "…" or website = "…" (every footer '
                "must say how to contact the sender, and the web version's unsubscribe link goes there)",
            )
        )
    line = toml_line(text, ("publisher",)) or None
    return [
        Diagnostic(
            "error", "config-missing", f"newsletter.toml has {why}", file=file, line=line, path=f"publisher.{key}"
        )
        for key, why in missing
    ]


def toml_line(text: str, loc: tuple[str, ...]) -> int:
    """Return the 1-based line of the key at loc in TOML text (its table header when the key is absent), or 0."""
    table: tuple[str, ...] = ()
    best = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if header := re.fullmatch(r"\[([^\[\]]+)\]", line):
            table = tuple(part.strip() for part in header.group(1).split("."))
            if table == loc[: len(table)] and len(table) > 0 and not best:
                best = number
            continue
        key = re.match(r"([A-Za-z0-9_\-\"]+)\s*=", line)
        if key and len(loc) > len(table) and (*table, key.group(1).strip('"')) == loc[: len(table) + 1]:
            return number
    return best
