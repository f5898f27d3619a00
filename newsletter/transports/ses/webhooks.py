"""POST /webhooks/ses: SES events through Amazon SNS, verified by sns.py against the TopicArn in
NEWSLETTER_WEBHOOK_SECRET_SES (docs/providers/ses.md, Webhooks).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from typing import Any

from newsletter.transports._http import iso_time
from newsletter.transports.base import (
    DeliveryEvent,
    WebhookHandler,
)
from newsletter.transports.ses.sns import subscription_confirmation_url, verify_webhook

TAG = "newsletter_key"


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{what} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _recipient(value: object) -> str | None:
    """The bare address, its Punycode domain back in Unicode as subscribers are stored; None if not an address."""
    if not isinstance(value, str):
        return None
    address = (email.utils.parseaddr(value)[1] if "<" in value else value).strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    if "xn--" in domain.lower():
        domain = _unicode_domain(domain)
    return f"{local}@{domain}"


def _unicode_domain(domain: str) -> str:
    try:
        return domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain


def _ledger_key(mail: dict[str, Any]) -> str | None:
    """Our newsletter_key tag as event publishing echoes it: mail.tags {"newsletter_key": ["12-345"]}."""
    value = _dict(mail.get("tags")).get(TAG)
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, str) and value else None


def ses_events(record: Mapping[str, Any]) -> list[DeliveryEvent]:
    """The membership changes in one SES event record (event publishing or identity notification format)."""
    kind = record.get("eventType") or record.get("notificationType")
    mail = _dict(record.get("mail"))
    provider_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    key = _ledger_key(mail)
    sent = iso_time(mail.get("timestamp"))
    events = []
    if kind == "Bounce":
        bounce = _dict(record.get("bounce"))
        if bounce.get("bounceType") != "Permanent":  # Transient and Undetermined: not an undeliverable address
            return []
        at = iso_time(bounce.get("timestamp")) or sent
        subtype = bounce.get("bounceSubType") or "General"
        for entry in map(_dict, _list(bounce.get("bouncedRecipients"))):
            address = _recipient(entry.get("emailAddress"))
            why = entry.get("diagnosticCode") or entry.get("status")
            if address:
                detail = f"hard bounce ({subtype})" + (f": {why}" if why else "")
                events.append(DeliveryEvent("bounced", address, provider_id, at, detail, key))
    elif kind == "Complaint":
        complaint = _dict(record.get("complaint"))
        feedback = complaint.get("complaintFeedbackType")
        if feedback == "not-spam":  # "does not consider the message to be spam"
            return []
        at = iso_time(complaint.get("timestamp")) or sent
        detail = "spam complaint" + (f" ({feedback})" if feedback else "")
        if complaint.get("complaintSubType") == "OnAccountSuppressionList":
            detail += ", address on the account-level suppression list"
        for entry in map(_dict, _list(complaint.get("complainedRecipients"))):
            address = _recipient(entry.get("emailAddress"))
            if address:
                events.append(DeliveryEvent("complained", address, provider_id, at, detail, key))
    elif kind == "Subscription":
        subscription = _dict(record.get("subscription"))
        if _dict(subscription.get("newTopicPreferences")).get("unsubscribeAll") is not True:
            return []
        at = iso_time(subscription.get("timestamp")) or sent
        detail = f"unsubscribed through SES ({subscription.get('source') or 'list management'})"
        for value in _list(mail.get("destination")):
            address = _recipient(value)
            if address:
                events.append(DeliveryEvent("unsubscribed", address, provider_id, at, detail, key))
    return events


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """The membership changes in one SNS message (verified first): [] for confirmations and ignored events.

    Raise ValueError when the body or its Message is not the JSON that SNS and SES send.
    """
    envelope = _json_object(body, "the body")
    kind = envelope.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return []
    if kind != "Notification":
        raise ValueError(f"not an SNS message (Type {kind!r})")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise ValueError("the SNS notification has no Message")
    return ses_events(_json_object(message, "the SNS Message"))


class SesWebhooks(WebhookHandler):
    """POST /webhooks/ses: SNS verification (sns.py), the confirmation of a subscription, and parse_webhook above."""

    def confirmation_url(self, body: bytes) -> str | None:
        return subscription_confirmation_url(body)

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)
