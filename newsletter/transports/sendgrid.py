"""sendgrid+api://KEY@default: SendGrid's v3 Mail Send endpoint, up to 1000 recipients per request.

    POST https://api.sendgrid.com/v3/mail/send      (?region=eu: https://api.eu.sendgrid.com, for EU subusers)
    Authorization: Bearer SG.…
    {"from": …, "reply_to": …, "subject": …,
     "content": [{"type": "text/plain", "value": …}, {"type": "text/html", "value": …}],   once per batch
     "personalizations": [{"to": [{"email": …, "name": …}], "headers": {…}, "substitutions": {…}}, …],
     "tracking_settings": {… all off}, "mail_settings": {"footer": {"enable": false}}}

One request sends ONE content to every recipient: a personalization per recipient carries its `to`, its own
headers (List-Unsubscribe, List-Unsubscribe-Post, List-Id) and `substitutions`, which SendGrid applies to the
content by plain string replacement. The content is the issue as rendered once (message.body.rendered), each
%%placeholder%% rewritten to a substitution key of this module's own:
  - the HTML part and the text part get distinct keys, because a substitution applies to every part while an
    HTML value must be HTML-escaped and a text value must not;
  - each (name, fallback) pair gets its own key, valued with the recipient's value or else the fallback, as
    RenderedIssue.fill() does (`%%name|chère lectrice%%` has spaces and a `|`, which SendGrid's tags may not
    hold: "Do not use spaces inside your substitution tags");
  - a key carries a digest of the content, e.g. `%%5f0c2a9e11h0_unsubscribe_url%%`, so it occurs nowhere else
    in the content and no subscriber value can name it (SendGrid expands tags found inside values).
So every recipient gets exactly message.html and message.text (a test replays the substitutions to check).
"The total collective size of your substitutions may not exceed 10,000 bytes per personalization object"
(the API reference; the Substitution Tags guide says 50,000): a message above it fails alone, unsent.

Settings: click, open and subscription tracking and Google Analytics are off (Law 25: no tracking by default;
subscription tracking would add SendGrid's own link and List-Unsubscribe), the account's footer is off, and
`asm` is omitted (an unsubscribe group adds SendGrid's own List-Unsubscribe: sendgrid/docs #3644, sendgrid-go
#437). SendGrid writes Date and Message-ID itself; Reply-To goes in its `reply_to` field. SendGrid has no
idempotency key: the deliveries ledger is what keeps a retried batch from sending twice.

Answers (all or nothing: "Right now complete batch fails", sendgrid-nodejs #974):
  202, header X-Message-Id     every recipient accepted; the id is the request's, kept on each message (the
                               Event Webhook's sg_message_id starts with it). Suppressed addresses are accepted
                               too and dropped later (a webhook event): no answer here is a bounce but an
                               address SendGrid finds invalid.
  400 {"errors": [{"message", "field", "help"}]}   nothing was sent. An error whose field names
                               `personalizations.N…` fails that recipient (an invalid address with bounce=True)
                               and the others are retried without it; any other error fails the whole batch.
  other 4xx (404, 405, 413, 415)                   the whole batch fails with SendGrid's message.
Two recipients with the same address in one request are refused ("Each unique email address in the
personalizations array should only be included once"): the second waits for a later batch (retry).
429, 5xx, 401 and 403 are handled by ApiTransport (retry after Retry-After, or stop the run).

Documentation relied on:
  https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send   (endpoint, EU host, request body)
  https://github.com/twilio/sendgrid-oai spec/json/tsg_mail_v3.json        (the same as OpenAPI: reserved headers,
                                                                           substitutions 10,000 bytes, ErrorResponse)
  https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations
  https://www.twilio.com/docs/sendgrid/for-developers/sending-email/substitution-tags
  https://sendgrid.com/docs/Classroom/Build/Add_Content/substitution_and_section_tags.html  (v3 substitutions
                                                                           in text/plain and text/html content)
  https://docs.sendgrid.com/api-reference/mail-send/limitations            (1000 recipients, `,` `;` in names)
  https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors      (400 errors, duplicate addresses)
  https://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html      (202, 200 in sandbox mode, 413)
  https://www.twilio.com/docs/sendgrid/glossary/x-message-id
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits  (429 body)
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from functools import lru_cache
from typing import Any, ClassVar

import httpx

from newsletter.errors import NewsletterError
from newsletter.message import Body, Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, ApiTransport, api_base_url, short
from newsletter.transports.base import Dsn, Outcome

PATH = "/v3/mail/send"
DEFAULT_HOST = "api.sendgrid.com"
EU_HOST = "api.eu.sendgrid.com"
REGIONS = ("global", "eu")
MAX_RECIPIENTS = 1000  # "The total number of recipients must be no more than 1000" (to + cc + bcc)
SUBSTITUTIONS_LIMIT = 10_000  # bytes of keys and values per personalization (API reference)
# Headers SendGrid writes itself (Date, Message-ID), takes in a field of its own (Reply-To), or refuses
# ("You may not override the following headers: x-sg-id, x-sg-eid, received, dkim-signature, Content-Type,
# Content-Transfer-Encoding, To, From, Subject, Reply-To, CC, BCC").
NOT_CUSTOM_HEADERS = frozenset(
    """date message-id reply-to x-sg-id x-sg-eid received dkim-signature content-type content-transfer-encoding
    to from subject cc bcc""".split()
)
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)(?:\.(.*))?$")
_ADDRESS_FIELD = re.compile(r"^to(?:\.\d+(?:\.email)?)?$")
_INVALID_ADDRESS = re.compile(r"\bvalid (?:email )?address", re.IGNORECASE)  # not "Invalid type" (a bug of ours)


@dataclass(frozen=True)
class Content:
    """A campaign's content as SendGrid gets it: both parts with substitution keys for the placeholders."""

    html: str
    text: str
    html_keys: dict[tuple[str, str], str]  # (name, fallback) -> key in the HTML part
    text_keys: dict[tuple[str, str], str]  # (name, fallback) -> key in the text part

    def substitutions(self, values: Mapping[str, str]) -> dict[str, str]:
        """One recipient's substitutions: escaped values for the HTML keys, raw ones for the text keys.

        A placeholder without a value takes its fallback, which is template text (already escaped in HTML).
        """
        subs = {}
        for (name, fallback), key in self.html_keys.items():
            value = values.get(name)
            subs[key] = html.escape(value) if value else fallback
        for (name, fallback), key in self.text_keys.items():
            value = values.get(name)
            subs[key] = value if value else fallback
        return subs


