"""resend+api://KEY@default: Resend's /emails/batch, up to 100 emails a request, each a full email object.

Resend hosts no unsubscribe for batch emails, so ?unsubscribe=provider is refused. What Resend does and why the
code does what it does: docs/providers/resend.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from newsletter import __version__
from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, ApiTransport, retry_after, short
from newsletter.transports.base import (
    Dsn,
    Outcome,
    TransportError,
    refuse_hosted_unsubscribe,
)
from newsletter.transports.resend.webhooks import KEY_TAG

PATH = "/emails/batch"
USER_AGENT = f"newsletter/{__version__}"
# Headers Resend writes itself (Date, Message-ID) or takes in a field of its own (Reply-To).
# Resend hosts no unsubscribe for batch emails, so ?unsubscribe=provider is refused: docs/providers/resend.md
NOT_CUSTOM_HEADERS = frozenset({"date", "message-id", "reply-to"})
# RFC 5322 specials: a display name holding one of them is written as a quoted string.
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")

# What the user can do about a whole-request error, by Resend's error name (https://resend.com/docs/api-reference/errors).
ADVICE = {
    "invalid_idempotency_key": "newsletter built an idempotency key Resend refuses; please report this bug",
    "invalid_idempotent_request": (
        "these messages went out in a batch with the same idempotency key but other content less than 24 h "
        "ago; check the Resend dashboard (Emails) before sending them again"
    ),
    "invalid_from_address": "use a From address on a domain verified at https://resend.com/domains",
    "missing_required_field": "a message lacks a field Resend requires (from, to, subject)",
    "security_error": "Resend refused the request for security reasons; contact Resend support",
}


def idempotency_key(messages: Sequence[Outgoing]) -> str:
    """The batch's Idempotency-Key: the same messages in the same order always give the same key (≤ 256 chars)."""
    digest = hashlib.sha256("\n".join(m.key for m in messages).encode("utf-8")).hexdigest()
    return f"newsletter-batch/{digest}"


def mailbox(box: Mailbox) -> str:
    """`Name <address>` as Resend's from/to fields take it: UTF-8 kept, the name quoted when RFC 5322 needs it, an
    international domain in A-labels (an address Resend refuses fails alone: the batch is sent permissive)."""
    name = _CONTROL.sub(" ", box.name).strip()
    if not name:
        return box.addr_spec
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{box.addr_spec}>"


def build_email(message: Outgoing) -> dict[str, Any]:
    """One message as a Resend email object (SendEmailRequest in Resend's OpenAPI)."""
    email: dict[str, Any] = {
        "from": mailbox(message.sender),
        "to": [mailbox(message.recipient)],
        "subject": message.subject,
        "html": message.html,
        "text": message.text,
    }
    reply_to = next((v for k, v in message.headers.items() if k.lower() == "reply-to"), None)
    if reply_to:
        email["reply_to"] = reply_to
    headers = {k: v for k, v in message.headers.items() if k.lower() not in NOT_CUSTOM_HEADERS}
    if headers:
        email["headers"] = headers
    # A key Resend would refuse as a tag would fail the whole email; without the tag, a webhook event about this
    # message applies to the address on every list. Keys are "<campaign id>-<subscriber id>", so this always holds.
    if _TAG_VALUE.fullmatch(message.key):
        email["tags"] = [{"name": KEY_TAG, "value": message.key}]
    return email


def build_payload(messages: Sequence[Outgoing]) -> list[dict[str, Any]]:
    """The request body: a JSON array of email objects, one per message, in order."""
    return [build_email(message) for message in messages]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None


def _error_reason(status: int, body: bytes, data: Any) -> tuple[str, str]:
    """(Resend's error name, a reason for the user) for a refused request."""
    name = message = ""
    if isinstance(data, dict):
        name = str(data.get("name") or "")
        message = str(data.get("message") or "")
    code = f"resend {status} {name}".rstrip()
    reason = f"{code}: {message or short(body) or 'no message'}"
    if name in ADVICE:
        reason += f" ({ADVICE[name]})"
    return name, reason


