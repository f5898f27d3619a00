"""POST /webhooks/resend: Svix's HMAC-SHA256 signature checked with NEWSLETTER_WEBHOOK_SECRET_RESEND (whsec_…),
one event a request (docs/providers/resend.md, Webhooks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

from newsletter.transports._http import header, iso_time
from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    WebhookHandler,
)

# The tag that carries the ledger key; Resend refuses a tag name or value with other characters than these.
KEY_TAG = "newsletter_key"

WEBHOOK_TOLERANCE = 5 * 60  # seconds either way, as Svix's libraries allow
SECRET_PREFIX = "whsec_"
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def _signing_key(secret: str) -> bytes | None:
    """The HMAC key of a "whsec_…" signing secret (the prefix is optional, as Svix's libraries allow)."""
    if not isinstance(secret, str):
        return None
    secret = secret.strip()
    secret = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, **kwargs: Any) -> bool:
    """Return True only if Resend (through Svix) signed this request with our endpoint's secret, recently.

    secret: the webhook's signing secret, "whsec_" followed by a base64 key, shown on the webhook's page in
    Resend's dashboard (and returned by its webhooks API); the server reads it from NEWSLETTER_WEBHOOK_SECRET_RESEND.
    The signature is base64(HMAC-SHA256(key, "<svix-id>.<svix-timestamp>.<raw body>")) in svix-signature as
    "v1,<signature>", several separated by spaces while a secret is being rotated: one match is enough.
    svix-timestamp more than WEBHOOK_TOLERANCE (5 minutes) away from now is refused, as Svix's libraries do.
    The unbranded webhook-id/-timestamp/-signature names are read when the svix-* ones are absent, as Svix's
    libraries do. Malformed headers, secret or body give False, never an exception. kwargs: now (Unix seconds)
    for tests.
    """
    key = _signing_key(secret)
    if key is None or not isinstance(body, bytes | bytearray):
        return False
    for prefix in ("svix-", "webhook-"):
        message_id = header(headers, prefix + "id")
        timestamp = header(headers, prefix + "timestamp")
        signatures = header(headers, prefix + "signature")
        if message_id and timestamp and signatures:
            break
    else:
        return False
    if not _TIMESTAMP.fullmatch(timestamp):
        return False
    now = kwargs.get("now")
    now = time.time() if now is None else now
    try:
        if abs(float(now) - int(timestamp)) > WEBHOOK_TOLERANCE:
            return False
    except (TypeError, ValueError, OverflowError):
        return False
    try:
        signed = f"{message_id}.{timestamp}.".encode() + bytes(body)
    except UnicodeEncodeError:
        return False
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue  # another scheme (e.g. Svix's asymmetric v1a) is not ours to check
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return True
    return False


def _tag(tags: Any, name: str) -> str | None:
    """A tag's value from data.tags: an object {name: value} in Resend's examples, or an array of {name, value}."""
    value: Any = None
    if isinstance(tags, dict):
        value = tags.get(name)
    elif isinstance(tags, list):
        value = next((t.get("value") for t in tags if isinstance(t, dict) and t.get("name") == name), None)
    return value if isinstance(value, str) and value else None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _bounce_detail(bounce: dict[str, Any]) -> str:
    """ "hard bounce (Suppressed): <message>; <diagnostic codes>" for the event log."""
    sub_type = _text(bounce.get("subType"))
    detail = f"hard bounce ({sub_type})" if sub_type else "hard bounce"
    if message := _text(bounce.get("message")):
        detail += f": {message}"
    codes = bounce.get("diagnosticCode")
    codes = [codes] if isinstance(codes, str) else codes if isinstance(codes, list) else []
    for code in (_text(c) for c in codes):
        if code:
            detail += f"; {code}"
    return detail


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """Return the membership changes one Resend webhook reports: one DeliveryEvent per recipient, or none.

    email.bounced whose bounce.type is "Permanent" -> bounced; email.complained -> complained; email.suppressed
    (the address is on the account's suppression list, after a hard bounce or a complaint) -> bounced. Every other
    event, soft bounces included, gives []. key is the newsletter_key tag build_email sent. Raise ValueError with
    a short reason when the body is not JSON, not an event object, or a membership event names no recipient.
    """
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ValueError("not a Resend event: expected a JSON object with a type")
    kind = event["type"]
    if kind not in ("email.bounced", "email.complained", "email.suppressed"):
        return []
    data = event.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{kind} without a data object")

    outcome: EventKind
    if kind == "email.bounced":
        bounce = data.get("bounce")
        if not isinstance(bounce, dict) or _text(bounce.get("type")).lower() != "permanent":
            return []  # Transient, Undetermined (or no bounce details): not a hard bounce
        outcome, detail = "bounced", _bounce_detail(bounce)
    elif kind == "email.complained":
        outcome, detail = "complained", "spam complaint"
    else:
        suppressed = data.get("suppressed")
        suppressed = suppressed if isinstance(suppressed, dict) else {}
        reason = _text(suppressed.get("type"))
        detail = f"suppressed by Resend ({reason})" if reason else "suppressed by Resend"
        if message := _text(suppressed.get("message")):
            detail += f": {message}"
        outcome = "bounced"

    recipients = data.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(recipients, list):
        raise ValueError(f"{kind} without a to list")
    addresses = [parseaddr(r)[1] for r in recipients if isinstance(r, str)]
    addresses = [a for a in addresses if "@" in a]
    if not addresses:
        raise ValueError(f"{kind} names no recipient address")
    email_id = data.get("email_id")
    provider_id = email_id if isinstance(email_id, str) and email_id else None
    at = iso_time(event.get("created_at"))
    key = _tag(data.get("tags"), KEY_TAG)
    return [
        DeliveryEvent(outcome, address, provider_id=provider_id, at=at, detail=detail, key=key) for address in addresses
    ]


class ResendWebhooks(WebhookHandler):
    """POST /webhooks/resend: verify_webhook and parse_webhook above."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)
