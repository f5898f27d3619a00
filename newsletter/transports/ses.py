"""ses+api://ACCESS_KEY_ID:SECRET@default?region=ca-central-1 sends through Amazon SES v2 SendBulkEmail.

Endpoint: POST https://email.{region}.amazonaws.com/v2/email/outbound-bulk-emails, at most 50 BulkEmailEntries
a call, signed with AWS Signature Version 4 (service "ses"; sigv4() below, checked against AWS's test suite).
The region is required: identities, quotas and suppression lists are per region, and a silent us-east-1 default
would carry subscribers' data out of Canada (Québec Law 25) or fail with a confusing "not verified". Options:
region (required), configuration_set (the SES configuration set whose event destinations report bounces).
The secret must be URL-encoded in the DSN (/ as %2F, + as %2B). SES has no idempotency key: the ledger alone
prevents double sends.

Content: one inline template per batch (DefaultContent.Template.TemplateContent), every entry bringing its
own ReplacementTemplateData. The issue's %%placeholders%% become {{variables}}, one variable per placeholder
(name and fallback) and per part, because SES "doesn't escape HTML content when rendering the HTML template":
HTML variables carry values HTML-escaped here, text variables carry them as they are, and a placeholder without
value carries its fallback (already template text). Inline templates get "only simple substitutions", so no
Handlebars escape (\\{{) can be relied on: a literal brace that would touch another brace becomes {{lb}} or
{{rb}}, whose values are "{" and "}". The subject is a variable too. Every entry names every variable (a missing
one is a rendering failure that SES reports only later, as an event, after answering SUCCESS).

Headers: List-Unsubscribe in each entry's ReplacementHeaders; List-Id and List-Unsubscribe-Post in
Template.Headers when every message of the batch has the same value (else per entry too); Reply-To in
ReplyToAddresses. Values must be printable ASCII of at most 870 characters (MessageHeaderValue): non-ASCII is
RFC 2047-encoded, and a message whose value stays too long fails before sending. Date and Message-ID are left to
SES. Each entry is tagged newsletter_key=<ledger key> so that SES events can be matched to the ledger.

Results: BulkEmailEntryResults, one per entry in order. SUCCESS -> sent (MessageId kept); throttling, quota,
pause and account or configuration statuses -> retry with what to fix (nothing was sent); MESSAGE_REJECTED,
INVALID_PARAMETER and FAILED -> failed. None of them is a hard bounce (bounce=True is never set here): SES
answers SUCCESS for suppressed addresses and reports bounces later, through the configuration set's events.
Whole-request errors are named by x-amzn-ErrorType (else the body's code or __type), as botocore's rest-json
parser does: throttling and quota -> retry; credentials, signature, clock, suspended or paused account, unverified
identity ("Email address is not verified"), missing configuration set -> TransportError; other MessageRejected
and BadRequestException -> every message failed. A recipient whose local
part is not ASCII ("Amazon SES does not support the SMTPUTF8 extension") fails without being sent; a non-ASCII
domain is sent as Punycode.

Sources:
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendBulkEmail.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Template.html (TemplateContent, Headers)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_BulkEmailEntry.html (ReplacementHeaders)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_BulkEmailEntryResult.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_MessageHeader.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Destination.html (ASCII local parts, Punycode)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html
  https://docs.aws.amazon.com/ses/latest/dg/send-personalized-email-api.html (inline templates, 50 destinations)
  https://docs.aws.amazon.com/ses/latest/dg/send-personalized-email-advanced.html (no HTML escaping)
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
  botocore: botocore/data/sesv2/2019-09-27/service-2.json (shapes, statuses, error codes), botocore/parsers.py
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.header import Header
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, ApiTransport, api_base_url, retry_after, short
from newsletter.transports.base import Dsn, Outcome, TransportError

PATH = "/v2/email/outbound-bulk-emails"
SERVICE = "ses"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPTIONS = ("region", "configuration_set")
HEADER_VALUE_MAX = 870  # MessageHeaderValue: printable ASCII, at most 870 characters
SHARED_HEADERS = ("List-Id", "List-Unsubscribe-Post")  # in Template.Headers when the batch agrees on them
ENTRY_HEADERS = ("List-Unsubscribe",)  # always per entry
TAG = "newsletter_key"

# Per-entry statuses (BulkEmailStatus; the prose of the API reference spells three of them the old way).
RETRY_STATUSES = {
    "ACCOUNT_THROTTLED": "SES throttled the account (sending rate exceeded); sending again later",
    "TRANSIENT_FAILURE": "a temporary problem at SES; sending again later",
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": "the account's 24-hour sending quota is used up; sending again later",
    "ACCOUNT_SENDING_PAUSED": "sending is paused for the account (UpdateAccountSendingEnabled); resume it",
    "CONFIGURATION_SET_SENDING_PAUSED": "sending is paused for the configuration set; resume it",
    "ACCOUNT_SUSPENDED": "the SES account is suspended; see the SES console",
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": "the sender's address or domain is not verified in this region",
    "CONFIGURATION_SET_NOT_FOUND": "the configuration set does not exist in this region; fix ?configuration_set=",
    "CONFIGURATION_SET_DOES_NOT_EXIST": "the configuration set does not exist in this region; fix ?configuration_set=",
    "TEMPLATE_NOT_FOUND": "SES found no template",
    "TEMPLATE_DOES_NOT_EXIST": "SES found no template",
    "INVALID_SENDING_POOL_NAME": "the configuration set names a dedicated IP pool that does not exist",
}
FAILED_STATUSES = {
    "MESSAGE_REJECTED": "SES rejected the message",
    "INVALID_PARAMETER": "SES refused a value of this message",
    "INVALID_PARAMETER_VALUE": "SES refused a value of this message",
    "FAILED": "SES could not send the message",
}

# Whole-request errors (x-amzn-ErrorType): SendBulkEmail's own and the common ones.
RETRY_ERRORS = {
    "TooManyRequestsException", "ThrottlingException", "Throttling", "LimitExceededException",
    "InternalFailure", "InternalServiceErrorException", "ServiceUnavailable", "ServiceUnavailableException",
}  # fmt: skip
STOP_ERRORS = {
    "AccountSuspendedException": "the SES account is suspended; see the SES console",
    "SendingPausedException": "sending is paused for the account or configuration set; resume it",
    "MailFromDomainNotVerifiedException": "the sender's MAIL FROM domain is not verified; check the identity in SES",
    "NotFoundException": "SES could not find a resource the request names; check ?configuration_set=",
    "AccessDeniedException": "these credentials may not call ses:SendBulkEmail; grant it in IAM",
    "NotAuthorized": "these credentials may not call ses:SendBulkEmail; grant it in IAM",
    "IncompleteSignature": "the request signature was refused; check the access key ID and secret",
    "InvalidSignatureException": "the request signature was refused; check the secret (URL-encode / and +)",
    "SignatureDoesNotMatch": "the request signature was refused; check the secret (URL-encode / and +)",
    "InvalidClientTokenId": "SES does not know this access key ID",
    "UnrecognizedClientException": "SES does not know this access key ID",
    "MissingAuthenticationToken": "the request carried no credentials",
    "ExpiredToken": "the credentials have expired",
    "ExpiredTokenException": "the credentials have expired",
    "RequestExpired": "SES refused the request's time; check this machine's clock",
    "OptInRequired": "the account is not subscribed to SES in this region",
}


# Signature Version 4


def sigv4(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    service: str,
    query: Mapping[str, str] | None = None,
) -> str:
    """Return the Authorization header for a request; headers must hold host and x-amz-date (20150830T123600Z).

    Every given header is signed. Canonical URI and query are percent-encoded once (RFC 3986 unreserved kept).
    """
    lowered = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    amz_date = lowered["x-amz-date"]
    signed = ";".join(sorted(lowered))
    canonical_query = "&".join(
        f"{quote(key, safe='-_.~')}={quote(value, safe='-_.~')}" for key, value in sorted((query or {}).items())
    )
    canonical_request = "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/-_.~"),
            canonical_query,
            "".join(f"{name}:{lowered[name]}\n" for name in sorted(lowered)),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"


# Addresses and headers


def ascii_address(address: str) -> str:
    """The address as SES takes it: ASCII local part (else ValueError), domain in Punycode."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"'{address}' is not an email address")
    if not local.isascii():
        raise ValueError(
            f"the local part of {address} is not ASCII and Amazon SES does not support SMTPUTF8 (RFC 6531); "
            "send to this subscriber through smtp:// or another provider"
        )
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"the domain of {address} cannot be written in Punycode") from None
    return f"{local}@{domain}"


