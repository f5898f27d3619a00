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

Webhooks: SES reports bounces and complaints through Amazon SNS, which POSTs each one to an HTTPS subscription as a
JSON envelope whose Message is the SES record as a JSON string: event publishing through the configuration set
(eventType Bounce, Complaint, Delivery, Send, Subscription...; what ?configuration_set= gives) or the older identity
feedback notifications (notificationType). verify_webhook checks SNS's own signature: SignatureVersion 1 is
SHA1withRSA and 2 SHA256withRSA, over each signed field's name and value, each followed by a newline: Message,
MessageId, Subject (when present), Timestamp, TopicArn and Type for a Notification; Message, MessageId,
SubscribeURL, Timestamp, Token, TopicArn and Type for a Subscription- or UnsubscribeConfirmation. The key is the
one of the X.509 certificate at SigningCertURL, which must be https://sns.<region>.amazonaws.com/<name>.pem,
checked before anything is fetched (the pattern of AWS's own validators); trust in the certificate rests on that
HTTPS fetch, as in those validators. The secret is the TopicArn we subscribed (SNS: "Reject any message with an
unexpected TopicArn"). SNS retries an HTTPS delivery for at most 3,600 s, and every retry carries the first
Timestamp: a message older than MAX_AGE (two hours) or more than five minutes ahead is refused as a replay. RSA is
checked here in pure Python (EMSA-PKCS1-v1_5, RFC 8017 section 8.2.2): no cryptography library at run time.
parse_webhook maps a Permanent bounce to "bounced" for each bouncedRecipients entry, a complaint to "complained"
for each complainedRecipients entry (not a "not-spam" feedback report), and a Subscription event with
unsubscribeAll to "unsubscribed"; Transient and Undetermined bounces, Delivery, Send, Reject, Open, Click,
DeliveryDelay and Rendering Failure are ignored. Event publishing records carry the entry's tags as
mail.tags {"newsletter_key": ["<ledger key>"]}, which gives the key back; identity notifications carry none ("If
using feedback notifications directly on the identity, SES does not publish tags"). A SubscriptionConfirmation is
no event: subscription_confirmation_url() gives the SubscribeURL for the server to GET.
  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html
  https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html (envelopes, x-amz-sns-* headers)
  https://docs.aws.amazon.com/sns/latest/dg/sns-message-delivery-retries.html ("cannot be greater than 3600 seconds")
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html (fields, bounce types)
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html (records, mail.tags)
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html and notification-examples.html
  github.com/aws/aws-js-sns-message-validator index.js (host sns.<region>.amazonaws.com, path ending .pem)

Suppressions: `newsletter subscribers sync` reads the account-level suppression list of the DSN's region with
ListSuppressedDestinations, GET https://email.{region}.amazonaws.com/v2/email/suppression/addresses?NextToken=…&
PageSize=1000, signed like SendBulkEmail (SigV4, service "ses") with the query string in its canonical form: keys
sorted, keys and values percent-encoded once, RFC 3986 unreserved characters kept (a NextToken holds / + and =,
sent as %2F %2B %3D). No Reason filter is sent, so both reasons come back. The answer is
{"SuppressedDestinationSummaries": [{"EmailAddress", "Reason", "LastUpdateTime"}], "NextToken"}: Reason BOUNCE
("a message sent to that address results in a hard bounce") -> "bounced", COMPLAINT -> "complained", any other
reason is skipped; LastUpdateTime is a Unix time (rest-json) and becomes the event's time; pages are followed while
a NextToken comes back (the same token twice stops the run rather than looping). Neither the API reference nor
botocore's model (PageSize is a bare MaxItems integer) gives a maximum page size; SES's default page holds 1000
entries (aws/aws-cli#7859), so 1000 is asked for. SES lists no unsubscribes here: those arrive as Subscription
events through the webhook. TooManyRequestsException (429), InternalFailure and other 5xx, and connection errors
are retried on the same page after Retry-After when given, else after 1, 2 and 4 seconds (SES sends no rate-limit
headers), then TransportError; 401/403 and the credential errors above -> TransportError; InvalidNextTokenException
("an invalid or expired token") and BadRequestException -> TransportError; an answer that is not that JSON ->
TransportError. Only the account-level list is read, not a tenant's (TenantName).
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_ListSuppressedDestinations.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SuppressedDestinationSummary.html
  https://docs.aws.amazon.com/ses/latest/dg/sending-email-suppression-list.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html (canonical query)
  botocore: botocore/data/sesv2/2019-09-27/service-2.json (ListSuppressedDestinationsRequest: querystring Reason,
  StartDate, EndDate, NextToken, PageSize; TooManyRequestsException httpStatusCode 429)

SES subscription management (`?unsubscribe=provider&contact_list=NAME&topic=NAME`; the default, `own`, is all of
the above): SES's own unsubscribe page, List-Unsubscribe and List-Unsubscribe-Post, for the account's contact list.
  SendBulkEmail cannot do it: ListManagementOptions is a member of SendEmail's request only, not of SendBulkEmail's
  (the API reference's request syntax of each, and botocore's SendBulkEmailRequest), and SES documents the feature
  as "ListManagementOptions in the SendEmail operation request". So with unsubscribe=provider each message is one
  SendEmail call, POST /v2/email/outbound-emails, and max_batch is 1. What it costs: one signed request per
  recipient instead of one per 50, each carrying the whole HTML (about 50 times the requests and the upload).
  Throughput is then the runner's requests in flight (4 by default) over SES's round trip: an estimate, not
  measured, of 20 to 40 messages a second at 100 to 200 ms, under most accounts' send rate (SES counts recipients
  against it either way, so the quota is the same; the campaign's own rate still applies). A crash can send again
  at most the 4 messages in flight, not 4 batches of 50.
  Content: Simple {Subject, Body {Text, Html}, Headers}, each Charset UTF-8, holding the recipient's own text and
  HTML (Outgoing.text and .html: no SES template, so no brace escaping) with {{amazonSESUnsubscribeUrl}} where the
  footer's link goes, literally, in both parts. ListManagementOptions {ContactListName, TopicName (when given)};
  List-Id in Headers; the newsletter_key tag in EmailTags; ReplyToAddresses and ConfigurationSetName as above.
  The answer is {"MessageId"} -> sent; errors are read as SendBulkEmail's. SES's words relied on
  (sending-email-subscription-management): SES "automatically enables the unsubscribe links in every outgoing
  email when you specify the contactListName and topicName within ListManagementOptions"; "You can include the
  placeholder two times maximum. If used more than two times, only the first two occurrences are replaced"; "The
  List-Unsubscribe header and footer link are added only if the email is being sent to a single recipient, and
  the placeholder must present"; "Placeholder replacement is supported only for HTML and TEXT content types";
  List-Unsubscribe and List-Unsubscribe-Post are SES's ("If you're adding these headers in your own email … Amazon
  SES overrides them"); with a topic the header unsubscribes from that topic only, without one "from all the topics
  in the list"; "available for those using Easy DKIM" (this transport never signs: SES does). send_batch refuses
  (TransportError) a campaign whose HTML or text lacks the placeholder, or that holds it more than twice in all.
  preflight() reads GetContactList (GET /v2/email/contact-lists/NAME) and refuses a list that does not exist in the
  region, a topic it does not have, or a topic whose DefaultSubscriptionStatus is OPT_OUT (SES would then mail only
  contacts who opted in inside SES, and our subscribers are not all contacts). "Only one contact list is allowed
  per AWS account" (per region): a workspace with several lists gives each its topic, one DSN per list.
  Suppressions: besides the account-level list, suppressions() reads the whole contact list with ListContacts (POST
  /v2/email/contact-lists/NAME/contacts/list, {"NextToken"}, pages followed to the end) and reports as
  "unsubscribed" each contact with UnsubscribeAll, or with the topic's explicit OPT_OUT preference (without a
  topic: every preference it has OPT_OUT). No Filter is sent: the API documents FilteredStatus and TopicFilter but
  not how they treat UnsubscribeAll contacts, and a filter that left them out would lose unsubscribes; judging
  each contact by its own fields cannot, at the cost of reading every contact (SES's default page size). Default
  preferences never count (a contact that never chose has not unsubscribed).
  Not checked against the live API: whether SES adds a recipient who is not yet a contact to the list when they
  unsubscribe (an emulator, floci-io/floci#1875, models it so; SES's pages do not say), the delivered headers and
  their DKIM signature, and ListContacts's POST form (the current API reference; older SDKs send a GET with a body).
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendBulkEmail.html (no ListManagementOptions)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html (ListManagementOptions, Content)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_ListManagementOptions.html (ContactListName required)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Message.html and API_Content.html (Headers, Charset)
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_ListContacts.html, API_ListContactsFilter.html,
    API_Contact.html, API_GetContactList.html, API_Topic.html (DefaultSubscriptionStatus)
  https://docs.aws.amazon.com/ses/latest/dg/sending-email-subscription-management.html (quoted above; the same
    text in github.com/awsdocs/amazon-ses-developer-guide doc-source/sending-email-subscription-management.md)
  https://docs.aws.amazon.com/ses/latest/dg/sending-email-list-management.html (one contact list per account, 20
    topics, "Amazon SES will bounce an email if it is sent to an unsubscribed contact on your contact list")
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.header import Header
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.addresses import a_label_domain
from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Mailbox, Outgoing
from newsletter.render import escape_value
from newsletter.transports._http import ApiRequest, ApiTransport, api_base_url, iso_time, retry_after, short
from newsletter.transports.base import (
    UNSUBSCRIBE_OPTION,
    DeliveryEvent,
    Dsn,
    Outcome,
    TransportError,
    WebhookHandler,
    not_built_for,
)

PATH = "/v2/email/outbound-bulk-emails"
SERVICE = "ses"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPTIONS = ("region", "configuration_set", "unsubscribe", "contact_list", "topic")
HEADER_VALUE_MAX = 870  # MessageHeaderValue: printable ASCII, at most 870 characters
SHARED_HEADERS = ("List-Id", "List-Unsubscribe-Post")  # in Template.Headers when the batch agrees on them
ENTRY_HEADERS = ("List-Unsubscribe",)  # always per entry
TAG = "newsletter_key"
# Subscription management (unsubscribe=provider): SendEmail, one recipient a call, and SES's placeholder.
SEND_EMAIL_PATH = "/v2/email/outbound-emails"
UNSUBSCRIBE_PLACEHOLDER = "{{amazonSESUnsubscribeUrl}}"
PLACEHOLDER_MAX = 2  # "You can include the placeholder two times maximum"
PROVIDER_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")  # SES writes them ("overrides them")
LIST_NAME_MAX = 128

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
    canonical_request = "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/-_.~"),
            canonical_query(query or {}),
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


def canonical_query(query: Mapping[str, str]) -> str:
    """The SigV4 canonical query string, which is also what we send: sorted, each key and value encoded once."""
    encoded = sorted((quote(key, safe="-_.~"), quote(value, safe="-_.~")) for key, value in query.items())
    return "&".join(f"{key}={value}" for key, value in encoded)


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
    try:
        return f"{local}@{a_label_domain(domain)}"
    except ValueError:
        raise ValueError(f"the domain of {address} cannot be written in Punycode") from None


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
            data[variable] = escape_value(value) if value else fallback
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


# Subscription management: SendEmail with ListManagementOptions, one recipient a call


def hosted_unsubscribe(region: str, contact_list: str, topic: str | None) -> HostedUnsubscribe:
    """What unsubscribe=provider gives an SES transport: SES's placeholder, for this region's list and topic."""
    where = f"contact list {contact_list}" + (f", topic {topic}" if topic else ", every topic") + f", {region}"
    return HostedUnsubscribe(
        provider="ses",
        url=UNSUBSCRIBE_PLACEHOLDER,
        description=(
            f"Amazon SES subscription management ({where}): SES's unsubscribe page, List-Unsubscribe and "
            "List-Unsubscribe-Post; one SendEmail per message"
        ),
        fields={"region": region, "contact_list": contact_list, "topic": topic},
    )


def hosted_problem(messages: Sequence[Outgoing], hosted: HostedUnsubscribe) -> str | None:
    """Why these messages cannot go out with SES's subscription management (one line), or None.

    Each must have been built for it (SES's placeholder as the link, no List-Unsubscribe of ours), and carry the
    placeholder in its HTML and in its text, at most twice in all (SES replaces "only the first two occurrences").
    """
    for message in messages:
        if problem := not_built_for(message, hosted, "SES"):
            return problem
    first = messages[0]
    in_html, in_text = first.html.count(hosted.url), first.text.count(hosted.url)
    if not in_html or not in_text:
        part = "HTML" if not in_html else "text"
        return (
            f"the issue's {part} part has no %%unsubscribe_url%%, so SES would add no unsubscribe link (nor its "
            "List-Unsubscribe header); keep it in the footer template"
        )
    if in_html + in_text > PLACEHOLDER_MAX:
        return (
            f"the issue holds %%unsubscribe_url%% {in_html + in_text} times; SES replaces only the first "
            f"{PLACEHOLDER_MAX}, the others would reach readers as {hosted.url}: keep one in the HTML, one in the text"
        )
    return None


def build_send_email_payload(
    message: Outgoing, hosted: HostedUnsubscribe, *, configuration_set: str | None = None
) -> dict[str, Any]:
    """The SendEmail body for one message with SES's subscription management (see the module doc).

    The recipient's own text and HTML, each with SES's placeholder as it stands; no List-Unsubscribe of ours.
    """
    utf8 = "UTF-8"
    headers = _headers(
        [
            (name, value)
            for name, value in message.headers.items()
            if name in SHARED_HEADERS and name not in PROVIDER_HEADERS and value
        ]
    )
    simple: dict[str, Any] = {
        "Subject": {"Data": message.subject, "Charset": utf8},
        "Body": {"Text": {"Data": message.text, "Charset": utf8}, "Html": {"Data": message.html, "Charset": utf8}},
    }
    if headers:
        simple["Headers"] = headers
    payload: dict[str, Any] = {
        "FromEmailAddress": mailbox(message.sender),
        "Destination": {"ToAddresses": [mailbox(message.recipient)]},
    }
    reply_to = message.headers.get("Reply-To")
    if reply_to:
        name, address = email.utils.parseaddr(reply_to)
        payload["ReplyToAddresses"] = [mailbox(Mailbox(name, address or reply_to))]
    payload["Content"] = {"Simple": simple}
    payload["EmailTags"] = [{"Name": TAG, "Value": _tag(message.key)}]
    if configuration_set:
        payload["ConfigurationSetName"] = configuration_set
    options = {"ContactListName": str(hosted.fields["contact_list"])}
    if hosted.fields.get("topic"):
        options["TopicName"] = str(hosted.fields["topic"])
    payload["ListManagementOptions"] = options
    return payload


def parse_send_email_response(
    status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
) -> list[Outcome]:
    """One Outcome per message (a SendEmail call carries one) from SendEmail's answer, {"MessageId": …} when sent."""
    if 200 <= status < 300:
        try:
            message_id = json.loads(body).get("MessageId")
        except (ValueError, AttributeError):
            message_id = None
        if isinstance(message_id, str) and message_id:
            return [Outcome.sent(message_id)] * len(messages)
        return [Outcome.retry(f"SES {status}: an answer without MessageId: {short(body)}")] * len(messages)
    return _error_outcomes(status, headers, body, messages)


def parse_contacts(body: bytes, topic: str | None) -> tuple[list[DeliveryEvent], str | None]:
    """The unsubscribed contacts in one ListContacts answer, and its NextToken (None on the last page).

    A contact is unsubscribed with UnsubscribeAll, or with an explicit OPT_OUT for `topic` (without a topic: when
    every preference it states is OPT_OUT). TopicDefaultPreferences never count. Raise ValueError when the body is
    not the documented JSON.
    """
    contacts, token = _page_of_addresses(body, "the ListContacts answer", "Contacts", "contact")
    events = []
    for contact, address in contacts:
        preferences = {
            str(item.get("TopicName")): item.get("SubscriptionStatus")
            for item in _list(contact.get("TopicPreferences"))
            if isinstance(item, dict)
        }
        if contact.get("UnsubscribeAll") is True:
            detail = "unsubscribed from every topic of the SES contact list"
        elif topic is not None and preferences.get(topic) == "OPT_OUT":
            detail = f"unsubscribed from the SES topic {topic}"
        elif topic is None and preferences and all(status == "OPT_OUT" for status in preferences.values()):
            detail = "unsubscribed from each topic of the SES contact list"
        else:
            continue
        at = _unix_time(contact.get("LastUpdatedTimestamp"))
        events.append(DeliveryEvent("unsubscribed", address, None, at, detail + (f", {at.isoformat()}" if at else "")))
    return events, token


def _page_of_addresses(body: bytes, what: str, key: str, item: str) -> tuple[list[tuple[dict, str]], str | None]:
    """The objects of one page of a listing (ListContacts, ListSuppressedDestinations), each with its
    EmailAddress, and the page's NextToken (None on the last). Raise ValueError for anything else."""
    data = _json_object(body, what)
    found = data.get(key, [])
    if not isinstance(found, list):
        raise ValueError(f"{key} is not a list")
    token = data.get("NextToken")
    if token is not None and not isinstance(token, str):
        raise ValueError("NextToken is not a string")
    page = []
    for index, entry in enumerate(found):
        if not isinstance(entry, dict):
            raise ValueError(f"{item} {index} is not an object")
        address = _recipient(entry.get("EmailAddress"))
        if address is None:
            raise ValueError(f"{item} {index} has no EmailAddress")
        page.append((entry, address))
    return page, token or None


def contact_list_problem(body: bytes, contact_list: str, topic: str | None) -> str | None:
    """What in a GetContactList answer stops SES's subscription management from working as asked, or None."""
    data = _json_object(body, "the GetContactList answer")
    topics = {
        str(item.get("TopicName")): item.get("DefaultSubscriptionStatus")
        for item in _list(data.get("Topics"))
        if isinstance(item, dict)
    }
    if topic is None:
        return None
    if topic not in topics:
        known = ", ".join(sorted(topics)) or "none"
        return (
            f"the SES contact list {contact_list} has no topic {topic} (its topics: {known}); add it "
            "(UpdateContactList) or fix ?topic="
        )
    if topics[topic] != "OPT_IN":
        return (
            f"the SES topic {topic} is OPT_OUT by default, so SES would mail only contacts who opted in to it inside "
            "SES; give the list a topic whose default is OPT_IN (a topic's default cannot be changed)"
        )
    return None


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
    return _error_outcomes(status, headers, body, messages)


def _error_outcomes(
    status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
) -> list[Outcome]:
    """The outcomes of a whole request SES refused (SendBulkEmail's or SendEmail's); TransportError if none can work."""
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


# Webhooks: SES events through Amazon SNS

MAX_AGE = 2 * 3600.0  # seconds: SNS retries an HTTPS delivery for at most 3,600 s, plus an hour for backlogs and clocks
MAX_AHEAD = 300.0  # seconds a Timestamp may be ahead of our clock
SNS_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
SNS_HOST = re.compile(rf"sns\.{SNS_REGION}\.amazonaws\.com")
SIGNING_CERT_URL = re.compile(rf"https://sns\.{SNS_REGION}\.amazonaws\.com/[A-Za-z0-9_-]+\.pem")
# The fields of the string to sign, in byte order; Subject only when the notification has one.
SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SNS_SIGNATURE_HASHES = {"1": "sha1", "2": "sha256"}  # SHA1withRSA, SHA256withRSA
RSA_MIN_BITS = 1024
CERTIFICATE_TIMEOUT = 10.0
CERTIFICATE_MAX_BYTES = 64 * 1024
CERTIFICATE_CACHE_SIZE = 32
_certificates: dict[str, bytes] = {}  # SigningCertURL -> PEM, filled by fetch_signing_certificate


def is_signing_cert_url(url: object) -> bool:
    """True for https://sns.<region>.amazonaws.com/<name>.pem and nothing else (no port, user, query or fragment)."""
    return isinstance(url, str) and SIGNING_CERT_URL.fullmatch(url) is not None


def fetch_signing_certificate(url: str) -> bytes:
    """The PEM certificate at an SNS SigningCertURL, fetched once per URL (httpx, CERTIFICATE_TIMEOUT seconds).

    Raise ValueError for any other URL, and httpx's errors or ValueError when the answer is not a certificate.
    """
    if not is_signing_cert_url(url):
        raise ValueError("not an SNS signing certificate URL")
    if url in _certificates:
        return _certificates[url]
    response = httpx.get(url, timeout=CERTIFICATE_TIMEOUT, follow_redirects=False)
    response.raise_for_status()
    pem = response.content
    if len(pem) > CERTIFICATE_MAX_BYTES or b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("the SigningCertURL did not answer with a PEM certificate")
    if len(_certificates) >= CERTIFICATE_CACHE_SIZE:
        _certificates.pop(next(iter(_certificates)))
    _certificates[url] = pem
    return pem


def sns_string_to_sign(message: Mapping[str, Any]) -> str | None:
    """The string SNS signs for this message ("Name\\nvalue\\n" for each signed field), or None if it cannot be made.

    The values are the JSON-decoded strings: escaped characters in Message and Subject in their original form.
    """
    fields = SNS_SIGNED_FIELDS.get(message.get("Type"))  # type: ignore[arg-type]
    if fields is None:
        return None
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            return None
        lines.append(f"{name}\n{value}\n")
    return "".join(lines)


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value given for header `name`, whatever the case of its name."""
    return [str(value) for key, value in headers.items() if str(key).lower() == name]


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    fetch_certificate: Callable[[str], bytes] | None = None,
    now: datetime | None = None,
    max_age: float | None = MAX_AGE,
) -> bool:
    """Return True only if body is an SNS message signed by SNS, for our topic, and not stale.

    secret is the ARN of the SNS topic that the configuration set's event destination (or the identity's
    notifications) publishes to, e.g. arn:aws:sns:ca-central-1:123456789012:newsletter-events; several ARNs may be
    given separated by commas. The server reads it from NEWSLETTER_WEBHOOK_SECRET_SES. A message for another topic,
    with another signature version than 1 or 2, a SigningCertURL that is not https://sns.<region>.amazonaws.com/….pem
    (refused before any fetch), a bad signature, or a Timestamp more than max_age seconds old (MAX_AGE, two hours;
    None to skip) or MAX_AHEAD seconds ahead is refused. x-amz-sns-message-type and x-amz-sns-topic-arn, when
    present, must agree with the signed body. fetch_certificate(url) -> PEM bytes defaults to
    fetch_signing_certificate (httpx, cached by URL). Never raises: anything malformed returns False.
    """
    try:
        topics = [topic.strip() for topic in secret.split(",") if topic.strip()]
        message = json.loads(body)
        if not topics or not isinstance(message, dict):
            return False
        kind, topic = message.get("Type"), message.get("TopicArn")
        if kind not in SNS_SIGNED_FIELDS or not isinstance(topic, str):
            return False
        matches = [hmac.compare_digest(topic.encode(), expected.encode()) for expected in topics]
        if not any(matches):
            return False
        for name, value in (("x-amz-sns-message-type", kind), ("x-amz-sns-topic-arn", topic)):
            if any(given != value for given in _header_values(headers, name)):
                return False
        if max_age is not None:
            sent = iso_time(message.get("Timestamp"))
            age = ((now or datetime.now(UTC)) - sent).total_seconds() if sent else None
            if age is None or age > max_age or age < -MAX_AHEAD:
                return False
        algorithm = SNS_SIGNATURE_HASHES.get(message.get("SignatureVersion"))  # type: ignore[arg-type]
        url, signature = message.get("SigningCertURL"), message.get("Signature")
        text = sns_string_to_sign(message)
        if algorithm is None or not is_signing_cert_url(url) or not isinstance(signature, str) or text is None:
            return False
        signature_bytes = base64.b64decode(signature, validate=True)
        certificate = (fetch_certificate or fetch_signing_certificate)(url)
        return signed_by_certificate(certificate, signature_bytes, algorithm, text.encode("utf-8"))
    except Exception:  # malformed JSON, base64, certificate or headers; a failed fetch: all mean "not verified"
        return False


def signed_by_certificate(pem: bytes, signature: bytes, algorithm: str, data: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 verification of data with the RSA key of a PEM certificate (cryptography does the math).

    Trust in the certificate comes from where it was fetched (is_signing_cert_url), not from here.
    """
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < RSA_MIN_BITS:
            return False
        digest = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()  # noqa: S303  (SNS SignatureVersion 1)
        key.verify(signature, data, padding.PKCS1v15(), digest)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def subscription_confirmation_url(body: bytes) -> str | None:
    """The SubscribeURL of an SNS SubscriptionConfirmation, which the server GETs to confirm; else None.

    Only an https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription… URL is returned. An
    UnsubscribeConfirmation's SubscribeURL would subscribe again, so it is never returned. Call after verify_webhook.
    """
    try:
        message = json.loads(body)
        url = message.get("SubscribeURL") if message.get("Type") == "SubscriptionConfirmation" else None
        if not isinstance(url, str) or not url.isascii() or any(char.isspace() or char == "\\" for char in url):
            return None
        parts = urlsplit(url)
        confirm = parse_qs(parts.query).get("Action") == ["ConfirmSubscription"]
        if parts.scheme == "https" and SNS_HOST.fullmatch(parts.netloc) and parts.path == "/" and confirm:
            return url
    except (ValueError, TypeError, AttributeError):
        pass
    return None


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{what} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _recipient(value: object) -> str | None:
    """The bare address, its Punycode domain back in Unicode as subscribers are stored; None if not an address."""
    if not isinstance(value, str):
        return None
    address = (email.utils.parseaddr(value)[1] if "<" in value else value).strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    if "xn--" in domain.lower():
        domain = _unicode_domain(domain)
    return f"{local}@{domain}"


def _unicode_domain(domain: str) -> str:
    try:
        return domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain


def _ledger_key(mail: dict[str, Any]) -> str | None:
    """Our newsletter_key tag as event publishing echoes it: mail.tags {"newsletter_key": ["12-345"]}."""
    value = _dict(mail.get("tags")).get(TAG)
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, str) and value else None


