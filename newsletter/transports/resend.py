"""resend+api://KEY@default: Resend's batch endpoint, up to 100 emails per request.

    POST https://api.resend.com/emails/batch
    Authorization: Bearer re_…   (and a User-Agent, which Resend asks for)
    Idempotency-Key: newsletter-batch/<sha256 of the messages' keys>   (kept 24 h by Resend)
    x-batch-validation: permissive
    [{"from": …, "to": […], "subject": …, "html": …, "text": …, "reply_to": …, "headers": {…},
      "tags": [{"name": "newsletter_key", "value": "<campaign>-<subscriber>"}]}, …]

Each email of a batch is a full email object, so every recipient gets their own HTML and text (placeholders
filled here) and their own List-Unsubscribe header. Resend sets Date and Message-ID itself; Reply-To goes in
its `reply_to` field; every other header of the message (List-Id, List-Unsubscribe, List-Unsubscribe-Post)
goes in `headers`. Names and subjects are sent as UTF-8 JSON strings; Resend writes the MIME encoding.
The message's ledger key goes in a tag, newsletter_key, which Resend echoes in every webhook event of that
email (tag names and values: ASCII letters, numbers, underscores, dashes; our keys are like 12-345).

Answers (https://resend.com/docs/dashboard/emails/batch-validation-modes):
  200 {"data": [{"id": …}, …], "errors": [{"index": 2, "message": "The `to` field is missing."}]}
      In permissive mode one invalid email does not fail the batch: `data` lists the emails created, in
      request order, and `errors` gives the index of each rejected one. The ids are matched to the messages
      that were not rejected, in order; when the counts disagree, no message is counted as sent.
  4xx {"statusCode": 422, "name": "validation_error", "message": …}  the whole request was refused.
  Resend accepts an address on its suppression list and suppresses the email later (the email.suppressed
  webhook): the batch answer never reports a bounce, so no Outcome here has bounce=True.
429, 5xx, 401 and 403 are handled by ApiTransport (retry after Retry-After, or stop the run).

Documentation relied on:
  https://resend.com/docs/api-reference/emails/send-batch-emails        (endpoint, fields, 100 emails)
  https://resend.com/docs/dashboard/emails/batch-sending                (response format)
  https://resend.com/docs/dashboard/emails/batch-validation-modes       (x-batch-validation, errors[])
  https://resend.com/changelog/batch-validation-modes
  https://resend.com/docs/dashboard/emails/idempotency-keys             (Idempotency-Key, 24 h, 256 chars)
  https://resend.com/changelog/batch-idempotency-keys
  https://resend.com/docs/api-reference/errors                          (error names and statuses)
  https://resend.com/docs/api-reference/rate-limit                      (429, retry-after, ratelimit-*)
  https://github.com/resend/resend-openapi (resend.yaml: SendEmailRequest, CreateBatchEmailsResponse)
  https://resend.com/docs/dashboard/emails/tags                         (tags, their characters, in webhooks)
  https://resend.com/changelog/tags-for-batch-and-scheduled-emails      (tags on /emails/batch, 2025-09-24)

Hosted unsubscribe: none for this endpoint, so `?unsubscribe=provider` is refused when the DSN is read. "Resend
doesn't manage contact lists for transactional emails. If you manage your own list, you can add the
List-Unsubscribe … header"; its unsubscribe link and page exist for Broadcasts and Automations sent to its
Audiences (Contacts, Segments, Topics), not for /emails or /emails/batch. The trap seen elsewhere (a provider that
appends its own link to messages without its placeholder) does not arise: Resend adds nothing to batch emails.
`?unsubscribe=own`, the default, is accepted and changes nothing.
  https://resend.com/docs/dashboard/emails/add-unsubscribe-to-transactional-emails
  https://resend.com/docs/dashboard/audiences/managing-unsubscribe-list ("When you include an unsubscribe link in
    your Broadcasts or Automations, Resend will automatically handle the unsubscribe flow")

Webhooks: Resend delivers them through Svix, one event per POST, signed with the endpoint's signing secret
("whsec_" + base64 key, on the webhook's page in the dashboard), read here from NEWSLETTER_WEBHOOK_SECRET_RESEND.
The headers svix-id, svix-timestamp (Unix seconds) and svix-signature ("v1,<base64>", several separated by
spaces while a secret is rotated) carry HMAC-SHA256(key, "<svix-id>.<svix-timestamp>.<raw body>");
verify_webhook recomputes it, compares in constant time, and refuses a timestamp more than 5 minutes from now
(the tolerance of Svix's own libraries). Events that change a membership:
  email.bounced     with bounce.type "Permanent" -> bounced ("Transient"/"Undetermined" are soft: ignored)
  email.complained  -> complained
  email.suppressed  -> bounced: Resend did not send because the address is on the account's suppression list,
                    which holds addresses that hard-bounced or complained (Resend files Suppressed and
                    OnAccountSuppressionList under Permanent bounces); every later email would be suppressed too
Ignored: email.sent, delivered, delivery_delayed, opened, clicked, scheduled, failed, received; contact.* (Resend
Audiences, which our batch emails never use: Resend adds its own unsubscribe link only to Broadcasts, so it has
no unsubscribe of ours to report); suppression.added/removed (they repeat a bounce or complaint already reported
with the email's id and tags, or record a manual change in the dashboard); domain.* and the rest.
data.tags echoes our tags, as an object {"newsletter_key": "12-345"} in every documented example (an older field
table said an array of {name, value}: both are read), which gives DeliveryEvent.key.
  https://resend.com/docs/webhooks/verify-webhooks-requests             svix-id/-timestamp/-signature, the secret
  https://docs.svix.com/receiving/verifying-payloads/how-manual         signed content, whsec_ key, v1 signatures
  https://docs.svix.com/receiving/verifying-payloads/how                the worked example used as a test vector
  https://github.com/svix/svix-webhooks (python/svix/webhooks.py)       5-minute tolerance, both header names
  https://resend.com/docs/dashboard/webhooks/event-types                every event type and its sample body
  https://resend.com/docs/webhooks/emails/bounced                       data.bounce {type, subType, message}
  https://resend.com/docs/webhooks/emails/complained
  https://resend.com/docs/webhooks/emails/suppressed                    data.suppressed {type, message}
  https://resend.com/docs/dashboard/emails/email-bounces                Permanent / Transient / Undetermined
  https://resend.com/docs/dashboard/emails/email-suppressions           what puts an address on the list
  https://resend.com/changelog/new-contact-webhooks                     contact.* are about Audiences
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from typing import Any, ClassVar

from newsletter import __version__
from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, ApiTransport, header, iso_time, retry_after, short
from newsletter.transports.base import (
    DeliveryEvent,
    Dsn,
    Outcome,
    TransportError,
    WebhookHandler,
    refuse_hosted_unsubscribe,
)

PATH = "/emails/batch"
USER_AGENT = f"newsletter/{__version__}"
# Headers Resend writes itself (Date, Message-ID) or takes in a field of its own (Reply-To).
NOT_CUSTOM_HEADERS = frozenset({"date", "message-id", "reply-to"})
# RFC 5322 specials: a display name holding one of them is written as a quoted string.
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# The tag that carries the ledger key; Resend refuses a tag name or value with other characters than these.
KEY_TAG = "newsletter_key"
_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")

WEBHOOK_TOLERANCE = 5 * 60  # seconds either way, as Svix's libraries allow
SECRET_PREFIX = "whsec_"
_TIMESTAMP = re.compile(r"[0-9]{1,15}")

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