def mailbox(box: Mailbox) -> str:
    """'Name <local@domain>' for a From/To/Reply-To field: RFC 2047 name (SES asks for it), Punycode domain."""
    return email.utils.formataddr((box.name, ascii_address(box.address)), charset="utf-8")


def header_value(value: str) -> str:
    """A header value SES accepts: printable ASCII on one line (non-ASCII becomes RFC 2047 encoded-words)."""
    value = " ".join(value.split())
    if value.isascii():
        return value
    return " ".join(Header(value, "utf-8", maxlinelen=998).encode(linesep="\n").split())


def unsendable(message: Outgoing) -> str | None:
    """Why SES cannot take this message as it is (a reason for Outcome.failed), or None."""
    try:
        ascii_address(message.recipient.address)
    except ValueError as exc:
        code = "SMTPUTF8" if "SMTPUTF8" in str(exc) else "InvalidAddress"
        return f"SES {code}: {exc}"
    for name in (*SHARED_HEADERS, *ENTRY_HEADERS):
        value = message.headers.get(name)
        if value and len(header_value(value)) > HEADER_VALUE_MAX:
            return (
                f"SES InvalidHeader: the {name} header is {len(header_value(value))} characters; "
                f"SES takes at most {HEADER_VALUE_MAX}"
            )
    return None