def ses_events(record: Mapping[str, Any]) -> list[DeliveryEvent]:
    """The membership changes in one SES event record (event publishing or identity notification format)."""
    kind = record.get("eventType") or record.get("notificationType")
    mail = _dict(record.get("mail"))
    provider_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    key = _ledger_key(mail)
    sent = iso_time(mail.get("timestamp"))
    events = []
    if kind == "Bounce":
        bounce = _dict(record.get("bounce"))
        if bounce.get("bounceType") != "Permanent":  # Transient and Undetermined: not an undeliverable address
            return []
        at = iso_time(bounce.get("timestamp")) or sent
        subtype = bounce.get("bounceSubType") or "General"
        for entry in map(_dict, _list(bounce.get("bouncedRecipients"))):
            address = _recipient(entry.get("emailAddress"))
            why = entry.get("diagnosticCode") or entry.get("status")
            if address:
                detail = f"hard bounce ({subtype})" + (f": {why}" if why else "")
                events.append(DeliveryEvent("bounced", address, provider_id, at, detail, key))
    elif kind == "Complaint":
        complaint = _dict(record.get("complaint"))
        feedback = complaint.get("complaintFeedbackType")
        if feedback == "not-spam":  # "does not consider the message to be spam"
            return []
        at = iso_time(complaint.get("timestamp")) or sent
        detail = "spam complaint" + (f" ({feedback})" if feedback else "")
        if complaint.get("complaintSubType") == "OnAccountSuppressionList":
            detail += ", address on the account-level suppression list"
        for entry in map(_dict, _list(complaint.get("complainedRecipients"))):
            address = _recipient(entry.get("emailAddress"))
            if address:
                events.append(DeliveryEvent("complained", address, provider_id, at, detail, key))
    elif kind == "Subscription":
        subscription = _dict(record.get("subscription"))
        if _dict(subscription.get("newTopicPreferences")).get("unsubscribeAll") is not True:
            return []
        at = iso_time(subscription.get("timestamp")) or sent
        detail = f"unsubscribed through SES ({subscription.get('source') or 'list management'})"
        for value in _list(mail.get("destination")):
            address = _recipient(value)
            if address:
                events.append(DeliveryEvent("unsubscribed", address, provider_id, at, detail, key))
    return events


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """The membership changes in one SNS message (verified first): [] for confirmations and ignored events.

    Raise ValueError when the body or its Message is not the JSON that SNS and SES send.
    """
    envelope = _json_object(body, "the body")
    kind = envelope.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return []
    if kind != "Notification":
        raise ValueError(f"not an SNS message (Type {kind!r})")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise ValueError("the SNS notification has no Message")
    return ses_events(_json_object(message, "the SNS Message"))


