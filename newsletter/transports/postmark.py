"""postmark+api://TOKEN@default?stream=broadcast[&unsubscribe=provider|own] — Postmark's batch endpoint, 500 a request.

    POST https://api.postmarkapp.com/email/batch
    X-Postmark-Server-Token: TOKEN          (the server's API token; POSTMARK_API_TEST validates without sending)
    [{"From", "To", "Subject", "HtmlBody", "TextBody", "ReplyTo", "Headers": [{"Name", "Value"}],
      "MessageStream", "TrackOpens": false, "TrackLinks": "None", "Metadata"}, …]   at most 500, at most 50 MB

Postmark answers 200 with one result per message, in the order sent, even when some messages fail:
{"ErrorCode": 0, "MessageID": …} is sent; 406 is an inactive recipient (a hard bounce or spam complaint made
Postmark deactivate the address): failed, bounce; any other code fails that message. A request refused as a
whole answers 422 with one {"ErrorCode", "Message"}. 401, 429 and 5xx are handled by ApiTransport.

Per-recipient content: /email/batch substitutes nothing (TemplateModel only works with Postmark's stored
templates, django-anymail #470), so each message carries its own filled HtmlBody and TextBody. Open and link
tracking are off (Law 25 s.9.1). Postmark has no idempotency key: the ledger is what prevents a double send; each
message's key goes in Metadata, which Postmark returns in its webhooks.

Unsubscribe (?unsubscribe=provider|own). A Broadcasts stream manages unsubscribes itself unless Postmark support
has enabled "Manage unsubscribes on your own" for the account and the stream turned it on: it then adds its own
RFC 8058 List-Unsubscribe and List-Unsubscribe-Post headers ("There is not a way to edit the List-Unsubscribe headers
when Postmark is managing your unsubscribes") and appends an "Unsubscribe" link to any message that lacks its
placeholder {{{ pm:unsubscribe }}}. Our own link and headers beside Postmark's would give two links and two
suppression lists, so:
  unsubscribe=provider  (the default, except on "outbound", Postmark's default transactional stream) the footer's
                        link is {{{ pm:unsubscribe }}}, written as it stands in HtmlBody (the href) and TextBody;
                        no List-Unsubscribe of ours is sent; whoever leaves through Postmark's page is on the
                        stream's suppression list (ManualSuppression), which suppressions() reads before a send.
  unsubscribe=own       the links of `newsletter serve` and our own List-Unsubscribe headers: only on a stream
                        that does not manage unsubscribes (a Transactional stream, or a Broadcasts stream set to
                        manage them on your own).
preflight() reads the stream (GET /message-streams/STREAM: MessageStreamType, SubscriptionManagementConfiguration.
UnsubscribeHandlingType None|Postmark|Custom) and refuses, before anything is sent: an Inbound stream; provider on a
stream that is not Broadcasts (Postmark adds its headers only on Broadcasts streams) or whose handling is not
"Postmark" (Custom or None: Postmark would leave the placeholder as it is); own on a Broadcasts stream whose handling
is "Postmark" (two links). An answer without SubscriptionManagementConfiguration is read as the documented default
("Broadcast Message Streams require unsubscribe management, Postmark is default. For Inbound and Transactional
Streams default is none"). 401/403 stop with TransportError; 429, 5xx and a lost connection are asked again as for
the suppression dump; 404/422 (no such stream) stop. send_batch refuses (TransportError, nothing sent) a batch for
unsubscribe=provider in which a message lacks the placeholder in either part or carries our List-Unsubscribe.
Why the default is provider: it is what Postmark does to a broadcast message anyway, every other combination is
refused by preflight() with a one-line reason, and "outbound" is the one stream ID Postmark gives every server for
transactional mail. Not checked against the live API: that Postmark replaces the placeholder inside an href of a
non-template /email/batch message (article 1208 says "HTML and Plain Text copy of your message", and shows it as
an href), and the exact spelling of UnsubscribeHandlingType values (compared without regard to case).
  https://postmarkapp.com/support/article/1208-how-to-add-an-unsubscribe-link           the placeholder, HTML and
      text, as an href; "Broadcast messages that aren't sent with a placeholder will automatically have the
      unsubscribe link appended in the footer"
  https://postmarkapp.com/support/article/1299-how-to-include-a-list-unsubscribe-header  Postmark adds the RFC 8058
      headers on Broadcast streams it manages unsubscribes for
  https://postmarkapp.com/support/article/managing-your-own-unsubscribe-process          "Manage unsubscribes on
      your own": asked of support, then turned on per Broadcast stream
  https://postmarkapp.com/developer/api/message-streams-api                              GET /message-streams/{ID}:
      MessageStreamType, SubscriptionManagementConfiguration.UnsubscribeHandlingType and its defaults
  https://postmarkapp.com/support/article/1215-managing-message-streams-with-postmarks-api   example answer

Docs relied on:
  https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails   endpoint, 500 / 50 MB, response
  https://postmarkapp.com/developer/api/email-api                                 body format of one message
  https://postmarkapp.com/developer/api/overview                                  HTTP statuses, API error codes
  https://postmarkapp.com/support/article/troubleshooting-422-unprocessable-entity-errors     a 422 body
  https://postmarkapp.com/support/article/1125-custom-metadata-faq                Metadata
  https://github.com/activecampaign/postmark-php/wiki/Sending-Batches             "the /batch endpoint will return a
      200-level http status, even when validation for individual messages may fail … (the results are ordered the
      same as the original messages)"

Webhooks: Postmark signs nothing. Its one documented protection is HTTP basic auth, written into the webhook URL
as https://USER:PASSWORD@example.org/… (or as the webhook's HttpAuth in the Webhooks API), which Postmark sends as
an Authorization: Basic header; verify_webhook checks it against NEWSLETTER_WEBHOOK_SECRET_POSTMARK="USER:PASSWORD".
Basic auth carries no timestamp and does not cover the body: only HTTPS protects against replay and tampering.
Each request is one JSON object (no batches) whose RecordType names the event. On a Broadcast stream Postmark sends
no Bounce or SpamComplaint webhook, only SubscriptionChange: an address put on (SuppressSending true) or taken off
the stream's suppression list, with SuppressionReason HardBounce, SpamComplaint or ManualSuppression ("If a
recipient unsubscribes, they will be suppressed with the SuppressionReason of ManualSuppression"). Each event
echoes the message's Metadata, so Metadata["newsletter-key"] gives back the ledger key (not on reactivations, nor
on suppressions made by hand in Postmark).
  https://postmarkapp.com/developer/webhooks/webhooks-overview              basic HTTP authentication in the URL
  https://postmarkapp.com/developer/api/webhooks-api                        HttpAuth {Username, Password}, Triggers
  https://postmarkapp.com/developer/webhooks/bounce-webhook                 Bounce payload; "only available in
      Transactional Message Streams"
  https://postmarkapp.com/developer/webhooks/spam-complaint-webhook         SpamComplaint payload; same restriction
  https://postmarkapp.com/developer/webhooks/subscription-change-webhook    SubscriptionChange payload and fields
  https://postmarkapp.com/developer/api/bounce-api                          the bounce Types and TypeCodes
  https://postmarkapp.com/support/article/815-what-are-bounces-and-spam-complaints   which Types deactivate an address

Suppressions (`newsletter subscribers sync`): suppressions() reads the stream's suppression list in one request,
    GET https://api.postmarkapp.com/message-streams/STREAM/suppressions/dump      (STREAM: the DSN's ?stream=)
    Accept: application/json; X-Postmark-Server-Token: TOKEN                     (the same server token)
which answers {"Suppressions": [{"EmailAddress", "SuppressionReason", "Origin", "CreatedAt"}, …]}. The dump does not
page: its only query parameters are filters (SuppressionReason, Origin, fromdate, todate, EmailAddress) and the
answer carries no count, offset or cursor, so no filter is sent and the one answer is the whole list. Each entry
gives one event by its SuppressionReason, as for the SubscriptionChange webhook: HardBounce "bounced", SpamComplaint
"complained", ManualSuppression "unsubscribed" (a recipient's unsubscribe, or a suppression made by hand in Postmark,
Origin Customer); an unknown reason is skipped. 401/403 stop with TransportError; 429 and 5xx are asked again after
Retry-After (Postmark documents none) or a short backoff, then stop; an answer that is not that JSON stops too.
  https://postmarkapp.com/developer/api/suppressions-api#suppression-dump  endpoint, headers, parameters, example answer
  https://postmarkapp.com/developer/api/overview                           401, 422, 429, 500, 503
  https://github.com/activecampaign/postmark-php/wiki/Managing-Suppressions   "Suppressions will be generated with a
      Customer Origin and will have a ManualSuppression reason" (those made through the API)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from email.utils import getaddresses
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from newsletter.addresses import a_label_domain
from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, ApiTransport, header, iso_time, retry_after, short
from newsletter.transports.base import (
    HOSTED_HEADERS,
    UNSUBSCRIBE_OPTION,
    DeliveryEvent,
    Dsn,
    Outcome,
    TransportError,
    WebhookHandler,
    refuse_unless_placeholder,
)

BATCH_PATH = "/email/batch"
MAX_MESSAGES = 500
MAX_PAYLOAD_BYTES = 50_000_000  # "up to 50 MB payload size, including attachments" (batch-emails page)
DEFAULT_STREAM = "broadcast"
TRANSACTIONAL_STREAM = "outbound"  # the transactional stream Postmark gives every server: unsubscribe=own by default
OPTIONS = ("stream", "unsubscribe")
CUSTOM_HEADERS = ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")  # Reply-To has its own field
PLACEHOLDER = "{{{ pm:unsubscribe }}}"  # support article 1208, spaces included
STREAM_PATH = "/message-streams/{stream}"
METADATA_KEY = "newsletter-key"

INACTIVE_RECIPIENT = 406
# Postmark's API error codes (https://postmarkapp.com/developer/api/overview#error-codes), with what to do.
ERROR_LABELS = {
    10: "bad or missing server token; check the token in NEWSLETTER_TRANSPORT or --transport",
    100: "Postmark is down for maintenance; sending again later will work",
    300: "invalid email request",
    400: "sender signature not found; add the From address as a sender signature or domain in Postmark",
    401: "sender signature not confirmed; confirm the From address in Postmark",
    402: "invalid JSON",
    403: "incompatible JSON",
    405: "not allowed to send; check the Postmark account's credits",
    406: "inactive recipient (hard bounce or spam complaint)",
    409: "JSON required",
    410: "too many batch messages",
    411: "forbidden attachment type",
    412: "the Postmark account is pending approval; ask Postmark to approve it",
    413: "the Postmark account may not send; contact Postmark support",
    429: "rate limit exceeded",
}
RETRY_CODES = frozenset({100, 429})  # nothing is wrong with the message: the same request will work later
ACCOUNT_CODES = frozenset({10, 405, 412, 413})  # nothing can be sent until the account or token is fixed

# "Message OK, but will not deliver to these inactive addresses: {addr_spec, …}. Inactive recipients are ones that
# have generated a hard bounce or a spam complaint." and, for 406, "Found inactive addresses: {addr_spec, …}.",
# as quoted by django-anymail (anymail/backends/postmark.py). Postmark writes the addresses in lower case.
_INACTIVE_LIST = re.compile(r"inactive addresses:\s*(.*?)\.\s*Inactive recipients", re.IGNORECASE | re.DOTALL)
_NAME_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def address(mailbox: Mailbox) -> str:
    """'Name <address>' in plain UTF-8 (Postmark encodes the header itself), quoted when the name has specials; an
    international domain in A-labels (a local part that is not ASCII as it is: Postmark refuses that one message)."""
    name = " ".join(mailbox.name.split())  # no line break can reach a header
    if not name:
        return mailbox.addr_spec
    if _NAME_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{mailbox.addr_spec}>"


def hosted_unsubscribe(stream: str) -> HostedUnsubscribe:
    """Postmark's own unsubscribe on a stream; the stream is part of it, since each stream keeps its suppressions."""
    return HostedUnsubscribe(
        provider="postmark",
        url=PLACEHOLDER,
        description=f"Postmark's unsubscribe page and its List-Unsubscribe headers (message stream {stream})",
        fields={"stream": stream},
    )


