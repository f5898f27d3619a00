"""postmark+api://TOKEN@default?stream=broadcast[&unsubscribe=provider|own]: Postmark's /email/batch, 500 a request.

Each message carries its own filled HtmlBody and TextBody; the answer gives one result per message, in order.
What Postmark does and why the code does what it does: docs/providers/postmark.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from email.utils import getaddresses
from typing import Any, ClassVar

from newsletter.addresses import a_label_domain
from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, retry_after, short
from newsletter.transports.base import (
    HOSTED_HEADERS,
    UNSUBSCRIBE_OPTION,
    Dsn,
    Outcome,
    TransportError,
    refuse_unless_placeholder,
)
from newsletter.transports.postmark.common import METADATA_KEY, _error, _one_line
from newsletter.transports.postmark.unsubscribe import PLACEHOLDER, PostmarkHostedUnsubscribe, hosted_unsubscribe

BATCH_PATH = "/email/batch"
MAX_MESSAGES = 500
MAX_PAYLOAD_BYTES = 50_000_000  # "up to 50 MB payload size, including attachments" (batch-emails page)
DEFAULT_STREAM = "broadcast"
TRANSACTIONAL_STREAM = "outbound"  # the transactional stream Postmark gives every server: unsubscribe=own by default
OPTIONS = ("stream", "unsubscribe")
CUSTOM_HEADERS = ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")  # Reply-To has its own field

# Postmark answers ErrorCode 406 for an inactive recipient (hard bounce, complaint): docs/providers/postmark.md
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


def _reason(code: int, text: str, label: str | None = None) -> str:
    label = label or ERROR_LABELS.get(code, "error")
    detail = _one_line(text)
    return f"postmark {code}: {label}" + (f" — Postmark says: {detail}" if detail else "")


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


class PostmarkTransport(PostmarkHostedUnsubscribe):
    """Sending (here), preflight() (unsubscribe.py) and suppressions() (sync.py) through Postmark's API."""

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