# Suppressions: the account-level suppression list (ListSuppressedDestinations)

SUPPRESSION_PATH = "/v2/email/suppression/addresses"
# PageSize has no documented maximum (botocore: a bare MaxItems integer); SES's own default page holds 1000.
SUPPRESSION_PAGE_SIZE = 1000
SUPPRESSION_REASONS = {"BOUNCE": ("bounced", "hard bounce"), "COMPLAINT": ("complained", "spam complaint")}
SUPPRESSION_ATTEMPTS = 4  # the first call and three retries of the same page
SUPPRESSION_BACKOFF = 1.0  # seconds before the first retry without Retry-After, doubled for each next one
SUPPRESSION_MAX_WAIT = 60.0  # a longer Retry-After stops the sync with the wait in the message


def _unix_time(value: object) -> datetime | None:
    """A rest-json timestamp (Unix seconds, maybe fractional; an ISO 8601 string tolerated) as a UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return _unix_time(float(value))
        except ValueError:
            return iso_time(value)
    return None


def parse_suppressions(body: bytes) -> tuple[list[DeliveryEvent], str | None]:
    """The events in one ListSuppressedDestinations answer, and its NextToken (None on the last page).

    BOUNCE -> "bounced", COMPLAINT -> "complained", another reason is skipped. Raise ValueError when the body is
    not the documented JSON (a summary without an address, a list that is not a list).
    """
    summaries, token = _page_of_addresses(
        body, "the ListSuppressedDestinations answer", "SuppressedDestinationSummaries", "summary"
    )
    events = []
    for summary, address in summaries:
        reason = summary.get("Reason")
        if reason not in SUPPRESSION_REASONS:
            continue
        kind, label = SUPPRESSION_REASONS[reason]
        at = _unix_time(summary.get("LastUpdateTime"))
        detail = f"on the SES suppression list: {reason} ({label})" + (f", since {at.isoformat()}" if at else "")
        events.append(DeliveryEvent(kind, address, None, at, detail))
    return events, token


# The transport


class SesWebhooks(WebhookHandler):
    """POST /webhooks/ses: verify_webhook and parse_webhook above."""

    def confirmation_url(self, body: bytes) -> str | None:
        return subscription_confirmation_url(body)

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)


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
        self.hosted_unsubscribe = _hosted_settings(dsn, self.region)
        if self.hosted_unsubscribe is not None:
            self.max_batch = 1  # SendEmail, the only call that takes ListManagementOptions, has one recipient
        super().__init__(dsn, client=client)
        self.base_url = api_base_url(dsn, self.default_host.format(region=self.region))
        self.host = urlsplit(self.base_url).netloc
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sleep: Callable[[float], Awaitable[object]] = asyncio.sleep  # tests replace it

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, client: httpx.AsyncClient | None = None, **_: object) -> SesTransport:
        return cls(dsn, client=client)

    def signed_headers(
        self,
        method: str,
        path: str,
        content: bytes = b"",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The given headers with Host, X-Amz-Date (now) and the SigV4 Authorization that signs them all."""
        signed = {**(headers or {}), "Host": self.host, "X-Amz-Date": self.clock().strftime("%Y%m%dT%H%M%SZ")}
        signed["Authorization"] = sigv4(
            method,
            path,
            signed,
            content,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            service=SERVICE,
            query=query,
        )
        return signed

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

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on the region's account-level suppression list, page after page (see the module doc);
        with unsubscribe=provider, then every contact of the contact list who unsubscribed (from the topic or all)."""
        async for event in self._account_suppressions():
            yield event
        if self.hosted_unsubscribe is not None:
            async for event in self._contact_list_unsubscribes():
                yield event

    async def _contact_list_unsubscribes(self) -> AsyncIterator[DeliveryEvent]:
        assert self.hosted_unsubscribe is not None
        contact_list = str(self.hosted_unsubscribe.fields["contact_list"])
        topic = self.hosted_unsubscribe.fields.get("topic")
        path = f"/v2/email/contact-lists/{quote(contact_list, safe='')}/contacts/list"
        token: str | None = None
        seen: set[str] = set()
        while True:
            request = {"NextToken": token} if token else {}
            body = await self._call("POST", path, json.dumps(request).encode(), "ListContacts", contact_list)
            try:
                events, token = parse_contacts(body, str(topic) if topic else None)
            except ValueError as exc:
                raise TransportError(f"SES ListContacts: an answer this transport cannot read: {exc}") from None
            for event in events:
                yield event
            if token is None:
                return
            if token in seen:
                raise TransportError("SES ListContacts gave the same NextToken twice; stopping there")
            seen.add(token)

    async def preflight(self) -> None:
        """With unsubscribe=provider, refuse a contact list or topic that SES would not manage as asked: read
        GetContactList; NewsletterError saying what to change, TransportError when SES cannot be asked."""
        if self.hosted_unsubscribe is None:
            return
        contact_list = str(self.hosted_unsubscribe.fields["contact_list"])
        topic = self.hosted_unsubscribe.fields.get("topic")
        path = f"/v2/email/contact-lists/{quote(contact_list, safe='')}"
        body = await self._call("GET", path, b"", "GetContactList", contact_list)
        try:
            problem = contact_list_problem(body, contact_list, str(topic) if topic else None)
        except ValueError as exc:
            raise TransportError(f"SES GetContactList: an answer this transport cannot read: {exc}") from None
        if problem:
            raise NewsletterError(f"ses+api://…?unsubscribe=provider: {problem}")

    async def _call(self, method: str, path: str, content: bytes, operation: str, contact_list: str) -> bytes:
        """The body of one contact-list call (signed; JSON); retried on throttling, 5xx and connection errors."""

        def missing(code: str | None, status: int, label: str, text: str) -> str | None:
            if code == "NotFoundException" or status == 404:
                return (f"{label}: no contact list {contact_list} in {self.region} ({text}); create it "
                        "(CreateContactList: one per account and region) or fix ?contact_list=")  # fmt: skip
            return None

        return await self._read(
            method, path, operation, content=content, before=missing, refused="check the access key",
            again="try again", exhausted="nothing was sent, try again later",
        )  # fmt: skip

    async def _account_suppressions(self) -> AsyncIterator[DeliveryEvent]:
        token: str | None = None
        seen: set[str] = set()
        while True:
            body = await self._suppression_page(token)
            try:
                events, token = parse_suppressions(body)
            except ValueError as exc:
                raise TransportError(
                    f"SES ListSuppressedDestinations: an answer this transport cannot read: {exc}"
                ) from None
            for event in events:
                yield event
            if token is None:
                return
            if token in seen:
                raise TransportError("SES ListSuppressedDestinations gave the same NextToken twice; stopping there")
            seen.add(token)

    async def _suppression_page(self, token: str | None) -> bytes:
        """The body of one page; retried on throttling, 5xx and connection errors; TransportError otherwise."""
        query = {"PageSize": str(SUPPRESSION_PAGE_SIZE)}
        if token:
            query["NextToken"] = token

        def expired(code: str | None, status: int, label: str, text: str) -> str | None:
            if code == "InvalidNextTokenException":
                return f"{label}: the NextToken is invalid or expired ({text}); run the sync again"
            return None

        return await self._read(
            "GET", SUPPRESSION_PATH, "ListSuppressedDestinations", query=query, after=expired,
            refused="check the access key in NEWSLETTER_TRANSPORT or --transport", again="run the sync again",
            exhausted="nothing is lost, run the sync again later", exhausted_where=" on the same page",
        )  # fmt: skip

    async def _read(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        content: bytes = b"",
        query: dict[str, str] | None = None,
        before: Callable[[str | None, int, str, str], str | None] = lambda *_: None,
        after: Callable[[str | None, int, str, str], str | None] = lambda *_: None,
        refused: str,
        again: str,
        exhausted: str,
        exhausted_where: str = "",
    ) -> bytes:
        """The body of one signed call that reads (the contact list, the suppressions): retried on throttling, 5xx
        and connection errors; TransportError saying what to do otherwise. `before` and `after` name the
        operation's own errors, checked before and after the retryable ones."""
        headers = {"Content-Type": "application/json"} if content else {}
        url = self.base_url + path + (f"?{canonical_query(query)}" if query else "")
        problem, delay = "", SUPPRESSION_BACKOFF
        for attempt in range(SUPPRESSION_ATTEMPTS):
            if attempt:
                await self.sleep(delay)
            delay = SUPPRESSION_BACKOFF * 2**attempt  # before the next try, unless SES says Retry-After
            try:
                response = await self.client.request(
                    method, url, headers=self.signed_headers(method, path, content, query=query, headers=headers),
                    content=content or None,
                )  # fmt: skip
            except httpx.TransportError as exc:  # refused, reset, timed out
                problem = f"{type(exc).__name__} {exc}".strip()
                continue
            status, body = response.status_code, response.content
            if 200 <= status < 300:
                return body
            code, text = error_code(response.headers, body)
            label = f"SES {operation} {status}" + (f" {code}" if code else "")
            if message := before(code, status, label, text):
                raise TransportError(message)
            if code in ("AccessDeniedException", "NotAuthorized"):
                raise TransportError(
                    f"{label}: these credentials may not call ses:{operation}; grant it in IAM ({text})"
                )
            if code in STOP_ERRORS:
                raise TransportError(f"{label}: {STOP_ERRORS[code]} ({text})")
            if status in (401, 403):
                raise TransportError(f"{label}: SES refused the credentials ({text}); {refused}")
            if status == 429 or status >= 500 or code in RETRY_ERRORS:
                problem = f"{status}" + (f" {code}" if code else "") + f": {text}"
                asked = retry_after(response.headers)
                if asked is not None and asked > SUPPRESSION_MAX_WAIT:
                    raise TransportError(f"{label}: {text}; SES asks to wait {asked:.0f} s, {again} then")
                delay = asked if asked is not None else delay
                continue
            if message := after(code, status, label, text):
                raise TransportError(message)
            raise TransportError(f"{label}: {text}")
        raise TransportError(
            f"SES {operation} failed {SUPPRESSION_ATTEMPTS} times{exhausted_where} (last: {problem}); {exhausted}"
        )

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


