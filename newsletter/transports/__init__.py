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
transport at a local fake. Each provider's module is imported only when its scheme is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from newsletter.errors import NewsletterError
from newsletter.transports.base import Dsn, Outcome, Transport, TransportError

DEFAULT_DSN = "outbox://build/outbox"

TRANSPORTS: dict[str, str] = {
    "outbox": "newsletter.transports.outbox:OutboxTransport",
    "null": "newsletter.transports.null:NullTransport",
    "smtp": "newsletter.transports.smtp:SmtpTransport",
    "postmark+api": "newsletter.transports.postmark:PostmarkTransport",
    "sendgrid+api": "newsletter.transports.sendgrid:SendgridTransport",
    "mailgun+api": "newsletter.transports.mailgun:MailgunTransport",
    "ses+api": "newsletter.transports.ses:SesTransport",
    "resend+api": "newsletter.transports.resend:ResendTransport",
}


def transport_from_dsn(text: str, *, root: Path | None = None, **context: object) -> Transport:
    """The transport a DSN names. Raise NewsletterError saying what to write when the DSN is wrong."""
    dsn = Dsn.parse(text)
    if dsn.scheme not in TRANSPORTS:
        raise NewsletterError(f"unknown transport '{dsn.scheme}://'; known: {', '.join(s + '://' for s in TRANSPORTS)}")
    module_name, class_name = TRANSPORTS[dsn.scheme].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_dsn(dsn, root=root, **context)


__all__ = ["DEFAULT_DSN", "Dsn", "Outcome", "Transport", "TransportError", "transport_from_dsn"]
