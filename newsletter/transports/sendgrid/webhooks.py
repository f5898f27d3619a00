"""POST /webhooks/sendgrid: the Event Webhook's ECDSA signature checked with the key in
NEWSLETTER_WEBHOOK_SECRET_SENDGRID, a JSON array of events a request (docs/providers/sendgrid.md, Webhooks).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from newsletter.transports._http import header
from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    WebhookHandler,
)

# The custom arg holding the message's ledger key; SendGrid echoes it in every event about the message.
KEY_ARG = "newsletter_key"


SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid documents no tolerance; five minutes, as Svix's libraries and Symfony's SendGrid parser use.
WEBHOOK_TOLERANCE = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds, fullmatch: int() would also take "+1", " 1 ", "1_0", "١"
# A drop that says the address is on SendGrid's bounce list: it bounced before, and SendGrid sends nothing to it.
# Asynchronous bounces carry neither our custom_args nor sg_message_id (sendgrid/docs #5177): docs/providers/sendgrid.md
BOUNCED_DROP_REASON = "bounced address"
UNSUBSCRIBE_EVENTS = {"unsubscribe": "unsubscribe", "group_unsubscribe": "group unsubscribe"}


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance: float = WEBHOOK_TOLERANCE,
    now: float | None = None,
    **kwargs: Any,
) -> bool:
    """Return True only if SendGrid signed this request (Signed Event Webhook) less than `tolerance` seconds ago.

    secret is the Signed Event Webhook's verification key, the public key SendGrid shows under Settings > Mail
    Settings > Signed Event Webhook Requests (or returns as public_key from GET /v3/user/webhooks/event/settings/
    signed): base64 DER as SendGrid shows it, or PEM. The server reads it from NEWSLETTER_WEBHOOK_SECRET_SENDGRID.
    The signature is ECDSA with SHA-256 over the X-Twilio-Email-Event-Webhook-Timestamp header's text followed by
    the raw body, base64 DER in X-Twilio-Email-Event-Webhook-Signature. A timestamp more than `tolerance` seconds
    (WEBHOOK_TOLERANCE, 300) before or after `now` (default: the clock) is refused as a replay. No secret is
    compared: the public key checks the signature (OpenSSL, through `cryptography`). Header names are matched in
    any case; malformed input of any kind returns False.
    """
    try:
        signature = header(headers, SIGNATURE_HEADER)
        timestamp = header(headers, TIMESTAMP_HEADER)
        if not signature or not timestamp or not _TIMESTAMP.fullmatch(timestamp) or not isinstance(body, bytes):
            return False
        if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
            return False
        key = _public_key(secret.strip())
        der = base64.b64decode(signature.strip().encode("ascii"), validate=True)
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, UnsupportedAlgorithm, AttributeError, TypeError, ValueError, binascii.Error):
        return False  # UnicodeError is a ValueError


@lru_cache(maxsize=4)
def _public_key(secret: str) -> ec.EllipticCurvePublicKey:
    """The verification key from its PEM or its base64 DER (line breaks allowed); ValueError if it is neither."""
    if secret.startswith("-----BEGIN"):
        key = load_pem_public_key(secret.encode("ascii"))
    else:
        key = load_der_public_key(base64.b64decode("".join(secret.split()).encode("ascii"), validate=True))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key is not an elliptic curve public key")
    return key


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """Return the membership changes in one Event Webhook request, in the order of its events.

    The body is a JSON array of events. Mapped: "bounce" of type "bounce" (or without a type) is "bounced" (a
    bounce of type "blocked" is a temporary block: ignored); "dropped" with reason "Bounced Address" is "bounced"
    (the address is on SendGrid's bounce list, which drops every later message to it); "spamreport" is
    "complained"; "unsubscribe" and "group_unsubscribe" are "unsubscribed". Ignored: processed, deferred,
    delivered, open, click, group_resubscribe, the other drops (a suppression for another reason, an invalid
    address, spam content, a quota) and any other event. key is the custom arg build_payload attached (KEY_ARG).
    Raise ValueError when the body is not a JSON array of objects, or when an event that changes a membership
    names no address.
    """
    data = _json_array(body, "sendgrid webhook", "body", " of events")
    events = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"sendgrid webhook: event {index} is {type(item).__name__}, not an object")
        kind_detail = _kind(item)
        if kind_detail is None:
            continue
        kind, detail = kind_detail
        email = item.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"sendgrid webhook: {item.get('event')} event {index} without an email address")
        key = item.get(KEY_ARG)
        events.append(
            DeliveryEvent(
                kind=kind,
                email=email.strip(),
                provider_id=_text(item.get("sg_message_id")) or None,  # "" on asynchronous bounces
                at=_event_time(item.get("timestamp")),
                detail=detail,
                key=(key.strip() or None) if isinstance(key, str) else None,
            )
        )
    return events


def _kind(item: dict[str, Any]) -> tuple[EventKind, str] | None:
    """(kind, detail) for an event that changes a membership, None for the others."""
    event = item.get("event")
    if event == "bounce":
        bounce_type = item.get("type")
        if bounce_type not in (None, "bounce"):  # "blocked": "could not or would not accept the message temporarily"
            return None
        classification = _text(item.get("bounce_classification"))
        response = " ".join(part for part in (_text(item.get("status")), _text(item.get("reason"))) if part)
        detail = "hard bounce" + (f" ({classification})" if classification else "")
        return "bounced", _one_line(f"{detail}: {response}" if response else detail)
    if event == "dropped":
        reason = _text(item.get("reason"))
        if reason.lower() != BOUNCED_DROP_REASON:
            return None
        return "bounced", f"dropped: {reason} (on SendGrid's bounce list)"
    if event == "spamreport":
        return "complained", "spam report"
    if event in UNSUBSCRIBE_EVENTS:
        group = item.get("asm_group_id")
        detail = UNSUBSCRIBE_EVENTS[event] + (f" (group {group})" if isinstance(group, int | str) and group else "")
        return "unsubscribed", _one_line(detail)
    return None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


def _event_time(value: Any) -> datetime | None:
    """The event's Unix timestamp (seconds) as an aware datetime; None when absent or unreadable."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _json_array(body: bytes, where: str, noun: str, of: str = "") -> list:
    """The JSON array a body holds; ValueError naming where it came from (a webhook, an endpoint) otherwise."""
    try:
        data = json.loads(body)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{where}: the {noun} is not JSON ({error})") from None
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON array{of}, got {type(data).__name__}")
    return data


class SendgridWebhooks(WebhookHandler):
    """POST /webhooks/sendgrid: verify_webhook and parse_webhook above."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)