# The inline template

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
            data[variable] = html.escape(value) if value else fallback
        for (name, fallback), variable in self.text_vars.items():
            value = values.get(name)
            data[variable] = value if value else fallback
        return data


def _headers(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"Name": name, "Value": header_value(value)} for name, value in pairs]


def _tag(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)[:256] or "_"


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


# The answer


def error_code(headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """(code, message) of an error answer, read as botocore's rest-json parser reads it."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    header = next((value for name, value in headers.items() if name.lower() == "x-amzn-errortype"), None)
    code = header or data.get("code") or data.get("Code") or data.get("__type")
    # "BadRequestException:http://internal.amazon.com/coral/…" or "com.amazonaws.sesv2#BadRequestException"
    code = (code.split(":", 1)[0].rsplit("#", 1)[-1] or None) if isinstance(code, str) else None
    text = data.get("message") or data.get("Message")
    return code, " ".join(str(text).split()) if text else short(body)


def _entry_outcome(result: object) -> Outcome:
    if not isinstance(result, dict):
        return Outcome.retry("SES: unreadable result for this message; sending again")
    status = str(result.get("Status") or "")
    detail = f" ({' '.join(str(result['Error']).split())})" if result.get("Error") else ""
    if status == "SUCCESS":
        return Outcome.sent(result.get("MessageId") or None)
    if status in FAILED_STATUSES:
        return Outcome.failed(f"SES {status}: {FAILED_STATUSES[status]}{detail}")
    if status in RETRY_STATUSES:
        return Outcome.retry(f"SES {status}: {RETRY_STATUSES[status]}{detail}")
    return Outcome.retry(f"SES {status or 'no status'}: not an answer this transport knows; sending again{detail}")


def parse_response(status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]) -> list[Outcome]:
    """One Outcome per message, in order, from SendBulkEmail's answer; raise TransportError when none can work."""
    if 200 <= status < 300:
        try:
            results = json.loads(body)["BulkEmailEntryResults"]
        except (ValueError, KeyError, TypeError):
            results = None
        if not isinstance(results, list):
            return [Outcome.retry(f"SES {status}: an answer without BulkEmailEntryResults: {short(body)}")] * len(
                messages
            )
        outcomes = [Outcome.retry("SES: the answer named no result for this message; sending again")] * len(messages)
        for index, result in enumerate(results[: len(messages)]):
            outcomes[index] = _entry_outcome(result)
        return outcomes

    code, text = error_code(headers, body)
    label = f"SES {status} {code}" if code else f"SES {status}"
    if code in RETRY_ERRORS or status == 429 or status >= 500:
        return [Outcome.retry(f"{label}: {text}", retry_after(headers))] * len(messages)
    if code in STOP_ERRORS:
        raise TransportError(f"{label}: {STOP_ERRORS[code]} ({text})")
    if code == "MessageRejected" and "not verified" in text.lower():
        raise TransportError(
            f"{label}: {text}; verify the sender's identity in this region, and while the account is in the "
            "SES sandbox every recipient too (or request production access)"
        )
    return [Outcome.failed(f"{label}: {text}")] * len(messages)


# The transport


class SesTransport(ApiTransport):
    scheme: ClassVar[str] = "ses+api"
    max_batch: ClassVar[int] = 50  # "up to 50 destination objects in each call to the SendBulkEmail operation"
    default_host: ClassVar[str] = "email.{region}.amazonaws.com"
    name: ClassVar[str] = "SES"

    def __init__(
        self,
        dsn: Dsn,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.access_key_id, self.secret_access_key, self.region, self.configuration_set = _settings(dsn)
        super().__init__(dsn, client=client)
        self.base_url = api_base_url(dsn, self.default_host.format(region=self.region))
        self.host = urlsplit(self.base_url).netloc
        self.clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, client: httpx.AsyncClient | None = None, **_: object) -> SesTransport:
        return cls(dsn, client=client)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        content = json.dumps(
            build_payload(messages, configuration_set=self.configuration_set), ensure_ascii=False
        ).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Host": self.host,
            "X-Amz-Date": self.clock().strftime("%Y%m%dT%H%M%SZ"),
        }
        headers["Authorization"] = sigv4(
            "POST",
            PATH,
            headers,
            content,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            service=SERVICE,
        )
        return ApiRequest(PATH, headers=headers, content=content)

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Fail the messages SES cannot take without sending them; send the others in one call."""
        if messages:
            check_campaign(messages[0])
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
