"""ses+api://ACCESS_KEY:SECRET@default?region=REGION[&configuration_set=…]: SES v2 SendBulkEmail, 50 entries a call,
one inline template for the batch (SendEmail, one recipient a call, with ?unsubscribe=provider).

What SES does and why the code does what it does: docs/providers/ses.md.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Outgoing
from newsletter.render import escape_value
from newsletter.transports._http import ApiRequest, api_base_url
from newsletter.transports.base import (
    Dsn,
    Outcome,
    TransportError,
)
from newsletter.transports.ses.api import (
    ENTRY_HEADERS,
    SHARED_HEADERS,
    _headers,
    _tag,
    ascii_address,
    mailbox,
    parse_response,
    unsendable,
)
from newsletter.transports.ses.sync import SesSuppressions
from newsletter.transports.ses.unsubscribe import (
    SEND_EMAIL_PATH,
    SesHostedUnsubscribe,
    _hosted_settings,
    build_send_email_payload,
    hosted_problem,
    parse_send_email_response,
)
from newsletter.transports.ses.webhooks import TAG

PATH = "/v2/email/outbound-bulk-emails"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPTIONS = ("region", "configuration_set", "unsubscribe", "contact_list", "topic")


# The inline template

# SES's inline template reads every {{…}}: a literal brace must never form one (docs/providers/ses.md).
_LITERAL_BRACE = re.compile(r"\{(?=\{|\Z)|(?:(?<=\})|\A)\}")
BRACES = {"lb": "{", "rb": "}"}


def literal(text: str) -> str:
    """Template text that SES renders as `text`: no "{{" or "}}", and no brace touching a {{variable}}."""
    return _LITERAL_BRACE.sub(lambda match: "{{lb}}" if match.group() == "{" else "{{rb}}", text)


class InlineTemplate:
    """The campaign's rendered issue as an SES inline template, and each recipient's data for it."""

    def __init__(self, html_parts: list, text_parts: list):
        self.html_vars: dict[tuple[str, str], str] = {}  # (placeholder, fallback) -> variable
        self.text_vars: dict[tuple[str, str], str] = {}
        self.html = self._compile(html_parts, self.html_vars, "h")
        self.text = self._compile(text_parts, self.text_vars, "t")
        both = self.html + self.text
        self.braces = {name: brace for name, brace in BRACES.items() if "{{" + name + "}}" in both}

    @staticmethod
    def _compile(parts: list, variables: dict[tuple[str, str], str], prefix: str) -> str:
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(literal(part))
            else:
                variable = variables.setdefault(tuple(part), f"{prefix}{len(variables)}")
                out.append("{{" + variable + "}}")
        return "".join(out)

    def content(self) -> dict[str, str]:
        return {"Subject": "{{subject}}", "Html": self.html, "Text": self.text}

    def data(self, subject: str, values: Mapping[str, str]) -> dict[str, str]:
        """Every variable's value: HTML values escaped, text values as they are, the fallback when empty."""
        data = {"subject": subject, **self.braces}
        for (name, fallback), variable in self.html_vars.items():
            value = values.get(name)
            data[variable] = escape_value(value) if value else fallback
        for (name, fallback), variable in self.text_vars.items():
            value = values.get(name)
            data[variable] = value if value else fallback
        return data


def check_campaign(message: Outgoing) -> None:
    """Raise TransportError when the campaign's From or Reply-To address is one SES cannot take."""
    for field, address in (("From", message.sender.address), ("Reply-To", message.headers.get("Reply-To"))):
        if address:
            try:
                ascii_address(email.utils.parseaddr(address)[1] or address)
            except ValueError as exc:
                raise TransportError(f"SES cannot use this {field} address: {exc}") from None


def build_payload(messages: Sequence[Outgoing], *, configuration_set: str | None = None) -> dict[str, Any]:
    """The SendBulkEmail body for messages of one campaign (same body) that passed unsendable()."""
    first = messages[0]
    if any(message.body is not first.body for message in messages):
        raise ValueError("SES sends one campaign per call: every message of a batch must share its body")
    rendered = first.body.rendered
    template = InlineTemplate(rendered.html_parts, rendered.text_parts)
    shared = [
        name
        for name in SHARED_HEADERS
        if first.headers.get(name) and all(m.headers.get(name) == first.headers[name] for m in messages)
    ]
    per_entry = [*ENTRY_HEADERS, *(name for name in SHARED_HEADERS if name not in shared)]
    entries = []
    for message in messages:
        entry: dict[str, Any] = {
            "Destination": {"ToAddresses": [mailbox(message.recipient)]},
            "ReplacementEmailContent": {
                "ReplacementTemplate": {
                    "ReplacementTemplateData": json.dumps(
                        template.data(message.subject, message.values), ensure_ascii=False
                    )
                }
            },
            "ReplacementTags": [{"Name": TAG, "Value": _tag(message.key)}],
        }
        headers = _headers([(name, message.headers[name]) for name in per_entry if message.headers.get(name)])
        if headers:
            entry["ReplacementHeaders"] = headers
        entries.append(entry)
    default: dict[str, Any] = {
        "TemplateContent": template.content(),
        "TemplateData": json.dumps(template.data(first.subject, {}), ensure_ascii=False),
    }
    if shared:
        default["Headers"] = _headers([(name, first.headers[name]) for name in shared])
    payload: dict[str, Any] = {"FromEmailAddress": mailbox(first.sender)}
    reply_to = first.headers.get("Reply-To")
    if reply_to:
        name, address = email.utils.parseaddr(reply_to)
        payload["ReplyToAddresses"] = [mailbox(Mailbox(name, address or reply_to))]
    payload["DefaultContent"] = {"Template": default}
    payload["BulkEmailEntries"] = entries
    if configuration_set:
        payload["ConfigurationSetName"] = configuration_set
    return payload


