"""sendgrid+api://KEY@default[?unsubscribe=provider&group=ID]: SendGrid's v3 Mail Send, up to 1000 recipients a request.

One content for the batch, one personalization (to, headers, substitutions, custom_args) per recipient.
What SendGrid does and why the code does what it does: docs/providers/sendgrid.md.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from functools import lru_cache
from typing import Any, ClassVar

import httpx

from newsletter.errors import NewsletterError
from newsletter.message import Body, HostedUnsubscribe, Mailbox, Outgoing
from newsletter.render import Verbatim, escape_value
from newsletter.transports._http import ApiRequest, api_base_url, short
from newsletter.transports.base import (
    UNSUBSCRIBE_OPTION,
    Dsn,
    Outcome,
    refuse_unless_placeholder,
)
from newsletter.transports.sendgrid.sync import SendgridSuppressions, _describe, _errors
from newsletter.transports.sendgrid.unsubscribe import GROUP_PLACEHOLDER, SendgridHostedUnsubscribe
from newsletter.transports.sendgrid.webhooks import KEY_ARG

PATH = "/v3/mail/send"
DEFAULT_HOST = "api.sendgrid.com"
EU_HOST = "api.eu.sendgrid.com"
REGIONS = ("global", "eu")
MAX_RECIPIENTS = 1000  # "The total number of recipients must be no more than 1000" (to + cc + bcc)
# One content a request, substitutions by plain string replacement: docs/providers/sendgrid.md
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
OUR_UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})  # SendGrid's own with asm


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


def _is_invalid_address(error: dict[str, str]) -> bool:
    """ "Does not contain a valid address." on personalizations.N.to.0.email, or the to array without one."""
    match = _PERSONALIZATION_FIELD.match(error["field"])
    rest = match.group(2) if match else None
    return bool(rest and _ADDRESS_FIELD.match(rest) and _INVALID_ADDRESS.search(error["message"]))


class SendgridTransport(SendgridHostedUnsubscribe, SendgridSuppressions):
    scheme: ClassVar[str] = "sendgrid+api"
    max_batch: ClassVar[int] = MAX_RECIPIENTS  # one recipient per personalization: 1000 personalizations
    default_host: ClassVar[str] = DEFAULT_HOST
    name: ClassVar[str] = "SendGrid"
    one_content: ClassVar[bool] = True

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

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Send the messages in one request. With unsubscribe=provider, raise TransportError (nothing sent) if a
        message lacks the group's placeholder in a part or carries our List-Unsubscribe."""
        if self.group_id is not None:
            refuse_unless_placeholder(
                self.scheme, messages, GROUP_PLACEHOLDER, "SendGrid would append its own unsubscribe links"
            )
        # Only to skip a request that would hold no recipient (SendGrid refuses it); one request otherwise.
        screened = screen(messages)
        if all(skip is not None for skip in screened):
            return [skip for skip in screened if skip is not None]
        return await super().send_batch(messages)
