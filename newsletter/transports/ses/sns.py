"""Amazon SNS message verification: the signing certificate fetched from an SNS host, the string to sign, RSA checked
in pure Python (EMSA-PKCS1-v1_5, RFC 8017 section 8.2.2), and a subscription's confirmation URL (docs/providers/ses.md).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.transports._http import iso_time

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


def is_signing_cert_url(url: object) -> TypeGuard[str]:
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
    kind = message.get("Type")
    fields = SNS_SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
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
        version = message.get("SignatureVersion")
        algorithm = SNS_SIGNATURE_HASHES.get(version) if isinstance(version, str) else None
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