@lru_cache(maxsize=4)
def content_for(body: Body) -> Content:
    """The issue's HTML and text with each placeholder replaced by its substitution key (once per campaign)."""
    rendered = body.rendered
    literals = [p for p in (*rendered.html_parts, *rendered.text_parts) if isinstance(p, str)]
    salt = hashlib.sha256(f"{rendered.html}\0{rendered.text}".encode()).hexdigest()[:10]
    # Keys start with `%%<salt>`; with the salt in no literal text, a key can match only where it was put.
    while any(salt in literal for literal in literals):
        salt = hashlib.sha256(salt.encode()).hexdigest()[:10]
    html_value, html_keys = _with_keys(rendered.html_parts, f"{salt}h")
    text_value, text_keys = _with_keys(rendered.text_parts, f"{salt}t")
    return Content(html_value, text_value, html_keys, text_keys)


def _with_keys(parts: list, prefix: str) -> tuple[str, dict[tuple[str, str], str]]:
    keys: dict[tuple[str, str], str] = {}
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        key = keys.get(part)
        if key is None:
            # The index ends in `_` and the key in `%%`: no key is the beginning of another.
            key = keys[part] = f"%%{prefix}{len(keys)}_{part[0]}%%"
        out.append(key)
    return "".join(out), keys


def screen(messages: Sequence[Outgoing]) -> list[Outcome | None]:
    """For each message, None if it goes in the request, else the Outcome it gets without being sent."""
    if not messages:
        return []
    content = content_for(messages[0].body)
    seen: set[str] = set()
    screened: list[Outcome | None] = []
    for message in messages:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in content.substitutions(message.values).items())
        address = message.recipient.address.lower()
        if size > SUBSTITUTIONS_LIMIT:
            screened.append(
                Outcome.failed(
                    f"sendgrid: this recipient's placeholder values take {size} bytes, more than the "
                    f"{SUBSTITUTIONS_LIMIT} SendGrid accepts per recipient; shorten their fields or use smtp://"
                )
            )
        elif address in seen:
            screened.append(
                Outcome.retry(
                    "sendgrid: the address is already in this batch and SendGrid refuses an address twice in "
                    "one request; sent in a later batch"
                )
            )
        else:
            seen.add(address)
            screened.append(None)
    return screened