def build_payload(
    messages: Sequence[Outgoing], *, stream: str = DEFAULT_STREAM, hosted: bool = False
) -> list[dict[str, Any]]:
    """The JSON array /email/batch takes: one complete message per recipient, in order.

    hosted (unsubscribe=provider): Postmark writes List-Unsubscribe and List-Unsubscribe-Post, so ours never go.
    """
    headers = [name for name in CUSTOM_HEADERS if not (hosted and name in HOSTED_HEADERS)]
    payload = []
    for message in messages:
        item: dict[str, Any] = {
            "From": address(message.sender),
            "To": address(message.recipient),
            "Subject": message.subject,
            "HtmlBody": message.html,
            "TextBody": message.text,
            "Headers": [{"Name": name, "Value": message.headers[name]} for name in headers if name in message.headers],
            "MessageStream": stream,
            "TrackOpens": False,
            "TrackLinks": "None",
            "Metadata": {METADATA_KEY: message.key},
        }
        if reply_to := message.headers.get("Reply-To"):
            item["ReplyTo"] = reply_to
        payload.append(item)
    return payload


def encode(payload: Any) -> bytes:
    """UTF-8 JSON as written (not \\u escapes): French names stay readable and 'é' costs 2 bytes, not 6."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_response(status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]) -> list[Outcome]:
    """Return one Outcome per message, in order, from Postmark's answer to /email/batch.

    Every message starts as "retry" and is upgraded only by a result that names it. Raise TransportError when
    the account or token makes any send impossible (e.g. 422 with ErrorCode 412, account pending).
    """
    outcomes = [Outcome.retry("postmark: the answer did not mention this message") for _ in messages]
    try:
        data = json.loads(body)
    except ValueError:
        data = None

    if 200 <= status < 300:
        if not isinstance(data, list):
            return [Outcome.retry(f"postmark {status}: unexpected answer, not a list: {short(body)}") for _ in messages]
        # The results come in the order of the messages (postmark-php wiki, Sending Batches).
        for index, (result, message) in enumerate(zip(data, messages, strict=False)):
            outcomes[index] = outcome_for_result(result, message)
        return outcomes

    if status == 404:
        raise TransportError(
            f"postmark {status}: no {BATCH_PATH} at this address; write postmark+api://TOKEN@default for Postmark's "
            "own API, or host:port for a local fake"
        )
    if status == 413:
        return [
            Outcome.failed(
                "postmark 413: the message is larger than Postmark accepts (10 MB per message, 50 MB per batch); "
                "make the issue smaller"
            )
            for _ in messages
        ]

    # 422 (or another 4xx): the request was refused as a whole, with one {"ErrorCode", "Message"}.
    code, text = _error(data)
    if code is None:
        return [Outcome.failed(f"postmark {status}: {short(body)}") for _ in messages]
    reason = _reason(code, text)
    if code in ACCOUNT_CODES:
        raise TransportError(reason)
    if code in RETRY_CODES:
        return [Outcome.retry(reason, retry_after(headers)) for _ in messages]
    if code == INACTIVE_RECIPIENT:
        # Only the addresses Postmark names are inactive; the others were not sent, so try them again.
        inactive = _inactive_addresses(text)
        return [
            Outcome.failed(reason, bounce=True) if message.recipient.address.lower() in inactive else outcome
            for message, outcome in zip(messages, outcomes, strict=True)
        ]
    return [Outcome.failed(reason) for _ in messages]


def outcome_for_result(result: Any, message: Outgoing) -> Outcome:
    """The Outcome of one entry of the batch answer, which belongs to `message` (same position)."""
    if not isinstance(result, dict):
        return Outcome.retry(f"postmark: unreadable result for this message: {str(result)[:200]}")
    code, text = _error(result)
    message_id = result.get("MessageID")
    if code is None and message_id:
        # "ErrorCode may be missing for Postmark service delays" (django-anymail #392), the message being accepted.
        code = 0
    if code == 0:
        if not message_id:
            return Outcome.retry("postmark 0: accepted without a MessageID; not counted as sent")
        to = result.get("To")
        if to and not _names(to, message.recipient.address):
            return Outcome.retry(f"postmark: this result is for {to}, not for this message; not counted as sent")
        if message.recipient.address.lower() in _inactive_addresses(text):
            return Outcome.failed(_reason(0, text, ERROR_LABELS[INACTIVE_RECIPIENT]), bounce=True)
        return Outcome.sent(str(message_id))
    if code is None:
        return Outcome.retry(f"postmark: result without ErrorCode: {_one_line(json.dumps(result))}")
    if code == INACTIVE_RECIPIENT:
        return Outcome.failed(_reason(code, text), bounce=True)
    if code in RETRY_CODES or code in ACCOUNT_CODES:
        # Some messages of this batch may have been sent: never raise here, or their outcomes would be lost.
        return Outcome.retry(_reason(code, text))
    return Outcome.failed(_reason(code, text))


def _error(data: Any) -> tuple[int | None, str]:
    if not isinstance(data, dict):
        return None, ""
    code = data.get("ErrorCode")
    return (code if type(code) is int else None), str(data.get("Message") or "")


def _reason(code: int, text: str, label: str | None = None) -> str:
    label = label or ERROR_LABELS.get(code, "error")
    detail = _one_line(text)
    return f"postmark {code}: {label}" + (f" — Postmark says: {detail}" if detail else "")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _inactive_addresses(text: str) -> set[str]:
    match = _INACTIVE_LIST.search(text)
    if not match:
        return set()
    return {part.strip().lower() for part in match.group(1).split(",") if part.strip()}


def _names(to: str, wanted: str) -> bool:
    """Whether a result's To ('Name <address>' or a bare address) is the recipient's address."""
    return any(_same_address(found, wanted) for _, found in getaddresses([to]) if found)


def _same_address(a: str, b: str) -> bool:
    if a.lower() == b.lower():
        return True
    # Postmark gives back an internationalized domain in its A-labels, as it was sent.
    (local_a, _, domain_a), (local_b, _, domain_b) = a.rpartition("@"), b.rpartition("@")
    try:
        same_domain = a_label_domain(domain_a).lower() == a_label_domain(domain_b).lower()
        return local_a.lower() == local_b.lower() and same_domain
    except ValueError:
        return False


# Webhooks



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
SUPPRESSION_KINDS = {"HardBounce": "bounced", "SpamComplaint": "complained", "ManualSuppression": "unsubscribed"}


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


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeError):
        return None


# Suppressions


SUPPRESSIONS_PATH = "/message-streams/{stream}/suppressions/dump"
SYNC_ATTEMPTS = 4  # one request and three more after a 429, a 5xx or a lost connection
SYNC_BACKOFF = (2.0, 5.0, 10.0)  # seconds before each new attempt when Postmark gives no Retry-After
MAX_WAIT = 120.0  # never wait longer than this for one Retry-After
_sleep = asyncio.sleep  # replaced in tests


def suppressions_path(stream: str) -> str:
    return SUPPRESSIONS_PATH.format(stream=quote(stream, safe=""))


def stream_path(stream: str) -> str:
    return STREAM_PATH.format(stream=quote(stream, safe=""))


def stream_problem(body: bytes, stream: str, hosted: bool) -> str | None:
    """Why a campaign must not go through this stream, from Postmark's answer to GET /message-streams/STREAM; None
    when the stream fits. hosted: unsubscribe=provider. Raise ValueError when the answer is not a message stream."""
    data = _json_or_none(body)
    kind = data.get("MessageStreamType") if isinstance(data, dict) else None
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"postmark: GET {stream_path(stream)} did not answer a message stream: {short(body)}")
    configuration = data.get("SubscriptionManagementConfiguration")
    handling = configuration.get("UnsubscribeHandlingType") if isinstance(configuration, dict) else None
    if not isinstance(handling, str) or not handling:
        # "Broadcast Message Streams require unsubscribe management, Postmark is default. For Inbound and
        # Transactional Streams default is none." (message-streams-api)
        handling = "Postmark" if kind.lower() == "broadcasts" else "None"
    shown_kind, shown_handling = kind, handling
    kind, handling = kind.lower(), handling.lower()
    where = f"postmark+api://…?stream={stream}"
    if kind == "inbound":
        return f"{where}: '{stream}' is an Inbound stream, which receives mail; use a Broadcasts stream to send"
    if hosted and kind != "broadcasts":
        return (
            f"{where}&unsubscribe=provider: '{stream}' is a {shown_kind} stream, and Postmark adds its "
            "unsubscribe link and List-Unsubscribe headers only on Broadcasts streams; use a Broadcasts stream, or "
            "unsubscribe=own with `newsletter serve` for the links"
        )
    if hosted and handling != "postmark":
        return (
            f"{where}&unsubscribe=provider: stream '{stream}' manages unsubscribes on your own (UnsubscribeHandling"
            f"Type {shown_handling}), so Postmark would not replace {PLACEHOLDER}; use "
            "unsubscribe=own with `newsletter serve` for the links"
        )
    if not hosted and kind == "broadcasts" and handling == "postmark":
        return (
            f"{where}&unsubscribe=own: Postmark manages unsubscribes on Broadcasts stream '{stream}' and would add "
            "its own link and List-Unsubscribe beside ours (two links, two suppression lists); use "
            'unsubscribe=provider, or ask Postmark support to enable "Manage unsubscribes on your own" and turn '
            "it on in the stream's settings"
        )
    return None


def parse_suppressions(body: bytes) -> tuple[list[DeliveryEvent], None]:
    """Return the events in one answer of /message-streams/{stream}/suppressions/dump, and the next page: None.

    The dump is not paged (see the module docstring), so the second item is always None. HardBounce is "bounced",
    SpamComplaint "complained", ManualSuppression "unsubscribed" (SUPPRESSION_KINDS); another reason is skipped.
    Raise ValueError when the body is not {"Suppressions": [...]} or an entry has no address.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeError) as error:
        raise ValueError(f"postmark suppressions: the answer is not JSON ({error}): {short(body)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Suppressions"), list):
        raise ValueError(f'postmark suppressions: expected {{"Suppressions": [...]}}, got {short(body)}')
    events = []
    for entry in data["Suppressions"]:
        if not isinstance(entry, dict):
            raise ValueError(f"postmark suppressions: an entry is not an object: {str(entry)[:200]}")
        email = entry.get("EmailAddress")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"postmark suppressions: an entry without an EmailAddress: {json.dumps(entry)[:200]}")
        reason = entry.get("SuppressionReason")
        kind = SUPPRESSION_KINDS.get(reason) if isinstance(reason, str) else None
        if kind is None:
            continue
        origin = _text(entry.get("Origin"))
        created = _text(entry.get("CreatedAt"))
        detail = f"suppressed: {reason}" + (f" by {origin}" if origin else "") + (f" at {created}" if created else "")
        events.append(
            DeliveryEvent(kind=kind, email=email.strip(), at=iso_time(created), detail=_one_line(detail), key=None)
        )
    return events, None


