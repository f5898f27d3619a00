"""What every transport shares: the Outcome of one message, the Transport interface and its optional capabilities
(each a protocol: SendsEach, Preflights, HostsUnsubscribe, SuppressionSource), the WebhookHandler a provider's
webhooks implement, and the DSN that picks a transport.

A transport takes a batch of messages and returns one Outcome per message, in order. A problem with one
recipient is an Outcome, never an exception; send_batch raises TransportError only when nothing can work
(credentials refused, the server unreachable by configuration), and the runner then stops with that message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Outgoing
from newsletter.render import Verbatim

Status = Literal["sent", "retry", "failed"]


@dataclass(frozen=True)
class Outcome:
    """What became of one message.

    status: "sent"   accepted by the server or provider (provider_id is its message id when it gives one);
            "retry"  not sent this time, try again later (after retry_after seconds when the server said);
            "failed" will never be sent as it is (reason says why, for the user).
    An answer that does not name a message leaves it "retry": unknown never counts as sent.
    bounce: the recipient's address is permanently undeliverable (hard bounce): the membership is marked bounced.
    """

    status: Status
    provider_id: str | None = None
    retry_after: float | None = None
    reason: str | None = None
    bounce: bool = False

    @classmethod
    def sent(cls, provider_id: str | None = None) -> Outcome:
        return cls("sent", provider_id=provider_id)

    @classmethod
    def retry(cls, reason: str, retry_after: float | None = None) -> Outcome:
        return cls("retry", reason=reason, retry_after=retry_after)

    @classmethod
    def failed(cls, reason: str, *, bounce: bool = False) -> Outcome:
        return cls("failed", reason=reason, bounce=bounce)


EventKind = Literal["bounced", "complained", "unsubscribed"]


@dataclass(frozen=True)
class DeliveryEvent:
    """What a provider's webhook says about one recipient, reduced to what changes a membership.

    kind: "bounced"      a permanent (hard) bounce: the address is undeliverable (soft bounces are not events);
          "complained"   the recipient marked the message as spam;
          "unsubscribed" the recipient unsubscribed through the provider (its link or its List-Unsubscribe).
    key is our ledger key (campaign-subscriber) when the provider echoes it back (metadata, tags, custom args);
    without it the event applies to the address on every list.
    """

    kind: EventKind
    email: str
    provider_id: str | None = None
    at: datetime | None = None
    detail: str = ""  # the provider's words, for the event log: "hard bounce: 550 5.1.1 user unknown"
    key: str | None = None


Record = Callable[[int, Outcome], Awaitable[None]]  # send_each's callback: the outcome of messages[index]


class TransportError(NewsletterError):
    """Nothing can be sent through this transport as configured (e.g. credentials refused): stop the run."""


@runtime_checkable
class Transport(Protocol):
    """What every transport does: send a batch, one Outcome per message. The optional capabilities below are
    protocols of their own, each checked with isinstance (never getattr) where it is used."""

    scheme: ClassVar[str]  # "postmark+api"
    max_batch: ClassVar[int]  # the provider's documented batch size; 1 where it has none

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Send the messages; return one Outcome per message, in the same order."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SendsEach(Protocol):
    """A transport that reports each message as it goes (smtp): `await record(index, outcome)` before it hands its
    connection the message after next (the runner's guarantee, campaign.py)."""

    async def send_each(self, messages: Sequence[Outgoing], record: Record) -> None: ...


@runtime_checkable
class Preflights(Protocol):
    """A transport that checks the provider's account before a campaign's first message, and refuses
    (NewsletterError) one set up so that the messages would be wrong, e.g. a stream adding a second unsubscribe."""

    async def preflight(self) -> None: ...


@runtime_checkable
class HostsUnsubscribe(Protocol):
    """A transport that can use the provider's own unsubscribe (`unsubscribe=provider`, or imposed by it): None when
    this DSN does not. With one, its transport also is a SuppressionSource, which `send` applies before sending."""

    hosted_unsubscribe: HostedUnsubscribe | None


@runtime_checkable
class SuppressionSource(Protocol):
    """A transport whose provider keeps a suppression list that `newsletter subscribers sync` can read."""

    scheme: ClassVar[str]  # named in the events it records

    def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address the provider suppresses (bounced, complained, unsubscribed), page after page."""
        ...


def hosted_unsubscribe_of(transport: object) -> HostedUnsubscribe | None:
    """The provider's unsubscribe this transport's messages carry, or None (the links of `newsletter serve`)."""
    return transport.hosted_unsubscribe if isinstance(transport, HostsUnsubscribe) else None


async def preflight(transport: object) -> None:
    """The transport's own checks of the account, when it has any (Preflights)."""
    if isinstance(transport, Preflights):
        await transport.preflight()


class WebhookHandler:
    """What POST /webhooks/{provider} needs from a provider (newsletter/web/webhooks.py), with the defaults of a
    provider that signs each request: verify it, parse it; no subscription to confirm, no replay token.

    A provider that signs a token rather than the event (Mailgun) sets `replay_tokens` and returns the token from
    replay_token(): the store then refuses a token seen before, and forgets it after `token_kept`, once the
    provider's own check would refuse it by its age. A request that needs a token and carries none is refused.
    """

    replay_tokens: ClassVar[bool] = False
    token_kept: ClassVar[timedelta] = timedelta(0)

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        """Whether the request comes from the provider (secret: NEWSLETTER_WEBHOOK_SECRET_<PROVIDER>). May block."""
        raise NotImplementedError

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        """The events of a verified request; ValueError when its body is not what the provider documents."""
        raise NotImplementedError

    def confirmation_url(self, body: bytes) -> str | None:
        """The URL to GET that confirms a subscription (Amazon SNS), when the body asks for one; else None."""
        return None

    def replay_token(self, body: bytes) -> str | None:
        """The signed token of a request, with replay_tokens: each is accepted once."""
        return None


UNSUBSCRIBE_OPTION = ("own", "provider")  # ?unsubscribe=: the links of `newsletter serve`, or the provider's


HOSTED_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")  # the provider writes them with its own unsubscribe
_HOSTED_HEADERS_LOWER = frozenset(name.lower() for name in HOSTED_HEADERS)


def not_built_for(message: Outgoing, hosted: HostedUnsubscribe, provider: str) -> str | None:
    """Why a message was not built for the provider's hosted unsubscribe (it carries our List-Unsubscribe, or its
    link is not the provider's placeholder), or None: what a campaign begun without unsubscribe=provider shows."""
    if any(name in message.headers for name in HOSTED_HEADERS):
        return (
            f"{message.key} carries this tool's List-Unsubscribe: its campaign was begun without "
            "unsubscribe=provider; send it on through a DSN without it"
        )
    value = message.values.get("unsubscribe_url")
    if not isinstance(value, Verbatim) or value != hosted.url:
        return f"{message.key}'s unsubscribe link is not {provider}'s {hosted.url}: its campaign was begun otherwise"
    return None


def refuse_unless_placeholder(scheme: str, messages: Sequence[Outgoing], placeholder: str, otherwise: str) -> None:
    """Raise TransportError (nothing sent) unless every message carries the provider's placeholder in both parts and
    none of our List-Unsubscribe headers; otherwise: what the provider would do instead ("… would append …")."""
    for message in messages:
        missing = [part for part, body in (("HTML", message.html), ("text", message.text)) if placeholder not in body]
        if missing:
            problem = (
                f"its {' and '.join(missing)} part lacks {placeholder}, so {otherwise}; the footer's "
                "%%unsubscribe_url%% must stay in both templates"
            )
        elif any(name.lower() in _HOSTED_HEADERS_LOWER for name in message.headers):
            problem = "it carries newsletter's own List-Unsubscribe (built for unsubscribe=own)"
        else:
            continue
        raise TransportError(
            f"{scheme}://…?unsubscribe=provider: the message to {message.recipient.address} cannot go: {problem}; "
            "nothing was sent"
        )


def refuse_hosted_unsubscribe(dsn: Dsn, why: str) -> None:
    """For a transport that cannot use a provider's unsubscribe: refuse ?unsubscribe=provider, saying why."""
    if dsn.option("unsubscribe", "own", UNSUBSCRIBE_OPTION) == "provider":
        raise NewsletterError(f"{dsn.scheme}://…?unsubscribe=provider: {why}; run `newsletter serve` for the links")


@dataclass(frozen=True)
class Dsn:
    """A transport's address, e.g. smtp://user:pass@host:587?tls=starttls or postmark+api://TOKEN@default.

    Credentials are URL-decoded; repr() and str() never show the password.
    """

    scheme: str
    host: str
    user: str | None = field(default=None, repr=False)  # an API's key, for the +api schemes
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Dsn:
        if "://" not in text:
            raise NewsletterError(
                f"'{redact(text)}' is not a transport DSN; write SCHEME://…, e.g. outbox://build/outbox or "
                "smtp://user:pass@smtp.example.org:587"
            )
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            hint = ""
            if "@" in text:
                hint = "; if the key or password holds / @ : or #, write them %2F %40 %3A %23"
            raise NewsletterError(f"the port in '{redact(text)}' is not a number{hint}") from None
        return cls(
            scheme=parts.scheme.lower(),
            host=parts.hostname or "",
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            port=port,
            path=unquote(parts.path),
            options=dict(parse_qsl(parts.query)),
        )

    def __str__(self) -> str:
        """The DSN without credentials: what logs and `send --json` show."""
        where = self.host + (f":{self.port}" if self.port else "") + self.path
        query = "&".join(f"{k}={quote(v)}" for k, v in self.options.items())
        return f"{self.scheme}://{where}" + (f"?{query}" if query else "")

    def require_user(self, what: str) -> str:
        if not self.user:
            raise NewsletterError(
                f"{self.scheme}:// needs {what} before the @, e.g. {self.scheme}://{what.upper()}@default"
            )
        return self.user

    def option(self, name: str, default: str, allowed: tuple[str, ...] | None = None) -> str:
        value = self.options.get(name, default)
        if allowed is not None and value not in allowed:
            raise NewsletterError(f"{self.scheme}://…?{name}={value}: use one of {', '.join(allowed)}")
        return value


def redact(text: str) -> str:
    """A DSN string with any password or token replaced by ***, for error messages."""
    if "://" not in text or "@" not in text.split("://", 1)[1]:
        return text
    scheme, rest = text.split("://", 1)
    credentials, where = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    # An API's "user" is its key; an SMTP user name is not secret and helps to read the message.
    shown = "***" if ":" not in credentials or "+api" in scheme else f"{user}:***"
    return f"{scheme}://{shown}@{where}"