class SesTransport(SesHostedUnsubscribe, SesSuppressions):
    scheme: ClassVar[str] = "ses+api"
    max_batch: ClassVar[int] = 50  # "up to 50 destination objects in each call to the SendBulkEmail operation"
    default_host: ClassVar[str] = "email.{region}.amazonaws.com"
    name: ClassVar[str] = "SES"
    one_content: ClassVar[bool] = True

    def __init__(
        self,
        dsn: Dsn,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.access_key_id, self.secret_access_key, self.region, self.configuration_set = _settings(dsn)
        self.hosted_unsubscribe = _hosted_settings(dsn, self.region)
        if self.hosted_unsubscribe is not None:
            # SendEmail, the only call that takes ListManagementOptions, has one recipient. The ignore: this instance
            # has a batch size of its own, where Transport declares one for the class.
            self.max_batch = 1  # type: ignore[misc]
        super().__init__(dsn, client=client)
        self.base_url = api_base_url(dsn, self.default_host.format(region=self.region))
        self.host = urlsplit(self.base_url).netloc
        self.clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, client: httpx.AsyncClient | None = None, **_: object) -> SesTransport:
        return cls(dsn, client=client)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        if self.hosted_unsubscribe is not None:
            if len(messages) != 1:
                raise ValueError(f"SendEmail with ListManagementOptions takes one message, not {len(messages)}")
            payload = build_send_email_payload(
                messages[0], self.hosted_unsubscribe, configuration_set=self.configuration_set
            )
            path = SEND_EMAIL_PATH
        else:
            payload, path = build_payload(messages, configuration_set=self.configuration_set), PATH
        content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = self.signed_headers("POST", path, content, headers={"Content-Type": "application/json"})
        return ApiRequest(path, headers=headers, content=content)

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        if self.hosted_unsubscribe is not None:
            return parse_send_email_response(status, headers, body, messages)
        return parse_response(status, headers, body, messages)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Fail the messages SES cannot take without sending them; send the others in one call (with
        unsubscribe=provider, one SendEmail each: max_batch is then 1)."""
        if messages:
            check_campaign(messages[0])
        if messages and self.hosted_unsubscribe is not None:
            problem = hosted_problem(messages, self.hosted_unsubscribe)
            if problem:
                raise TransportError(f"SES (unsubscribe=provider): {problem}")
            if len(messages) > 1:  # a caller that ignores max_batch: one call per message all the same
                return [outcome for message in messages for outcome in await self.send_batch([message])]
        outcomes: list[Outcome | None] = []
        sendable = []
        for message in messages:
            reason = unsendable(message)
            outcomes.append(Outcome.failed(reason) if reason else None)
            if not reason:
                sendable.append(message)
        answers = iter(await super().send_batch(sendable) if sendable else [])
        return [outcome or next(answers) for outcome in outcomes]


def _settings(dsn: Dsn) -> tuple[str, str, str, str | None]:
    """(access key ID, secret, region, configuration set) from the DSN; NewsletterError saying what to write."""
    example = "ses+api://ACCESS_KEY_ID:SECRET@default?region=ca-central-1"
    if not dsn.user or not dsn.password:
        raise NewsletterError(
            f"ses+api:// needs the access key ID and the secret access key before the @, e.g. {example} "
            "(URL-encode the secret: / as %2F, + as %2B)"
        )
    if dsn.path not in ("", "/"):
        raise NewsletterError(
            f"ses+api://…{dsn.path}: unexpected path; if the secret contains / write it as %2F, e.g. {example}"
        )
    unknown = sorted(set(dsn.options) - set(OPTIONS))
    if unknown:
        raise NewsletterError(f"ses+api://…?{unknown[0]}=: unknown option; known: {', '.join(OPTIONS)}")
    region = dsn.options.get("region", "")
    if not region:
        raise NewsletterError(
            f"ses+api:// needs the SES region of the verified identity, e.g. {example}; it is required rather than "
            "defaulted so that subscribers' data goes only where you chose"
        )
    if not REGION.match(region):
        raise NewsletterError(f"ses+api://…?region={region}: not an AWS region name; write e.g. ca-central-1")
    configuration_set = dsn.options.get("configuration_set") or None
    if configuration_set is not None and not CONFIGURATION_SET.match(configuration_set):
        raise NewsletterError(
            f"ses+api://…?configuration_set={configuration_set}: SES configuration set names have 1 to 64 "
            "letters, digits, _ or -"
        )
    return dsn.user, dsn.password, region, configuration_set