def build_payload(messages: Sequence[Outgoing]) -> dict[str, Any]:
    """The Mail Send body: one content for the campaign, one personalization per message that screen() lets in.

    Raise ValueError if the messages do not come from one campaign (body, sender, Reply-To): SendGrid sends
    one content to the whole request.
    """
    first = messages[0]
    for message in messages:
        if message.body is not first.body:
            raise ValueError("sendgrid: a batch must hold messages of one campaign (one body), got several")
        if message.sender != first.sender or message.headers.get("Reply-To") != first.headers.get("Reply-To"):
            raise ValueError("sendgrid: a batch must hold messages with one sender and one Reply-To")
    content = content_for(first.body)
    personalizations = []
    for message, skip in zip(messages, screen(messages), strict=True):
        if skip is not None:
            continue
        personalization: dict[str, Any] = {
            "to": [_address(message.recipient)],
            "headers": {
                name: _header_value(value)
                for name, value in message.headers.items()
                if name.lower() not in NOT_CUSTOM_HEADERS
            },
            "substitutions": content.substitutions(message.values),
        }
        if message.subject != first.subject:
            personalization["subject"] = message.subject
        personalizations.append(personalization)
    payload: dict[str, Any] = {
        "personalizations": personalizations,
        "from": _address(first.sender),
        "subject": first.subject,
        # text/plain first: SendGrid wants the parts in this order.
        "content": [{"type": "text/plain", "value": content.text}, {"type": "text/html", "value": content.html}],
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
            "subscription_tracking": {"enable": False},
            "ganalytics": {"enable": False},
        },
        "mail_settings": {"footer": {"enable": False}},
    }
    if reply_to := first.headers.get("Reply-To"):
        name, address = email.utils.parseaddr(reply_to)
        payload["reply_to"] = _address(Mailbox(name, address or reply_to))
    return payload


def _address(box: Mailbox) -> dict[str, str]:
    """{"email", "name"}: "The to.name … cannot include either the ; or , characters", so they become spaces."""
    name = " ".join(box.name.replace(",", " ").replace(";", " ").split())
    return {"email": box.address, "name": name} if name else {"email": box.address}


def _header_value(value: str) -> str:
    """ASCII as it is (List-Unsubscribe is never encoded); anything else RFC 2047-encoded, as message.py writes it."""
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=998).encode(linesep="\r\n")