def _hosted_settings(dsn: Dsn, region: str) -> HostedUnsubscribe | None:
    """SES's subscription management when the DSN asks for it (unsubscribe=provider&contact_list=…&topic=…)."""
    unsubscribe = dsn.option("unsubscribe", "own", UNSUBSCRIBE_OPTION)
    contact_list = dsn.options.get("contact_list", "").strip()
    topic = dsn.options.get("topic", "").strip() or None
    if unsubscribe == "own":
        given = [name for name in ("contact_list", "topic") if dsn.options.get(name)]
        if given:
            raise NewsletterError(
                f"ses+api://…?{given[0]}=: only with unsubscribe=provider (SES's subscription management); add "
                "&unsubscribe=provider or remove it"
            )
        return None
    if not contact_list:
        raise NewsletterError(
            "ses+api://…?unsubscribe=provider needs the SES contact list: "
            "&contact_list=NAME (and &topic=NAME for one list's topic), e.g. "
            "ses+api://ACCESS_KEY_ID:SECRET@default?region=ca-central-1&unsubscribe=provider&contact_list=infolettre"
            "&topic=alliances"
        )
    for name, value in (("contact_list", contact_list), ("topic", topic)):
        if value is not None and (
            len(value) > LIST_NAME_MAX or not value.isascii() or not value.isprintable() or "/" in value
        ):
            raise NewsletterError(
                f"ses+api://…?{name}=: not an SES {name.replace('_', ' ')} name (printable ASCII without /, at most "
                f"{LIST_NAME_MAX} characters)"
            )
    return hosted_unsubscribe(region, contact_list, topic)


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
