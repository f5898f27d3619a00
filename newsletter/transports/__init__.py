"""Transports, chosen by a DSN (like Symfony Mailer's MAILER_DSN): `--transport` or NEWSLETTER_TRANSPORT.

    outbox://build/outbox                      .eml files (the default)
    null://                                    discards (benchmarks)
    smtp://user:pass@host:587?tls=starttls     SMTP (tls = starttls, ssl or none)
    postmark+api://TOKEN@default?stream=broadcast
    sendgrid+api://KEY@default
    mailgun+api://KEY:DOMAIN@default?region=eu
    ses+api://ACCESS:SECRET@default?region=ca-central-1
    resend+api://KEY@default
`default` is the provider's real host; any other host[:port] is used as given, so tests can aim a real
transport at a local fake. PROVIDERS below is the one registry: each scheme's transport class, its webhook
handler, and the environment variable holding the webhook's secret. Each provider's package is imported only
when its scheme (or its webhook) is used: `outbox://` imports neither httpx nor cryptography.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from newsletter.errors import NewsletterError
from newsletter.message import DkimSigner
from newsletter.transports.base import Dsn, Outcome, Transport, TransportError, WebhookHandler

if TYPE_CHECKING:
    from newsletter.workspace import Workspace

DEFAULT_DSN = "outbox://build/outbox"


class TransportClass(Protocol):
    """What the registry needs of a transport's class: build one from its DSN (raising NewsletterError that says
    what to write when the DSN is wrong)."""

    def from_dsn(self, dsn: Dsn, *, root: Path | None = None, **context: Any) -> Transport: ...


@dataclass(frozen=True)
class Provider:
    """One scheme of the registry. `transport` and `webhooks` are "module:Class", imported when first used."""

    scheme: str  # "postmark+api"
    transport: str  # "newsletter.transports.postmark.sending:PostmarkTransport"
    webhooks: str | None = None  # "newsletter.transports.postmark.webhooks:PostmarkWebhooks", POST /webhooks/{name}

    @property
    def name(self) -> str:
        """The provider's name in URLs and variables: "postmark" for postmark+api."""
        return self.scheme.split("+", 1)[0]

    @property
    def webhook_secret_variable(self) -> str:
        """The environment variable that holds the webhook's secret; without it the webhook refuses (401)."""
        return f"NEWSLETTER_WEBHOOK_SECRET_{self.name.upper()}"

    def webhook_secret(self) -> str:
        return os.environ.get(self.webhook_secret_variable, "")

    def transport_class(self) -> TransportClass:
        cls: TransportClass = _load(self.transport)
        return cls

    def webhook_handler(self) -> WebhookHandler | None:
        if self.webhooks is None:
            return None
        handler: WebhookHandler = _load(self.webhooks)()
        return handler


def _load(reference: str) -> Any:
    module_name, name = reference.split(":")
    return getattr(importlib.import_module(module_name), name)


def _api(name: str, cls: str) -> Provider:
    """An API provider: its package's sending module holds the transport, its webhooks module the handler."""
    package = f"newsletter.transports.{name}"
    return Provider(f"{name}+api", f"{package}.sending:{cls}Transport", f"{package}.webhooks:{cls}Webhooks")


PROVIDERS: dict[str, Provider] = {
    provider.scheme: provider
    for provider in (
        Provider("outbox", "newsletter.transports.outbox:OutboxTransport"),
        Provider("null", "newsletter.transports.null:NullTransport"),
        Provider("smtp", "newsletter.transports.smtp:SmtpTransport"),
        _api("postmark", "Postmark"),
        _api("sendgrid", "Sendgrid"),
        _api("mailgun", "Mailgun"),
        _api("ses", "Ses"),
        _api("resend", "Resend"),
    )
}
WEBHOOK_PROVIDERS: dict[str, Provider] = {p.name: p for p in PROVIDERS.values() if p.webhooks is not None}


def transport_from_dsn(text: str, *, root: Path | None = None, **context: object) -> Transport:
    """The transport a DSN names. Raise NewsletterError saying what to write when the DSN is wrong."""
    dsn = Dsn.parse(text)
    if dsn.scheme not in PROVIDERS:
        raise NewsletterError(f"unknown transport '{dsn.scheme}://'; known: {', '.join(s + '://' for s in PROVIDERS)}")
    return PROVIDERS[dsn.scheme].transport_class().from_dsn(dsn, root=root, **context)


def transport_dsn(option: str | None) -> str:
    """The DSN to use: --transport, else NEWSLETTER_TRANSPORT, else the outbox."""
    return option or os.environ.get("NEWSLETTER_TRANSPORT") or DEFAULT_DSN


def dkim_signer(workspace: Workspace) -> DkimSigner | None:
    """The DKIM signer when [dkim] and NEWSLETTER_DKIM_PRIVATE_KEY (PEM text or a file) are both set."""
    settings = workspace.config.dkim
    key = os.environ.get("NEWSLETTER_DKIM_PRIVATE_KEY", "")
    if not (settings.domain and settings.selector and key):
        return None
    data = key.encode() if "-----BEGIN" in key else Path(key).expanduser().read_bytes()
    return DkimSigner(settings.domain, settings.selector, data)


def transport_for(workspace: Workspace, dsn_text: str) -> Transport:
    """The transport of a DSN for a workspace: relative outbox folders under it, its DKIM signer for smtp."""
    return transport_from_dsn(dsn_text, root=workspace.root, dkim=dkim_signer(workspace))


__all__ = [
    "DEFAULT_DSN",
    "PROVIDERS",
    "WEBHOOK_PROVIDERS",
    "Dsn",
    "Outcome",
    "Provider",
    "Transport",
    "TransportError",
    "dkim_signer",
    "transport_dsn",
    "transport_for",
    "transport_from_dsn",
]
