"""POST /webhooks/postmark: HTTP basic auth checked against NEWSLETTER_WEBHOOK_SECRET_POSTMARK, one JSON event a
request (docs/providers/postmark.md, Webhooks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from newsletter.transports._http import header, iso_time
from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    WebhookHandler,
)
from newsletter.transports.postmark.common import METADATA_KEY, _one_line, _text

# Bounce Types (https://postmarkapp.com/developer/api/bounce-api#bounce-types) that say the address itself is
# undeliverable. "When emails are identified as Hard Bounce or Spam Complaint they are automatically deactivated"
# (support article 815). BadEmailAddress: "The address is not a valid email address." Every other Type is temporary
# (SoftBounce, Transient, DnsError…), an autoreply, or a verdict on the sender or the content rather than the address
# (Blocked, DMARCPolicy, SpamNotification, VirusNotification), or our own doing (ManuallyDeactivated): ignored.
PERMANENT_BOUNCE_TYPES = frozenset({"HardBounce", "BadEmailAddress"})
# Bounce Type "Unsubscribe" (TypeCode 16): "Unsubscribe or Remove request" received back from the recipient.
UNSUBSCRIBE_BOUNCE_TYPE = "Unsubscribe"
# SubscriptionChange SuppressionReason → kind. "If a recipient unsubscribes, they will be suppressed with the
# SuppressionReason of ManualSuppression" (subscription-change-webhook page).
SUPPRESSION_KINDS: dict[str, EventKind] = {
    "HardBounce": "bounced",
    "SpamComplaint": "complained",
    "ManualSuppression": "unsubscribed",
}


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, **kwargs: Any) -> bool:
    """Return True only if the request carries the webhook URL's HTTP basic auth credentials.

    secret is "USER:PASSWORD", the user name and password written into the webhook URL set in Postmark
    (https://USER:PASSWORD@example.org/webhooks/postmark, or the webhook's HttpAuth); the server reads it from
    NEWSLETTER_WEBHOOK_SECRET_POSTMARK. Postmark signs nothing (webhooks-overview page): basic auth is its only
    documented check, so there is no timestamp to refuse a replay and the body is not covered; only HTTPS protects
    them. body and kwargs are not used. The comparison is constant-time; malformed input returns False.
    """
    try:
        user, sep, password = secret.partition(":")
        if not (user and sep and password):
            return False  # an empty user name or password would let anyone in
        authorization = header(headers, "Authorization")
        if authorization is None:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "basic" or not token or " " in token:
            return False
        credentials = base64.b64decode(token.encode("ascii"), validate=True)
        # Hash both sides so that the comparison takes the same time whatever the lengths.
        return hmac.compare_digest(
            hashlib.sha256(credentials).digest(), hashlib.sha256(secret.encode("utf-8")).digest()
        )
    except (AttributeError, TypeError, ValueError, UnicodeError, binascii.Error):
        return False


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """Return the membership change in one Postmark webhook request: zero or one DeliveryEvent.

    Postmark posts one JSON object per event. Bounce with a permanent Type (PERMANENT_BOUNCE_TYPES) is "bounced",
    SpamComplaint "complained", a Bounce of Type Unsubscribe "unsubscribed"; SubscriptionChange that suppresses
    sending maps its SuppressionReason (SUPPRESSION_KINDS). Everything else (Delivery, Open, Click, soft bounces,
    reactivations, inbound mail) gives []. Raise ValueError when the body is not a JSON object, or when an event
    that changes a membership does not name its address.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeError) as error:
        raise ValueError(f"postmark webhook: the body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"postmark webhook: expected one JSON object, got {type(data).__name__}")

    record_type = data.get("RecordType")
    if record_type in ("Bounce", "SpamComplaint"):
        event = _bounce_event(data)
    elif record_type == "SubscriptionChange":
        event = _subscription_event(data)
    else:
        event = None
    return [event] if event else []


def _bounce_event(data: dict[str, Any]) -> DeliveryEvent | None:
    """Bounce and SpamComplaint records share one shape (Type, Email, BouncedAt, Details, Metadata)."""
    bounce_type = data.get("Type")
    kind: EventKind
    if data.get("RecordType") == "SpamComplaint" or bounce_type == "SpamComplaint":
        kind = "complained"
    elif bounce_type in PERMANENT_BOUNCE_TYPES:
        kind = "bounced"
    elif bounce_type == UNSUBSCRIBE_BOUNCE_TYPE:
        kind = "unsubscribed"
    else:
        return None
    name = _text(data.get("Name")) or _text(bounce_type) or "spam complaint"
    details = _text(data.get("Details")) or _text(data.get("Description"))
    return DeliveryEvent(
        kind=kind,
        email=_address(data, "Email"),
        provider_id=_text(data.get("MessageID")) or None,
        at=iso_time(data.get("BouncedAt")),
        detail=_one_line(f"{name.lower()}: {details}" if details else name.lower()),
        key=_key(data),
    )


def _subscription_event(data: dict[str, Any]) -> DeliveryEvent | None:
    """An address put on the stream's suppression list; a reactivation (SuppressSending false) changes nothing here."""
    if data.get("SuppressSending") is not True:
        return None
    reason = data.get("SuppressionReason")
    kind = SUPPRESSION_KINDS.get(reason) if isinstance(reason, str) else None
    if kind is None:
        return None
    origin = _text(data.get("Origin"))
    stream = _text(data.get("MessageStream"))
    detail = f"suppressed: {reason}" + (f" by {origin}" if origin else "") + (f" on stream {stream}" if stream else "")
    return DeliveryEvent(
        kind=kind,
        email=_address(data, "Recipient"),
        provider_id=_text(data.get("MessageID")) or None,  # null for suppressions made by hand in Postmark
        at=iso_time(data.get("ChangedAt")),
        detail=_one_line(detail),
        key=_key(data),
    )


def _address(data: dict[str, Any], field: str) -> str:
    email = data.get(field)
    if not isinstance(email, str) or "@" not in email:
        raise ValueError(f"postmark webhook: {data.get('RecordType')} without an address in {field}")
    return email.strip()


def _key(data: dict[str, Any]) -> str | None:
    """Our ledger key, from the Metadata build_payload attached to the message."""
    metadata = data.get("Metadata")
    if not isinstance(metadata, dict):
        return None
    key = metadata.get(METADATA_KEY)
    return (key.strip() or None) if isinstance(key, str) else None


class PostmarkWebhooks(WebhookHandler):
    """POST /webhooks/postmark: verify_webhook and parse_webhook above."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)
