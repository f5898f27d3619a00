"""sendgrid+api://KEY@default[?unsubscribe=provider&group=ID]: SendGrid's v3 Mail Send, up to 1000 recipients a request.

    POST https://api.sendgrid.com/v3/mail/send      (?region=eu: https://api.eu.sendgrid.com, for EU subusers)
    Authorization: Bearer SG.…
    {"from": …, "reply_to": …, "subject": …,
     "content": [{"type": "text/plain", "value": …}, {"type": "text/html", "value": …}],   once per batch
     "personalizations": [{"to": [{"email": …, "name": …}], "headers": {…}, "substitutions": {…},
                           "custom_args": {"newsletter_key": …}}, …],
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

Settings: click, open and subscription tracking and Google Analytics are off (Law 25: no tracking by default),
and the account's footer is off, in every request, whatever the account's settings say. Subscription tracking is
SendGrid's trap (the counterpart of Postmark's broadcast streams): turned on under Settings > Tracking, it appends
its own global-unsubscribe link to every message and writes its own List-Unsubscribe and List-Unsubscribe-Post;
`tracking_settings.subscription_tracking.enable: false` in the request turns it off for that message, so neither
mode gets a second link from it. SendGrid writes Date and Message-ID itself; Reply-To goes in its `reply_to`
field. SendGrid has no idempotency key: the deliveries ledger is what keeps a retried batch from sending twice.

Unsubscribe (?unsubscribe=own, the default, or ?unsubscribe=provider&group=ID):
  own       the links and List-Unsubscribe headers of `newsletter serve`; no `asm` is sent (an unsubscribe group
            makes SendGrid add its own List-Unsubscribe and, without its tags in the content, a footer of links:
            sendgrid/docs #3644, sendgrid-go #437).
  provider  the unsubscribe group ID (a positive integer, required; Suppressions > Unsubscribe Groups) goes in
            every request as asm {"group_id": ID, "groups_to_display": [ID]}; the footer's link is the group's
            substitution tag <%asm_group_unsubscribe_raw_url%>, written into the content itself, in the HTML (href)
            and text parts alike, not as a per-recipient substitution (it is the same for everyone, and a
            provider's own tag is safest where SendGrid's docs put it); our List-Unsubscribe is never sent.
            preflight() checks that the group exists (GET /v3/asm/groups/ID; 404 refuses); suppressions() reads
            the group's suppressions (GET /v3/asm/groups/ID/suppressions, a bare JSON array of addresses, not
            paged) after the global unsubscribes, so whoever left through either page is skipped. send_batch
            refuses (TransportError, nothing sent) a batch in which a message lacks the tag in a part or carries
            our List-Unsubscribe. The key then also needs asm.groups.read and asm.groups.suppressions.read.
Not checked against the live API, and to check on a real message ("Show original") before relying on it:
SendGrid's documentation promises List-Unsubscribe with List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC
8058) for subscription tracking; for a message sent with asm it documents the group's links and tags, not the
headers, and sendgrid-go #437 (2021) reports a mailto-only List-Unsubscribe, which Gmail's one-click rule does not
accept. Also unverified: that the group's page and List-Unsubscribe add the address to the group's suppressions
(sendgrid/docs #4746 once saw the global list instead; both lists are read, so either way the address is skipped).
  https://www.twilio.com/docs/sendgrid/for-developers/sending-email/suppressions   asm.group_id for the v3 API,
      one group per send, integers only
  https://www.twilio.com/docs/sendgrid/ui/sending-email/recipient-subscription-preferences   the group's links,
      "If you choose not to use substitution tags, your emails will automatically have an Email Preferences link"
  https://www.twilio.com/docs/sendgrid/ui/sending-email/global-unsubscribes        the <%asm_…_raw_url%> tags;
      "When using our ASM Global or Group Unsubscribe tags, you must pass an unsubscribe group"
  https://www.twilio.com/docs/sendgrid/ui/sending-email/list-unsubscribe           subscription tracking adds
      List-Unsubscribe and List-Unsubscribe-Post
  https://support.sendgrid.com/hc/en-us/articles/20631133325467                    the same, and "With this
      setting not enabled, the list headers will need to be enabled yourself"
  https://www.twilio.com/docs/sendgrid/api-reference/suppressions-unsubscribe-groups/get-information-on-a-single-suppression-group
  https://www.twilio.com/docs/sendgrid/api-reference/suppressions-suppressions/retrieve-all-suppressions-for-a-suppression-group

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

Webhooks: SendGrid's Event Webhook posts a JSON array of events, batched ("every 30 seconds or when the batch size
reaches 768 kilobytes"), retried "for up to 24 hours" until it gets a 2xx, and possibly duplicated. With "Signed
Event Webhook Requests" enabled, SendGrid signs each request with ECDSA: X-Twilio-Email-Event-Webhook-Signature is
the base64 of a DER (r, s) signature over the SHA-256 of X-Twilio-Email-Event-Webhook-Timestamp + the raw body.
verify_webhook checks it with the verification key SendGrid shows under Settings > Mail Settings (a base64 DER
public key; PEM is accepted too), read from NEWSLETTER_WEBHOOK_SECRET_SENDGRID, and refuses a timestamp more than
WEBHOOK_TOLERANCE seconds from now: SendGrid names no tolerance, and does not say whether a retry is signed anew.
Each personalization carries custom_args {"newsletter_key": <ledger key>}, the campaign and subscriber numbers
(no personal data: SendGrid keeps custom args as "Not PII"); SendGrid adds custom args to each event as top-level
keys, except on asynchronous bounces, which carry neither them nor sg_message_id (sendgrid/docs #5177).
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
                                         (the signature, its headers, the key under Mail Settings, ECDSA, SHA-256)
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event   (the events, their fields, the drop
                                         reasons, type bounce or blocked, bounce_classification, custom_args)
  https://www.twilio.com/docs/sendgrid/ui/analytics-and-reporting/bounce-and-block-classifications
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook  (batches)
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/troubleshooting  (24 h of retries, duplicates)
  https://github.com/sendgrid/sendgrid-python sendgrid/helpers/eventwebhook, test/unit/test_eventwebhook.py
                                         (SendGrid's own verifier, and a signed example our tests verify)

Suppressions (`newsletter subscribers sync`, for those who run no server for the webhooks): suppressions() reads
four of SendGrid's suppression lists, each a paginated GET answering a bare JSON array
([{"created": <Unix seconds>, "email": …, …}, …]), with the same key (Authorization: Bearer) and Accept:
application/json (the bounces endpoint requires it; "406 Missing Accept header"):
  GET /v3/suppression/bounces         {created, email, reason, status}  -> "bounced"
  GET /v3/suppression/invalid_emails  {created, email, reason}          -> "bounced" (undeliverable; SendGrid drops
                                                                           every later message to it)
  GET /v3/suppression/spam_reports    {created, email, ip}              -> "complained"
  GET /v3/suppression/unsubscribes    {created, email}                  -> "unsubscribed" (global unsubscribes)
Pagination is limit/offset: `limit` "sets the page size … The maximum page size for this endpoint is 500 items
per page", `offset` is "the number of items in the list to skip over" (multiples of the page size). Each list is
read with limit=500 from offset 0 until a page holds fewer than 500 entries (an empty page ends it too). The Link
header SendGrid may add (an http:// URL, documented only on the generic Responses page) is not followed. The bounce
list holds the addresses SendGrid drops every later message to, soft bounces included ("hard and soft bounce
suppression lists", Bounce Purge): all of them are "bounced", a 4.x.x status is said to be a soft bounce in the
detail. Not read: blocks, which are temporary ("Unlike addresses on other suppression lists, Twilio does attempt to
send messages to blocked addresses"), and unsubscribe groups (/v3/asm/...) other than unsubscribe=provider's, which
is read last (see Unsubscribe above). An address is yielded once per kind even when a list names it twice. The key
needs read access to these lists (scopes suppression.bounces.read, suppression.invalid_emails.read,
suppression.spam_reports.read, suppression.unsubscribes.read): 401 and 403 stop the sync with a TransportError;
429, 5xx and a dropped connection are retried after Retry-After, else X-RateLimit-Reset (the Unix time SendGrid's
rate-limit page documents), else 2, 4, 8, 16 s, five tries in all; a malformed answer stops the sync.
  https://github.com/twilio/sendgrid-oai spec/json/tsg_suppressions_v3.json   (the four endpoints, their answers
                                         and examples, PaginationCommonLimit and PaginationCommonOffset)
  https://www.twilio.com/docs/sendgrid/api-reference/bounces-api/retrieve-all-bounces   (and the same reference's
                                         spam-reports-api, invalid-e-mails-api, suppressions-global-suppressions)
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/responses  (406, Link header)
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits (429,
                                         X-RateLimit-Reset)
  https://www.twilio.com/docs/sendgrid/ui/sending-email/blocks                 (blocks are retried by SendGrid)
  https://www.twilio.com/docs/sendgrid/ui/sending-email/invalid-emails
  https://www.twilio.com/docs/sendgrid/glossary/bounces    ("If an email is on the bounce list, we will auto drop
                                         any future requests to this email address")
  https://www.twilio.com/docs/sendgrid/api-reference/settings-mail/retrieve-bounce-purge-mail-settings
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from functools import lru_cache
from typing import Any, ClassVar

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from newsletter.errors import NewsletterError
from newsletter.message import Body, HostedUnsubscribe, Mailbox, Outgoing
from newsletter.render import Verbatim, escape_value
from newsletter.transports._http import ApiRequest, ApiTransport, api_base_url, header, retry_after, short
from newsletter.transports.base import (
    UNSUBSCRIBE_OPTION,
    DeliveryEvent,
    Dsn,
    Outcome,
    TransportError,
    WebhookHandler,
    refuse_unless_placeholder,
)

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
# The custom arg holding the message's ledger key; SendGrid echoes it in every event about the message.
KEY_ARG = "newsletter_key"
OUR_UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})  # SendGrid's own with asm
# The unsubscribe group's own page ("Unsubscribe From This List") as a bare URL, for an href and the text part.
GROUP_PLACEHOLDER = "<%asm_group_unsubscribe_raw_url%>"


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
            subs[key] = escape_value(value) if value else fallback
        for (name, fallback), key in self.text_keys.items():
            value = values.get(name)
            subs[key] = value if value else fallback
        return subs


Fixed = tuple[tuple[str, str], ...]  # (name, value) of the placeholders valued alike for every recipient


def fixed_values(message: Outgoing) -> Fixed:
    """The message's Verbatim values (a provider's own placeholder, e.g. <%asm_group_unsubscribe_raw_url%>): the
    same for every recipient of a campaign, so written into the content itself, never passed as a substitution."""
    return tuple(sorted((k, str(v)) for k, v in message.values.items() if isinstance(v, Verbatim)))


@lru_cache(maxsize=4)
def content_for(body: Body, fixed: Fixed = ()) -> Content:
    """The issue's HTML and text with each placeholder replaced by its substitution key (once per campaign).

    A placeholder named in `fixed` is replaced by its value itself, in both parts, as RenderedIssue.fill() writes
    it (escape_value: a Verbatim value unescaped), and gets no key.
    """
    rendered = body.rendered
    literals = [p for p in (*rendered.html_parts, *rendered.text_parts) if isinstance(p, str)]
    literals += [value for _, value in fixed]
    salt = hashlib.sha256(f"{rendered.html}\0{rendered.text}".encode()).hexdigest()[:10]
    # Keys start with `%%<salt>`; with the salt in no literal text, a key can match only where it was put.
    while any(salt in literal for literal in literals):
        salt = hashlib.sha256(salt.encode()).hexdigest()[:10]
    values = {name: Verbatim(value) for name, value in fixed}
    html_value, html_keys = _with_keys(rendered.html_parts, f"{salt}h", values, escape_value)
    text_value, text_keys = _with_keys(rendered.text_parts, f"{salt}t", values, str)
    return Content(html_value, text_value, html_keys, text_keys)


def _content(messages: Sequence[Outgoing]) -> Content:
    return content_for(messages[0].body, fixed_values(messages[0]))


def _with_keys(
    parts: list, prefix: str, fixed: Mapping[str, str] | None = None, escape=str
) -> tuple[str, dict[tuple[str, str], str]]:
    keys: dict[tuple[str, str], str] = {}
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        if fixed and part[0] in fixed:
            value = fixed[part[0]]
            out.append(escape(value) if value else part[1])
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
    content = _content(messages)
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


def build_payload(messages: Sequence[Outgoing], *, group_id: int | None = None) -> dict[str, Any]:
    """The Mail Send body: one content for the campaign, one personalization per message that screen() lets in.

    group_id (unsubscribe=provider): the unsubscribe group, sent as asm; SendGrid then writes List-Unsubscribe
    itself, so ours is never sent. Raise ValueError if the messages do not come from one campaign (body, sender,
    Reply-To, fixed values): SendGrid sends one content to the whole request.
    """
    first = messages[0]
    for message in messages:
        if message.body is not first.body:
            raise ValueError("sendgrid: a batch must hold messages of one campaign (one body), got several")
        if message.sender != first.sender or message.headers.get("Reply-To") != first.headers.get("Reply-To"):
            raise ValueError("sendgrid: a batch must hold messages with one sender and one Reply-To")
        if fixed_values(message) != fixed_values(first):
            raise ValueError("sendgrid: a batch must hold messages with one unsubscribe placeholder")
    content = _content(messages)
    not_custom = NOT_CUSTOM_HEADERS | (OUR_UNSUBSCRIBE_HEADERS if group_id is not None else frozenset())
    personalizations = []
    for message, skip in zip(messages, screen(messages), strict=True):
        if skip is not None:
            continue
        personalization: dict[str, Any] = {
            "to": [_address(message.recipient)],
            "headers": {
                name: _header_value(value) for name, value in message.headers.items() if name.lower() not in not_custom
            },
            "substitutions": content.substitutions(message.values),
            # Campaign and subscriber numbers only: SendGrid keeps custom args as "Not PII", for good.
            "custom_args": {KEY_ARG: message.key},
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
    if group_id is not None:
        # groups_to_display: the preferences page, if SendGrid offers it, shows this group alone.
        payload["asm"] = {"group_id": group_id, "groups_to_display": [group_id]}
    if reply_to := first.headers.get("Reply-To"):
        name, address = email.utils.parseaddr(reply_to)
        payload["reply_to"] = _address(Mailbox(name, address or reply_to))
    return payload


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _address(box: Mailbox) -> dict[str, str]:
    """{"email", "name"}: "The to.name … cannot include either the ; or , characters", so they become spaces. An
    international domain in A-labels; a local part that is not ASCII as it is (Twilio's changelog announced
    UTF-8 addresses in 2025, twilio.com/en-us/changelog/support-for-utf-8-email-addresses; one SendGrid refuses
    fails alone, its error naming the personalization)."""
    name = " ".join(box.name.replace(",", " ").replace(";", " ").split())
    return {"email": box.addr_spec, "name": name} if name else {"email": box.addr_spec}


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


# Webhooks

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid documents no tolerance; five minutes, as Svix's libraries and Symfony's SendGrid parser use.
WEBHOOK_TOLERANCE = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds, fullmatch: int() would also take "+1", " 1 ", "1_0", "١"
# A drop that says the address is on SendGrid's bounce list: it bounced before, and SendGrid sends nothing to it.
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


def _kind(item: dict[str, Any]) -> tuple[str, str] | None:
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


# Suppressions

SUPPRESSION_PAGE_SIZE = 500  # "The maximum page size for this endpoint is 500 items per page."
# name -> (path, kind); read in this order. Not read: blocks (temporary). The unsubscribe group of
# unsubscribe=provider is read after them (GROUP_SUPPRESSIONS_PATH), other groups never.
SUPPRESSION_LISTS: dict[str, tuple[str, str]] = {
    "bounces": ("/v3/suppression/bounces", "bounced"),
    "invalid_emails": ("/v3/suppression/invalid_emails", "bounced"),
    "spam_reports": ("/v3/suppression/spam_reports", "complained"),
    "unsubscribes": ("/v3/suppression/unsubscribes", "unsubscribed"),
}
SUPPRESSION_SCOPES = ", ".join(f"suppression.{name}.read" for name in SUPPRESSION_LISTS)
GROUP_PATH = "/v3/asm/groups/{group_id}"
GROUP_SUPPRESSIONS_PATH = "/v3/asm/groups/{group_id}/suppressions"
GROUP_SCOPES = "asm.groups.read, asm.groups.suppressions.read"
SYNC_TRIES = 5  # of one page, on 429, 5xx or a dropped connection
SYNC_BACKOFF = 2.0  # seconds before the second try when SendGrid names no wait; doubled at each try after it
SYNC_MAX_WAIT = 120.0  # a longer wait asked for ends the sync: run it again later


def parse_suppressions(
    body: bytes, list_name: str = "bounces", *, offset: int = 0, limit: int = SUPPRESSION_PAGE_SIZE
) -> tuple[list[DeliveryEvent], int | None]:
    """One page of a suppression list (SUPPRESSION_LISTS names it): its events, and the offset of the next page.

    The next offset is None when the page holds fewer than `limit` entries: the list ends there. Raise ValueError
    when the body is not a JSON array of objects, or when an entry names no address.
    """
    path, kind = SUPPRESSION_LISTS[list_name]
    data = _json_array(body, f"sendgrid {path}", "answer")
    events = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"sendgrid {path}: entry {offset + index} is {type(item).__name__}, not an object")
        email = item.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"sendgrid {path}: entry {offset + index} without an email address")
        at = _event_time(item.get("created"))
        events.append(
            DeliveryEvent(kind=kind, email=email.strip(), at=at, detail=_suppression_detail(list_name, item, at))
        )
    return events, (offset + len(data) if len(data) >= limit else None)


def _json_array(body: bytes, where: str, noun: str, of: str = "") -> list:
    """The JSON array a body holds; ValueError naming where it came from (a webhook, an endpoint) otherwise."""
    try:
        data = json.loads(body)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{where}: the {noun} is not JSON ({error})") from None
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON array{of}, got {type(data).__name__}")
    return data


def parse_group_suppressions(body: bytes, group_id: int) -> list[DeliveryEvent]:
    """The events in SendGrid's answer to GET /v3/asm/groups/{group_id}/suppressions: a JSON array of addresses
    (not paged), each "unsubscribed" from the group. Raise ValueError when the body is not a JSON array of addresses.
    """
    path = GROUP_SUPPRESSIONS_PATH.format(group_id=group_id)
    data = _json_array(body, f"sendgrid {path}", "answer", " of addresses")
    events = []
    for index, address in enumerate(data):
        if not isinstance(address, str) or "@" not in address:
            raise ValueError(f"sendgrid {path}: entry {index} is not an email address: {str(address)[:100]}")
        detail = f"unsubscribed from SendGrid unsubscribe group {group_id}"
        events.append(DeliveryEvent(kind="unsubscribed", email=address.strip(), detail=detail))
    return events


def _suppression_detail(list_name: str, item: dict[str, Any], at: datetime | None) -> str:
    """The provider's words for the event log, e.g. "hard bounce (5.1.1) on SendGrid's bounce list since …: 550 …"."""
    since = f" since {at:%Y-%m-%d %H:%M:%S} UTC" if at else ""
    reason = _text(item.get("reason"))
    if list_name == "bounces":
        status = _text(item.get("status"))
        what = {"4": "soft bounce", "5": "hard bounce"}.get(status[:1], "bounce") + (f" ({status})" if status else "")
        detail = f"{what} on SendGrid's bounce list{since}"
    elif list_name == "invalid_emails":
        detail = f"invalid address on SendGrid's invalid email list{since}"
    elif list_name == "spam_reports":
        detail, reason = f"spam report on SendGrid's spam report list{since}", ""
    else:
        detail, reason = f"global unsubscribe on SendGrid's unsubscribe list{since}", ""
    return _one_line(f"{detail}: {reason}" if reason else detail)