def parse_response(status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]) -> list[Outcome]:
    """Return one Outcome per message, in order, from Resend's answer to a permissive batch.

    Every message starts as retry and is upgraded only when the answer names it. A refused request (4xx)
    fails every message, except 409 concurrent_idempotent_requests (retry) and 404/405, which mean the
    DSN's host is not Resend's API and raise TransportError.
    """
    count = len(messages)
    outcomes = [Outcome.retry(f"resend {status}: the answer did not name this message") for _ in messages]
    data = _json(body)

    if 200 <= status < 300:
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            reason = f"resend {status}: unexpected answer, nothing counted as sent: {short(body)}"
            return [Outcome.retry(reason) for _ in messages]
        rejected: dict[int, list[str]] = {}
        for error in data.get("errors") or []:
            index = error.get("index") if isinstance(error, dict) else None
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
                rejected.setdefault(index, []).append(str(error.get("message") or "invalid email"))
        for index, texts in rejected.items():
            outcomes[index] = Outcome.failed(f"resend validation_error: {'; '.join(texts)}")
        accepted = [i for i in range(count) if i not in rejected]
        created = data["data"]
        if len(created) != len(accepted):
            # The ids follow the request's order minus the rejected emails; with a count that disagrees, no id
            # can be matched to its message, and unknown never counts as sent.
            reason = (
                f"resend {status}: the answer lists {len(created)} created emails for {len(accepted)} valid "
                "messages; not counted as sent"
            )
            for index in accepted:
                outcomes[index] = Outcome.retry(reason)
            return outcomes
        for index, item in zip(accepted, created, strict=True):
            email_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(email_id, str) and email_id:
                outcomes[index] = Outcome.sent(email_id)
        return outcomes

    name, reason = _error_reason(status, body, data)
    if status in (404, 405):
        raise TransportError(
            f"{reason}; the DSN does not point at Resend's API: write resend+api://KEY@default "
            "(or host:port for a local test server)"
        )
    if status == 409 and name == "concurrent_idempotent_requests":
        return [Outcome.retry(reason, retry_after(headers)) for _ in messages]
    if status == 408:
        return [Outcome.retry(reason, retry_after(headers)) for _ in messages]
    if 400 <= status < 500:
        return [Outcome.failed(reason) for _ in messages]
    return [Outcome.retry(f"{reason}; nothing counted as sent") for _ in messages]


class ResendTransport(ApiTransport):
    scheme: ClassVar[str] = "resend+api"
    max_batch: ClassVar[int] = 100  # "up to 100 emails in a single API call"
    default_host: ClassVar[str] = "api.resend.com"
    name: ClassVar[str] = "Resend"

    def __init__(self, dsn: Dsn, *, key: str, **kwargs: Any):
        super().__init__(dsn, **kwargs)
        self._key = key

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> ResendTransport:
        """The transport for resend+api://KEY@default; raise NewsletterError saying what to write."""
        key = dsn.user
        if not key:
            raise NewsletterError(
                "resend+api:// needs the API key before the @: resend+api://re_API_KEY@default "
                "(create one at https://resend.com/api-keys)"
            )
        if dsn.password is not None:
            raise NewsletterError(
                "resend+api:// takes the API key alone before the @, with no ':': resend+api://re_API_KEY@default"
            )
        if dsn.path not in ("", "/"):
            raise NewsletterError(f"resend+api:// takes no path ('{dsn.path}'); write resend+api://re_API_KEY@default")
        refuse_hosted_unsubscribe(
            dsn, "Resend hosts an unsubscribe page only for Broadcasts to its Audiences, not for /emails/batch"
        )
        others = [name for name in dsn.options if name != "unsubscribe"]
        if others:
            raise NewsletterError(
                f"resend+api:// takes no options (got ?{'&'.join(others)}); write resend+api://re_API_KEY@default"
            )
        return cls(dsn, key=key)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        return ApiRequest(
            path=PATH,
            headers={
                "Authorization": f"Bearer {self._key}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Idempotency-Key": idempotency_key(messages),
                "x-batch-validation": "permissive",
            },
            json=build_payload(messages),
        )

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)