def parse_response(status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]) -> list[Outcome]:
    """Return one Outcome per message, in order, from SendGrid's answer to build_payload(messages)."""
    screened = screen(messages)
    included = [index for index, skip in enumerate(screened) if skip is None]
    outcomes = [skip or Outcome.retry(f"sendgrid {status}: the answer did not name this message") for skip in screened]
    if status == 202:
        # httpx's headers ignore case; a plain dict (a test, a fixture) may not.
        message_id = next((v for k, v in headers.items() if k.lower() == "x-message-id" and v), None)
        for index in included:
            outcomes[index] = Outcome.sent(message_id)
        return outcomes
    if 200 <= status < 300:  # 200: "Your message is valid, but it is not queued to be delivered" (sandbox mode)
        for index in included:
            outcomes[index] = Outcome.retry(f"sendgrid {status}: the request was valid but not queued; not sent")
        return outcomes
    errors = _errors(body)
    by_recipient: dict[int, list[dict[str, str]]] = {}
    whole: list[dict[str, str]] = []
    for error in errors:
        match = _PERSONALIZATION_FIELD.match(error["field"])
        if status == 400 and match and int(match.group(1)) < len(included):
            by_recipient.setdefault(included[int(match.group(1))], []).append(error)
        else:
            whole.append(error)
    if whole or not errors:
        reason = f"sendgrid {status}: " + (_describe(whole) if whole else short(body) or "no error message")
        if status == 413:
            reason += " (SendGrid takes requests under 30 MB)"
        for index in included:
            outcomes[index] = Outcome.failed(reason)
    else:
        for index in included:
            outcomes[index] = Outcome.retry(
                f"sendgrid {status}: not sent, SendGrid refused the whole request for another recipient's error; "
                "sent again without it"
            )
    for index, recipient_errors in by_recipient.items():
        bounce = any(_is_invalid_address(error) for error in recipient_errors)
        what = "invalid recipient address: " if bounce else ""
        outcomes[index] = Outcome.failed(f"sendgrid {status}: {what}{_describe(recipient_errors)}", bounce=bounce)
    return outcomes


def _errors(body: bytes) -> list[dict[str, str]]:
    """SendGrid's `errors` array as {"message", "field"} strings (field "" when absent or null)."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    errors = []
    for item in items:
        if isinstance(item, dict):
            field = item.get("field")
            errors.append(
                {
                    "message": str(item.get("message") or "").strip(),
                    "field": "" if field in (None, "null") else str(field),
                }
            )
    return errors


def _describe(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['message']} ({e['field']})" if e["field"] else e["message"] for e in errors)


def _is_invalid_address(error: dict[str, str]) -> bool:
    """ "Does not contain a valid address." on personalizations.N.to.0.email, or the to array without one."""
    match = _PERSONALIZATION_FIELD.match(error["field"])
    rest = match.group(2) if match else None
    return bool(rest and _ADDRESS_FIELD.match(rest) and _INVALID_ADDRESS.search(error["message"]))


class SendgridTransport(ApiTransport):
    scheme: ClassVar[str] = "sendgrid+api"
    max_batch: ClassVar[int] = MAX_RECIPIENTS  # one recipient per personalization: 1000 personalizations
    default_host: ClassVar[str] = DEFAULT_HOST
    name: ClassVar[str] = "SendGrid"

    def __init__(self, dsn: Dsn, *, client: httpx.AsyncClient | None = None):
        super().__init__(dsn, client=client)
        self.key = dsn.user or ""
        if dsn.options.get("region") == "eu":
            self.base_url = api_base_url(dsn, EU_HOST)

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> SendgridTransport:
        """The transport for sendgrid+api://KEY@default[?region=eu]; raise NewsletterError saying what to write."""
        if not dsn.user or dsn.password:
            raise NewsletterError(
                "sendgrid+api:// needs the API key alone before the @, e.g. sendgrid+api://SG.xxxx@default "
                "(an API key with the Mail Send permission, from https://app.sendgrid.com/settings/api_keys)"
            )
        unknown = sorted(set(dsn.options) - {"region"})
        if unknown:
            raise NewsletterError(f"sendgrid+api://…?{unknown[0]}=…: unknown option; the only one is region=eu")
        dsn.option("region", "global", REGIONS)
        return cls(dsn)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        # ensure_ascii=False: French names and subjects travel as UTF-8, not as \u escapes.
        body = json.dumps(build_payload(messages), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        return ApiRequest(PATH, headers=headers, content=body)

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        # Only to skip a request that would hold no recipient (SendGrid refuses it); one request otherwise.
        screened = screen(messages)
        if all(skip is not None for skip in screened):
            return [skip for skip in screened if skip is not None]
        return await super().send_batch(messages)
