"""What SendBulkEmail and SendEmail share: addresses and headers as SES takes them, its error codes, and the
outcomes of an answer (docs/providers/ses.md, Answers).
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping, Sequence
from email.header import Header

from newsletter.addresses import a_label_domain
from newsletter.message import Mailbox, Outgoing
from newsletter.transports._http import retry_after, short
from newsletter.transports.base import (
    Outcome,
    TransportError,
)

HEADER_VALUE_MAX = 870  # MessageHeaderValue: printable ASCII, at most 870 characters
SHARED_HEADERS = ("List-Id", "List-Unsubscribe-Post")  # in Template.Headers when the batch agrees on them
ENTRY_HEADERS = ("List-Unsubscribe",)  # always per entry

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
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "InternalFailure",
    "InternalServiceErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
}
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


def _headers(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"Name": name, "Value": header_value(value)} for name, value in pairs]


def _tag(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)[:256] or "_"


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