class PostmarkWebhooks(WebhookHandler):
    """POST /webhooks/postmark: verify_webhook and parse_webhook above."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)


class PostmarkTransport(ApiTransport):
    scheme: ClassVar[str] = "postmark+api"
    max_batch: ClassVar[int] = MAX_MESSAGES
    default_host: ClassVar[str] = "api.postmarkapp.com"
    name: ClassVar[str] = "postmark"

    def __init__(self, dsn: Dsn, *, token: str, stream: str = DEFAULT_STREAM, hosted: bool = False, **kwargs: Any):
        super().__init__(dsn, **kwargs)
        self._token = token
        self.stream = stream
        self.hosted_unsubscribe: HostedUnsubscribe | None = hosted_unsubscribe(stream) if hosted else None

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> PostmarkTransport:
        example = f"postmark+api://SERVER_TOKEN@default?stream={DEFAULT_STREAM}"
        if not dsn.user or dsn.password is not None:
            raise NewsletterError(
                f"postmark+api:// needs the server's API token, alone, before the @, e.g. {example} "
                "(Postmark: your server → API Tokens)"
            )
        unknown = sorted(set(dsn.options) - set(OPTIONS))
        if unknown:
            raise NewsletterError(
                f"postmark+api://…?{unknown[0]}=…: unknown option; the only ones are stream=MESSAGE_STREAM_ID and "
                f"unsubscribe=provider|own, e.g. {example}"
            )
        stream = dsn.option("stream", DEFAULT_STREAM).strip()
        if not stream or any(ch.isspace() for ch in stream):
            raise NewsletterError(f"postmark+api://…?stream= takes a message stream's ID, e.g. {example}")
        default = "own" if stream == TRANSACTIONAL_STREAM else "provider"
        unsubscribe = dsn.option("unsubscribe", default, UNSUBSCRIBE_OPTION)
        return cls(dsn, token=dsn.user, stream=stream, hosted=unsubscribe == "provider")

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        payload = build_payload(messages, stream=self.stream, hosted=self.hosted_unsubscribe is not None)
        return ApiRequest(
            path=BATCH_PATH,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-Postmark-Server-Token": self._token,
            },
            content=encode(payload),
        )

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Send the messages in one request, or in halves while their JSON exceeds Postmark's 50 MB.

        500 newsletters of 100 KB of HTML each would be over the limit, and Postmark refuses the whole batch.
        With unsubscribe=provider, raise TransportError (nothing sent) if a message lacks Postmark's placeholder.
        """
        if self.hosted_unsubscribe is not None:
            refuse_unless_placeholder(
                self.scheme, messages, PLACEHOLDER, "Postmark would append a second unsubscribe link"
            )
        if len(messages) > 1 and self._payload_size(messages) > MAX_PAYLOAD_BYTES:
            half = len(messages) // 2
            first = await self.send_batch(messages[:half])
            return first + await self.send_batch(messages[half:])
        return await super().send_batch(messages)

    def _payload_size(self, messages: Sequence[Outgoing]) -> int:
        try:
            return len(self.build_request(messages).content or b"")
        except ValueError:  # a message that cannot be written: super().send_batch fails it alone
            return 0

    async def preflight(self) -> None:
        """Refuse (NewsletterError) a stream on which this transport's messages would be wrong: see the module
        docstring (Unsubscribe). Raise TransportError when Postmark cannot tell (token refused, no such stream, no
        answer after SYNC_ATTEMPTS tries)."""
        body = await self._get(stream_path(self.stream), f"the message stream '{self.stream}'", "read")
        try:
            problem = stream_problem(body, self.stream, hosted=self.hosted_unsubscribe is not None)
        except ValueError as error:
            raise TransportError(f"{error}; nothing was sent") from None
        if problem:
            raise NewsletterError(problem)

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on this stream's suppression list, read from one suppressions/dump answer.

        Raise TransportError when Postmark refuses the token (401/403), keeps answering 429 or 5xx (or cannot be
        reached) after SYNC_ATTEMPTS tries, refuses the request (404/422, e.g. no such stream), or answers
        something else than the documented JSON.
        """
        body = await self._get(
            suppressions_path(self.stream), f"the suppression list of stream '{self.stream}'", "synced"
        )
        try:
            events, _ = parse_suppressions(body)
        except ValueError as error:
            raise TransportError(f"{error}; nothing was synced") from None
        for event in events:
            yield event

    async def _get(self, path: str, what: str, done: str) -> bytes:
        """The body of a 2xx answer to GET path, asked up to SYNC_ATTEMPTS times on 429, 5xx and lost connections.

        what names the resource in messages ("the suppression list of stream 'broadcast'"); done says what did not
        happen when it fails ("synced"). Raise TransportError on 401/403, another 4xx, or no answer in time.
        """
        url = self.base_url + path
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self._token}
        problem = ""
        for attempt in range(1, SYNC_ATTEMPTS + 1):
            wait: float | None = None
            try:
                response = await self.client.get(url, headers=headers)
            except httpx.TransportError as exc:  # refused, reset, timed out: ask again
                problem = f"{type(exc).__name__} {exc}".strip()
            else:
                status, body = response.status_code, response.content
                if 200 <= status < 300:
                    return body
                if status in (401, 403):
                    raise TransportError(
                        f"postmark refused the credentials ({status}: {short(body)}) for {what}; it needs the "
                        "server's API token, check it in NEWSLETTER_TRANSPORT or --transport"
                    )
                if status != 429 and status < 500:
                    code, text = _error(_json_or_none(body))
                    said = f"ErrorCode {code}: {_one_line(text)}" if code is not None else short(body)
                    raise TransportError(
                        f"postmark {status} for {what} ({said}); check ?stream= in the transport DSN: the ID of a "
                        "message stream of this server"
                    )
                problem, wait = f"{status}: {short(body)}", retry_after(response.headers)
            if attempt < SYNC_ATTEMPTS:
                await _sleep(min(wait if wait is not None else SYNC_BACKOFF[attempt - 1], MAX_WAIT))
        raise TransportError(
            f"postmark: {what} could not be read after {SYNC_ATTEMPTS} attempts (last: {problem}); nothing was "
            f"{done}, try again later"
        )
