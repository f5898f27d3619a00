"""POST /webhooks/mailgun: the HMAC of a timestamp and a token, checked with NEWSLETTER_WEBHOOK_SECRET_MAILGUN (the
HTTP webhook signing key); each token accepted once (docs/providers/mailgun.md, Webhooks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    WebhookHandler,
)

# The custom variable that carries a message's ledger key, and the recipient variable that fills it for each
# recipient (no placeholder variable can be called so: theirs start with html_, text_ or header_).
KEY_VARIABLE = "newsletter-key"
_LEDGER_KEY = re.compile(r"\d+-\d+")  # Outgoing.key: campaign id - subscriber id
# Mailgun retries a webhook "during 8 hours" (5 min, 10 min, 15 min, 1 h, 2 h, 4 h); an hour more for its queue.
# Mailgun signs a timestamp and a token, not the event: each token once (docs/providers/mailgun.md, Webhooks).
WEBHOOK_MAX_AGE = 9 * 3600
WEBHOOK_MAX_SKEW = 300  # a timestamp ahead of our clock by more than this is refused too
# Seconds the server keeps a token it acted on: until no timestamp it may have been signed with would still pass.
WEBHOOK_TOKEN_KEPT = WEBHOOK_MAX_AGE + WEBHOOK_MAX_SKEW


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    now: float | None = None,
    max_age: float = WEBHOOK_MAX_AGE,
    **_: object,
) -> bool:
    """True only if the body carries Mailgun's signature, made with `secret`, and fresh.

    secret: the account's "HTTP webhook signing key", as Mailgun's control panel names it (not the sending API
    key, which Mailgun's earlier pages told to use), which the server reads from NEWSLETTER_WEBHOOK_SECRET_MAILGUN.
    The signature is in the body, not in a header: {"signature": {"timestamp", "token", "signature"}, "event-data"}
    with signature = hex HMAC-SHA256(secret, timestamp + token). A subaccount's events also carry a
    "parent-signature" made with the primary account's key; either one may match `secret`.
    Refused: a timestamp more than `max_age` seconds old (9 hours: Mailgun retries a webhook for 8, and a
    retry may carry the first attempt's signature) or more than 5 minutes ahead of `now`. Mailgun signs only
    timestamp + token, not the event: this says nothing of a replay. The server reserves the token of each
    request it acts on (webhook_token gives it) and refuses one reserved before, or a signature seen once could
    carry any event for 9 hours.
    headers play no part. Never raises: anything malformed is False.
    """
    try:
        key = secret.strip().encode("utf-8")
        signed = json.loads(body).get("signature")
        timestamp, token = signed["timestamp"], signed["token"]
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not key or not isinstance(timestamp, str) or not isinstance(token, str) or not token:
            return False
        if not timestamp.isascii() or not timestamp.isdigit():
            return False
        age = (time.time() if now is None else now) - int(timestamp)
        if age > max_age or age < -WEBHOOK_MAX_SKEW:
            return False
        expected = hmac.new(key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest().encode("ascii")
        offered = [signed.get("signature"), signed.get("parent-signature")]
        matches = [hmac.compare_digest(expected, value.encode("utf-8")) for value in offered if isinstance(value, str)]
        return any(matches)
    except Exception:  # malformed input of any kind (not JSON, not an object, a missing field…) is not authentic
        return False


def webhook_token(body: bytes) -> str | None:
    """The token of a webhook's signature: what the server reserves (for WEBHOOK_TOKEN_KEPT) to refuse a replay."""
    try:
        token = json.loads(body)["signature"]["token"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return token if isinstance(token, str) and token else None


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """The membership change in one Mailgun webhook, as a list of at most one event (Mailgun posts one per request).

    failed with severity "permanent" is a bounce (Mailgun gives up on the address: a hard bounce, an address
    already suppressed, a message past its retries); complained and unsubscribed are themselves. Temporary
    failures, accepted, delivered, opened, clicked and anything else change nothing. The ledger key comes back
    in user-variables (build_payload's v:newsletter-key). Raise ValueError when the body is not Mailgun's JSON.
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise ValueError("no event-data object: not a Mailgun webhook (legacy form-encoded webhooks are not read)")
    event = data.get("event")
    kind: EventKind
    if event == "failed" and data.get("severity") == "permanent":
        given = data.get("delivery-status")
        status = given if isinstance(given, dict) else {}
        said = " ".join(str(status.get(k) or "") for k in ("code", "message")).strip() or status.get("description")
        kind, detail = "bounced", f"permanent failure ({data.get('reason') or 'no reason given'})"
        detail += f": {said}" if said else ""
    elif event == "complained":
        kind, detail = "complained", "spam complaint"
    elif event == "unsubscribed":
        kind, detail = "unsubscribed", "unsubscribed through Mailgun"
    else:
        return []
    recipient = data.get("recipient")
    if not isinstance(recipient, str) or "@" not in recipient:
        raise ValueError(f"a {event} event without a recipient address")
    return [
        DeliveryEvent(
            kind=kind,
            email=recipient.strip(),
            provider_id=_message_id(data),
            at=_when(data.get("timestamp")),
            detail=detail[:500],
            key=_ledger_key(data.get("user-variables")),
        )
    ]


def _message_id(data: dict) -> str | None:
    """The Message-ID as the sending answer gave it (<…>); webhooks give it without the brackets."""
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    found = headers.get("message-id") if isinstance(headers, dict) else None
    if not isinstance(found, str) or not found.strip():
        return None
    found = found.strip()
    return found if found.startswith("<") else f"<{found}>"


def _when(timestamp: object) -> datetime | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _ledger_key(variables: object) -> str | None:
    """Our key from user-variables; Mailgun writes [] when a message has none, and a value left as
    %recipient.newsletter_key% (a recipient without the variable) is no key."""
    if not isinstance(variables, dict):
        return None
    key = variables.get(KEY_VARIABLE)
    return key if isinstance(key, str) and _LEDGER_KEY.fullmatch(key) else None


class MailgunWebhooks(WebhookHandler):
    """POST /webhooks/mailgun: verify_webhook and parse_webhook above."""

    replay_tokens: ClassVar[bool] = True
    token_kept: ClassVar[timedelta] = timedelta(seconds=WEBHOOK_TOKEN_KEPT)

    def replay_token(self, body: bytes) -> str | None:
        return webhook_token(body)

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)