def _sync_wait(headers: Mapping[str, str], tries: int, now: float | None = None) -> float:
    """Seconds to wait before the next try: Retry-After, else X-RateLimit-Reset (Unix time), else a backoff."""
    delay = retry_after(headers, now)
    if delay is not None:
        return delay
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if reset.isdigit():
        return max(1.0, int(reset) - (time.time() if now is None else now))
    return SYNC_BACKOFF * 2 ** (tries - 1)


_pause = asyncio.sleep  # the tests replace it, to wait for nothing


class SendgridWebhooks(WebhookHandler):
    """POST /webhooks/sendgrid: verify_webhook and parse_webhook above."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)


class SendgridTransport(ApiTransport):
    scheme: ClassVar[str] = "sendgrid+api"
    max_batch: ClassVar[int] = MAX_RECIPIENTS  # one recipient per personalization: 1000 personalizations
    default_host: ClassVar[str] = DEFAULT_HOST
    name: ClassVar[str] = "SendGrid"

    def __init__(self, dsn: Dsn, *, client: httpx.AsyncClient | None = None, group_id: int | None = None):
        super().__init__(dsn, client=client)
        self.key = dsn.user or ""
        if dsn.options.get("region") == "eu":
            self.base_url = api_base_url(dsn, EU_HOST)
        self.group_id = group_id
        self.hosted_unsubscribe: HostedUnsubscribe | None = None
        if group_id is not None:
            self.hosted_unsubscribe = HostedUnsubscribe(
                provider="sendgrid",
                url=GROUP_PLACEHOLDER,
                description=f"SendGrid's unsubscribe page for unsubscribe group {group_id} and the List-Unsubscribe "
                "header SendGrid adds for the group",
                fields={"group_id": group_id},
            )

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> SendgridTransport:
        """The transport for sendgrid+api://KEY@default[?region=eu][&unsubscribe=provider&group=ID]; raise
        NewsletterError saying what to write."""
        if not dsn.user or dsn.password:
            raise NewsletterError(
                "sendgrid+api:// needs the API key alone before the @, e.g. sendgrid+api://SG.xxxx@default "
                "(an API key with the Mail Send permission, from https://app.sendgrid.com/settings/api_keys)"
            )
        unknown = sorted(set(dsn.options) - {"region", "unsubscribe", "group"})
        if unknown:
            raise NewsletterError(
                f"sendgrid+api://…?{unknown[0]}=…: unknown option; the only one is region=eu, beside the "
                "hosted unsubscribe's unsubscribe=provider|own and group=UNSUBSCRIBE_GROUP_ID"
            )
        dsn.option("region", "global", REGIONS)
        hosted = dsn.option("unsubscribe", "own", UNSUBSCRIBE_OPTION) == "provider"
        group = dsn.options.get("group")
        if not hosted:
            if group is not None:
                raise NewsletterError(
                    "sendgrid+api://…?group=…: an unsubscribe group goes with SendGrid's hosted unsubscribe; write "
                    "unsubscribe=provider&group=ID, or neither"
                )
            return cls(dsn)
        text = (group or "").strip()
        if not text.isascii() or not text.isdigit() or int(text) <= 0:
            shown = f"group={group}" if group is not None else "no group="
            raise NewsletterError(
                f"sendgrid+api://…?unsubscribe=provider needs group=ID, the number of an unsubscribe group ({shown}); "
                "SendGrid shows it under Suppressions > Unsubscribe Groups, e.g. "
                "sendgrid+api://SG.xxxx@default?unsubscribe=provider&group=12345"
            )
        return cls(dsn, group_id=int(text))

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        # ensure_ascii=False: French names and subjects travel as UTF-8, not as \u escapes.
        payload = build_payload(messages, group_id=self.group_id)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        return ApiRequest(PATH, headers=headers, content=body)

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)

    async def preflight(self) -> None:
        """With unsubscribe=provider, check that the unsubscribe group exists (GET /v3/asm/groups/ID): refuse
        (NewsletterError) when SendGrid does not know it. Raise TransportError when SendGrid cannot tell (key
        refused, no answer after SYNC_TRIES tries). Nothing to check for unsubscribe=own."""
        if self.group_id is None:
            return
        path = GROUP_PATH.format(group_id=self.group_id)
        status, body = await self._get(path, None, GROUP_SCOPES, missing_ok=True, again="try again later")
        if status == 404:
            raise NewsletterError(
                f"sendgrid+api://…?group={self.group_id}: SendGrid has no unsubscribe group {self.group_id} in this "
                "account; create one under Suppressions > Unsubscribe Groups and write its ID in group="
            )
        data = _json_or_none(body)
        if not isinstance(data, dict) or data.get("id") not in (self.group_id, str(self.group_id)):
            raise TransportError(f"SendGrid answered GET {path} with something else than that group: {short(body)}")

    suppression_page_size: ClassVar[int] = SUPPRESSION_PAGE_SIZE  # the tests lower it, to make short lists long

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on SendGrid's bounce, invalid email, spam report and global unsubscribe lists, page by page,
        and with unsubscribe=provider its unsubscribe group's suppressions too (group_unsubscribe: "unsubscribed").

        Raise TransportError when the key is refused (401, 403), when SendGrid still cannot answer after
        SYNC_TRIES tries or asks to wait longer than SYNC_MAX_WAIT, and when an answer is malformed.
        """
        limit = self.suppression_page_size
        seen: set[tuple[str, str]] = set()
        for list_name, (path, _) in SUPPRESSION_LISTS.items():
            offset: int | None = 0
            previous: bytes | None = None
            while offset is not None:
                body = await self._suppression_page(path, limit, offset)
                if body == previous:
                    raise TransportError(
                        f"SendGrid answered GET {path} at offset {offset} with the page before it again; its "
                        "pagination did not move on, so the sync stopped"
                    )
                try:
                    events, next_offset = parse_suppressions(body, list_name, offset=offset, limit=limit)
                except ValueError as error:
                    raise TransportError(f"SendGrid's answer could not be read: {error}") from None
                for event in events:
                    key = (event.kind, event.email.lower())
                    if key not in seen:
                        seen.add(key)
                        yield event
                previous, offset = body, next_offset
        if self.group_id is not None:
            path = GROUP_SUPPRESSIONS_PATH.format(group_id=self.group_id)
            _, body = await self._get(path, None, GROUP_SCOPES)
            try:
                events = parse_group_suppressions(body, self.group_id)
            except ValueError as error:
                raise TransportError(f"SendGrid's answer could not be read: {error}") from None
            for event in events:
                key = (event.kind, event.email.lower())
                if key not in seen:
                    seen.add(key)
                    yield event

    async def _suppression_page(self, path: str, limit: int, offset: int) -> bytes:
        """The body of one page (2xx), after up to SYNC_TRIES tries on 429, 5xx and dropped connections."""
        _, body = await self._get(path, {"limit": limit, "offset": offset}, SUPPRESSION_SCOPES)
        return body

    async def _get(
        self,
        path: str,
        params: dict[str, int] | None,
        scopes: str,
        *,
        missing_ok: bool = False,
        again: str = "run the sync again later",
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx answer to GET path (or of a 404 with missing_ok), after up to SYNC_TRIES tries on
        429, 5xx and dropped connections. Raise TransportError on 401/403 (naming `scopes`), another 4xx, or no
        answer in time."""
        request = f"GET {path}" + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        for tries in range(1, SYNC_TRIES + 1):
            try:
                response = await self.client.get(self.base_url + path, params=params, headers=headers)
            except httpx.TransportError as exc:  # refused, reset, timed out
                problem, wait = f"{type(exc).__name__} {exc}".strip(), SYNC_BACKOFF * 2 ** (tries - 1)
            else:
                status, body = response.status_code, response.content
                if 200 <= status < 300 or (missing_ok and status == 404):
                    return status, body
                said = _describe(_errors(body)) or short(body) or "no error message"
                if status in (401, 403):
                    hint = "check the key" if status == 401 else "the key may lack the permission"
                    what = "the suppression lists" if scopes == SUPPRESSION_SCOPES else "the unsubscribe group"
                    raise TransportError(
                        f"SendGrid refused the credentials ({status}: {said}) for {request}; reading {what} needs an "
                        f"API key with read access to them ({scopes}): {hint} in NEWSLETTER_TRANSPORT or --transport"
                    )
                if status != 429 and status < 500:
                    raise TransportError(f"SendGrid answered {status} to {request}: {said}")
                problem, wait = f"{status}: {said}", _sync_wait(response.headers, tries)
            if tries == SYNC_TRIES:
                raise TransportError(
                    f"SendGrid still answered {problem} after {SYNC_TRIES} tries of {request}; {again}"
                )
            if wait > SYNC_MAX_WAIT:
                raise TransportError(f"SendGrid answered {problem} to {request} and asks to wait {wait:.0f} s; {again}")
            await _pause(wait)
        raise AssertionError("unreachable")  # the last try returned or raised

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Send the messages in one request. With unsubscribe=provider, raise TransportError (nothing sent) if a
        message lacks the group's placeholder in a part or carries our List-Unsubscribe."""
        if self.group_id is not None:
            refuse_unless_placeholder(self.scheme, messages, GROUP_PLACEHOLDER,
                                      "SendGrid would append its own unsubscribe links")  # fmt: skip
        # Only to skip a request that would hold no recipient (SendGrid refuses it); one request otherwise.
        screened = screen(messages)
        if all(skip is not None for skip in screened):
            return [skip for skip in screened if skip is not None]
        return await super().send_batch(messages)
