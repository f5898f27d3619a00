"""Amazon SES webhooks: SNS message signatures checked by verify_webhook, then the SES records through parse_webhook.

SES publishes its events to an SNS topic, and SNS POSTs each one to our HTTPS subscription as a JSON envelope whose
Message is the SES record. The envelopes and records come from tests/fixtures/ses/webhooks/ (copied from the SNS and
SES developer guides; README.md there says what was adapted). The docs' signatures are placeholders ("EXAMPLE…"),
so each envelope is signed here exactly as SNS signs (SNS_STEPS): a key and a self-signed certificate are made in
the test, and verify_webhook gets the certificate through fetch_certificate instead of from sns.<region>.amazonaws.com.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.transports import ses
from newsletter.transports.base import DeliveryEvent
from newsletter.transports.ses import (
    MAX_AGE,
    build_payload,
    parse_webhook,
    sns_string_to_sign,
    subscription_confirmation_url,
    verify_webhook,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ses" / "webhooks"
SNS_FORMATS = "https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html"
SNS_VERIFY = "https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html"
SNS_STEPS = "https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html"
SNS_RETRIES = "https://docs.aws.amazon.com/sns/latest/dg/sns-message-delivery-retries.html"
SES_CONTENTS = "https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html"
SES_EXAMPLES = "https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html"
SES_NOTIFICATIONS = "https://docs.aws.amazon.com/ses/latest/dg/notification-examples.html"

TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"  # the docs' topic: what NEWSLETTER_WEBHOOK_SECRET_SES holds
OTHER_TOPIC = "arn:aws:sns:us-west-2:123456789012:SomeoneElsesTopic"
CERT_URL = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def certificate(key, public_key=None) -> bytes:
    """A self-signed PEM certificate for the key (standing in for the one at SigningCertURL)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    made = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key or key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2010, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    return made.public_bytes(serialization.Encoding.PEM)


SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SNS_CERTIFICATE = certificate(SNS_KEY)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_CERTIFICATE = certificate(OTHER_KEY)


class Certificates:
    """fetch_certificate for the tests: answers with one PEM and records every URL asked for."""

    def __init__(self, pem: bytes = SNS_CERTIFICATE):
        self.pem, self.asked = pem, []

    def __call__(self, url: str) -> bytes:
        self.asked.append(url)
        return self.pem


def payload(name: str) -> dict:
    return json.loads((FIXTURES / name).read_bytes())


def sns_sign(envelope: dict, key=SNS_KEY, version: str = "1") -> dict:
    """The envelope signed as SNS signs it (SNS_STEPS): for each signed field present, in byte order, its name and
    its value each followed by a newline; SHA1withRSA for SignatureVersion 1, SHA256withRSA for 2; base64."""
    signed = {**envelope, "SignatureVersion": version}
    names = NOTIFICATION_FIELDS if signed["Type"] == "Notification" else CONFIRMATION_FIELDS
    text = "".join(f"{name}\n{signed[name]}\n" for name in names if name in signed)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signed["Signature"] = base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), algorithm)).decode()
    return signed


def ses_envelope(record: dict, **changes) -> dict:
    """The docs' Notification envelope (SNS_FORMATS) carrying an SES record as its Message, without Subject, signed."""
    envelope = payload("sns-notification.json")
    del envelope["Subject"]
    envelope.update(Message=json.dumps(record), **changes)
    return sns_sign(envelope)


def encode(envelope: dict) -> bytes:
    return json.dumps(envelope, indent=2, ensure_ascii=False).encode("utf-8")


def sns_headers(envelope: dict) -> dict[str, str]:
    """The headers SNS sends with a message (SNS_FORMATS, "HTTP/HTTPS headers")."""
    return {
        "x-amz-sns-message-type": envelope["Type"],
        "x-amz-sns-message-id": envelope["MessageId"],
        "x-amz-sns-topic-arn": envelope["TopicArn"],
        "content-type": "text/plain; charset=UTF-8",
        "user-agent": "Amazon Simple Notification Service Agent",
    }


def sent_at(envelope: dict) -> datetime:
    return datetime.fromisoformat(envelope["Timestamp"])


def verify(envelope: dict, *, secret: str = TOPIC, certificates=None, delay: float = 60, **kwargs) -> bool:
    """verify_webhook on the envelope as SNS POSTs it, `delay` seconds after its Timestamp."""
    return verify_webhook(
        kwargs.pop("headers", sns_headers(envelope)),
        kwargs.pop("body", encode(envelope)),
        secret,
        fetch_certificate=certificates or Certificates(),
        now=sent_at(envelope) + timedelta(seconds=delay),
        **kwargs,
    )


@pytest.fixture(autouse=True)
def no_cached_certificates():
    ses.sns._certificates.clear()
    yield
    ses.sns._certificates.clear()


# The string to sign


def test_string_to_sign_is_the_docs_example():
    """SNS_VERIFY (the 'Create the string to sign' step) gives these two strings for a Notification and a
    SubscriptionConfirmation: name and value each followed by a newline, in byte order, Subject only if present."""
    notification = {
        "Type": "Notification",
        "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
        "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
        "Subject": "My subject",
        "Message": "My Test Message",
        "Timestamp": "2012-06-05T04:37:04.321Z",
    }
    assert sns_string_to_sign(notification) == (
        "Message\nMy Test Message\n"
        "MessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
        "Subject\nMy subject\n"
        "Timestamp\n2012-06-05T04:37:04.321Z\n"
        "TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        "Type\nNotification\n"
    )
    token = (
        "2336412f37fb687f5d51e6e241d09c8058323f60b964268bfe08ce35640228c208a66d3621bd9f7b012918cfdcfe65e153df551f76"
        "df58ed147f1245e330ce77ceff06dedab9f051f7028657e6c42750bf64bc9ef711d494e9f7637b86e690779eb5568f72466806b246"
        "bd244fa9392b1bc01eeb1c5e420847a745b7aa4b0085"
    )
    topic = "arn:aws:sns:us-west-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P"
    subscribe = f"https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "3d891288-136d-417f-bc05-901c108273ee",
        "Token": token,
        "TopicArn": topic,
        "Message": "My Test Message",
        "SubscribeURL": subscribe,
        "Timestamp": "2012-06-03T19:25:13.719Z",
    }
    assert sns_string_to_sign(confirmation) == (
        "Message\nMy Test Message\n"
        "MessageId\n3d891288-136d-417f-bc05-901c108273ee\n"
        f"SubscribeURL\n{subscribe}\n"
        "Timestamp\n2012-06-03T19:25:13.719Z\n"
        f"Token\n{token}\n"
        f"TopicArn\n{topic}\n"
        "Type\nSubscriptionConfirmation\n"
    )
    assert sns_string_to_sign({**notification, "Type": "Other"}) is None
    assert sns_string_to_sign({key: value for key, value in confirmation.items() if key != "Token"}) is None


# verify_webhook: genuine messages


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_docs_notification_signed_as_sns_signs_is_genuine(version):
    """The Notification example of SNS_FORMATS (with a Subject), SignatureVersion 1 (SHA1withRSA) or 2
    (SHA256withRSA, SNS_VERIFY); the certificate is asked for at its SigningCertURL, once."""
    envelope = sns_sign(payload("sns-notification.json"), version=version)
    certificates = Certificates()

    assert verify(envelope, certificates=certificates) is True
    assert certificates.asked == [CERT_URL]


@pytest.mark.parametrize("name", ["sns-subscription-confirmation.json", "sns-unsubscribe-confirmation.json"])
def test_the_docs_confirmations_are_genuine(name):
    """SubscriptionConfirmation and UnsubscribeConfirmation (SNS_FORMATS) sign SubscribeURL and Token too."""
    assert verify(sns_sign(payload(name))) is True
    assert verify(sns_sign(payload(name), version="2")) is True


@pytest.mark.parametrize(
    "name",
    [
        "event-bounce.json",
        "event-bounce-transient.json",
        "event-complaint.json",
        "event-delivery.json",
        "event-send.json",
        "event-subscription.json",
        "notification-bounce-dsn.json",
        "notification-complaint.json",
    ],
)
def test_ses_records_in_a_signed_envelope_are_genuine(name):
    """Each SES record (SES_EXAMPLES, SES_NOTIFICATIONS) as the Message of a signed Notification; its French or
    escaped characters are signed in their original form, which JSON decoding gives back (SNS_STEPS)."""
    record = payload(name)
    record["mail"]["commonHeaders"] = {"subject": "Le bulletin d’été\n« spécial »"}
    assert verify(ses_envelope(record)) is True


def test_header_names_in_any_case_and_several_topics():
    """x-amz-sns-* headers are matched in any case; the secret may list several topics, separated by commas."""
    envelope = ses_envelope(payload("event-bounce.json"))
    shouting = {name.upper(): value for name, value in sns_headers(envelope).items()}

    assert verify(envelope, headers=shouting) is True
    assert verify(envelope, headers={}) is True
    assert verify(envelope, secret=f"{OTHER_TOPIC}, {TOPIC}") is True


# verify_webhook: refused


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("sns-notification.json", "Message", "Hello world?"),
        ("sns-notification.json", "Subject", "My Second Message"),
        ("sns-notification.json", "Subject", None),  # removed
        ("sns-notification.json", "MessageId", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf325"),
        ("sns-notification.json", "Timestamp", "2012-05-02T00:54:07.655Z"),
        ("sns-subscription-confirmation.json", "SubscribeURL", "https://sns.us-west-2.amazonaws.com/?Action=Other"),
        ("sns-subscription-confirmation.json", "Token", "2336412f"),
        ("sns-subscription-confirmation.json", "Message", "You have chosen to subscribe."),
        ("sns-unsubscribe-confirmation.json", "Type", "SubscriptionConfirmation"),
    ],
)
def test_a_tampered_message_is_refused(name, field, value):
    """Any change to a signed field after SNS signed it breaks the signature (SNS_VERIFY)."""
    envelope = sns_sign(payload(name))
    if value is None:
        del envelope[field]
    else:
        envelope[field] = value

    assert verify(envelope, headers={}) is False


def test_a_tampered_ses_record_is_refused():
    """The SES record is the signed Message: turning a Transient bounce into a Permanent one breaks it."""
    envelope = ses_envelope(payload("event-bounce-transient.json"))
    envelope["Message"] = envelope["Message"].replace('"Transient"', '"Permanent"')

    assert parse_webhook(encode(envelope))[0].kind == "bounced"
    assert verify(envelope) is False


def test_a_subject_added_to_a_message_signed_without_one_is_refused():
    envelope = ses_envelope(payload("event-bounce.json"))
    assert verify({**envelope, "Subject": "Amazon SES Email Event Notification"}) is False


def test_mis_signed_messages_are_refused():
    """Signed with another key than the certificate's, or with the other hash than SignatureVersion says."""
    envelope = payload("sns-notification.json")
    assert verify(sns_sign(envelope, key=OTHER_KEY)) is False
    assert verify({**sns_sign(envelope, version="1"), "SignatureVersion": "2"}) is False
    assert verify({**sns_sign(envelope, version="2"), "SignatureVersion": "1"}) is False
    assert verify(sns_sign(envelope), certificates=Certificates(OTHER_CERTIFICATE)) is False


@pytest.mark.parametrize(
    "changes",
    [
        {"Signature": None},
        {"SignatureVersion": None},
        {"Signature": ""},
        {"Signature": "EXAMPLEw6JRNwm1LFQL4ICB0bnXrdB8ClRMTQFGBqwLpGbM78tJ4etTwC5zU7O3tS6tGpey3ejedNdOJ+1fkIp9F2=="},
        {"Signature": "not base64 at all!"},
        {"SignatureVersion": "3"},
        {"SignatureVersion": 1},
        {"SigningCertURL": None},
    ],
    ids=["no-signature", "no-version", "empty", "docs-placeholder", "not-base64", "version-3", "version-int", "no-url"],
)
def test_unsigned_messages_are_refused(changes):
    envelope = sns_sign(payload("sns-notification.json"))
    for field, value in changes.items():
        if value is None:
            del envelope[field]
        else:
            envelope[field] = value

    assert verify(envelope) is False
    assert verify(payload("sns-notification.json")) is False  # the docs' own placeholder signature


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "https://attacker.example/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "https://sns.us-west-2.amazonaws.com.attacker.example/SimpleNotificationService.pem",
        "https://sns.us-west-2.amazonaws.com@attacker.example/SimpleNotificationService.pem",
        "https://attacker.example\\@sns.us-west-2.amazonaws.com/SimpleNotificationService.pem",
        "https://sns.us-west-2.amazonaws.com:8443/SimpleNotificationService.pem",
        "https://sns.amazonaws.com/SimpleNotificationService.pem",
        "https://s3.us-west-2.amazonaws.com/SimpleNotificationService.pem",
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService.pem?x=https://attacker.example/a.pem",
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService.txt",
        "https://sns.us-west-2.amazonaws.com/../attacker/SimpleNotificationService.pem",
        "https://SNS.US-WEST-2.AMAZONAWS.COM/SimpleNotificationService.pem ",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService.pem",
        "//sns.us-west-2.amazonaws.com/SimpleNotificationService.pem",
    ],
)
def test_a_certificate_url_off_the_sns_host_is_refused_before_any_fetch(url):
    """SigningCertURL must be https on sns.<region>.amazonaws.com ('Ensure the SigningCertURL is from a trusted AWS
    domain', SNS_STEPS): the attacker's certificate is never fetched, even with a signature it would verify."""
    envelope = sns_sign({**payload("sns-notification.json"), "SigningCertURL": url}, key=OTHER_KEY)
    certificates = Certificates(OTHER_CERTIFICATE)

    assert verify(envelope, certificates=certificates) is False
    assert certificates.asked == []


def test_another_topic_is_refused():
    """'Reject any message with an unexpected TopicArn' (SNS_VERIFY): a genuine message for someone else's topic,
    our topic under another secret, or an empty secret."""
    ours = ses_envelope(payload("event-bounce.json"))
    theirs = ses_envelope(payload("event-bounce.json"), TopicArn=OTHER_TOPIC)
    certificates = Certificates()

    assert verify(theirs, certificates=certificates) is False
    assert verify(ours, secret=OTHER_TOPIC, certificates=certificates) is False
    assert verify(ours, secret="", certificates=certificates) is False
    assert verify(ours, secret=" , ", certificates=certificates) is False
    assert certificates.asked == []


def test_a_stale_or_future_message_is_refused():
    """SNS retries an HTTPS delivery for at most 3,600 s ('a hard limit', SNS_RETRIES) and each retry carries the
    first Timestamp: older than MAX_AGE (two hours) is a replay. At most five minutes ahead, for clock skew."""
    envelope = ses_envelope(payload("event-bounce.json"))

    assert MAX_AGE == 7200
    assert verify(envelope, delay=3600) is True
    assert verify(envelope, delay=MAX_AGE - 1) is True
    assert verify(envelope, delay=MAX_AGE + 1) is False
    assert verify(envelope, delay=-240) is True
    assert verify(envelope, delay=-360) is False
    assert verify(envelope, delay=86400, max_age=None) is True
    assert verify(envelope, delay=120, max_age=60) is False
    assert verify_webhook(sns_headers(envelope), encode(envelope), TOPIC, fetch_certificate=Certificates()) is False
    undated = ses_envelope(payload("event-bounce.json"), Timestamp="yesterday")  # signed, but no time to check
    assert verify_webhook({}, encode(undated), TOPIC, fetch_certificate=Certificates()) is False
    assert verify_webhook({}, encode(undated), TOPIC, fetch_certificate=Certificates(), max_age=None) is True


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"null", b'"Notification"', b"\xff\xfe{}", b'{"Type": "Notification"}', b"{" * 5000],
)
def test_garbage_bodies_are_refused(body):
    envelope = sns_sign(payload("sns-notification.json"))
    assert verify(envelope, body=body) is False


def test_headers_that_contradict_the_signed_body_are_refused():
    envelope = ses_envelope(payload("event-bounce.json"))
    headers = sns_headers(envelope)

    assert verify(envelope, headers={**headers, "x-amz-sns-message-type": "SubscriptionConfirmation"}) is False
    assert verify(envelope, headers={**headers, "X-Amz-Sns-Topic-Arn": OTHER_TOPIC}) is False
    assert verify(envelope, headers={"x-amz-sns-message-type": "\x00\xff garbage"}) is False
    assert verify(envelope, headers=None) is False  # not a mapping: refused, not raised


def test_certificates_that_cannot_be_used_are_refused():
    """A fetch that fails, or answers with something other than an RSA certificate, never raises."""
    envelope = sns_sign(payload("sns-notification.json"))

    def failing(url):
        raise httpx.ConnectTimeout("timed out")

    ec_key = ec.generate_private_key(ec.SECP256R1())
    truncated = b"-----BEGIN CERTIFICATE-----\n" + SNS_CERTIFICATE.split(b"\n")[1] + b"\n-----END CERTIFICATE-----\n"
    assert verify(envelope, certificates=failing) is False
    for pem in (b"", b"not a certificate", truncated, certificate(ec_key), b"\x00" * 100):
        assert verify(envelope, certificates=Certificates(pem)) is False


@respx.mock
def test_the_default_fetch_gets_the_certificate_once_per_url():
    """Without fetch_certificate, the certificate is fetched with httpx from SigningCertURL and kept by URL."""
    route = respx.get(CERT_URL).mock(return_value=httpx.Response(200, content=SNS_CERTIFICATE))
    first = ses_envelope(payload("event-bounce.json"))
    second = ses_envelope(payload("event-complaint.json"))

    for envelope in (first, second):
        now = sent_at(envelope) + timedelta(seconds=5)
        assert verify_webhook(sns_headers(envelope), encode(envelope), TOPIC, now=now) is True
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, text="Not Found"),
        httpx.Response(301, headers={"Location": "https://attacker.example/cert.pem"}),
        httpx.Response(200, text="<html>maintenance</html>"),
    ],
)
def test_the_default_fetch_refuses_what_is_not_a_certificate(response):
    route = respx.get(CERT_URL).mock(return_value=response)
    envelope = ses_envelope(payload("event-bounce.json"))
    now = sent_at(envelope) + timedelta(seconds=5)

    assert verify_webhook(sns_headers(envelope), encode(envelope), TOPIC, now=now) is False
    assert route.call_count == 1
    assert ses.sns._certificates == {}


@respx.mock
def test_the_default_fetch_survives_a_timeout():
    respx.get(CERT_URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
    envelope = ses_envelope(payload("event-bounce.json"))
    now = sent_at(envelope) + timedelta(seconds=5)

    assert verify_webhook(sns_headers(envelope), encode(envelope), TOPIC, now=now) is False


# parse_webhook: events that change a membership


def parse(record: dict) -> list[DeliveryEvent]:
    envelope = ses_envelope(record)
    assert verify(envelope) is True  # as the server does: verify, then parse
    return parse_webhook(encode(envelope), sns_headers(envelope))


def test_a_permanent_bounce_is_bounced():
    """SES_EXAMPLES, 'Bounce record': 'When you receive bounces marked Permanent, you should remove the
    corresponding email addresses from your mailing list' (SES_CONTENTS, 'Bounce types')."""
    assert parse(payload("event-bounce.json")) == [
        DeliveryEvent(
            kind="bounced",
            email="recipient@example.com",
            provider_id="EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
            at=datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
            detail="hard bounce (General): smtp; 550 5.1.1 user unknown",
            key=None,
        )
    ]


def test_a_complaint_is_complained():
    """SES_EXAMPLES, 'Complaint record' (complaintFeedbackType abuse)."""
    assert parse(payload("event-complaint.json")) == [
        DeliveryEvent(
            kind="complained",
            email="recipient@example.com",
            provider_id="EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
            at=datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
            detail="spam complaint (abuse)",
            key=None,
        )
    ]


def test_an_unsubscribe_through_ses_list_management_is_unsubscribed():
    """SES_EXAMPLES, 'Subscription record': newTopicPreferences.unsubscribeAll true, for each mail.destination."""
    assert parse(payload("event-subscription.json")) == [
        DeliveryEvent(
            kind="unsubscribed",
            email="recipient@example.com",
            provider_id="EXAMPLEe4bccb684-777bc8de-afa7-4970-92b0-f515137b1497-000000",
            at=datetime(2022, 1, 12, 1, 0, 17, 910000, tzinfo=UTC),
            detail="unsubscribed through SES (UnsubscribeHeader)",
            key=None,
        )
    ]
    record = payload("event-subscription.json")
    record["subscription"]["newTopicPreferences"]["unsubscribeAll"] = False
    assert parse(record) == []  # one topic opted out: we send no SES topics


def test_identity_notifications_in_the_older_format():
    """SES_NOTIFICATIONS: notificationType instead of eventType, one event per bounced or complaining recipient,
    never a key ('If using feedback notifications directly on the identity, SES does not publish tags',
    SES_EXAMPLES)."""
    with_dsn = parse(payload("notification-bounce-dsn.json"))
    without_dsn = parse(payload("notification-bounce-no-dsn.json"))
    complaint = parse(payload("notification-complaint.json"))

    assert [(e.kind, e.email, e.detail, e.key) for e in with_dsn] == [
        ("bounced", "jane@example.com", "hard bounce (General): smtp; 550 5.1.1 <jane@example.com>... User", None)
    ]
    assert [(e.kind, e.email, e.detail) for e in without_dsn] == [
        ("bounced", "jane@example.com", "hard bounce (General)"),
        ("bounced", "richard@example.com", "hard bounce (General)"),
    ]
    assert {e.provider_id for e in without_dsn} == {"00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000"}
    assert [(e.kind, e.email, e.detail, e.key) for e in complaint] == [
        ("complained", "richard@example.com", "spam complaint (abuse)", None)
    ]
    assert complaint[0].at == datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    ["event-bounce-transient.json", "event-delivery.json", "event-send.json", "notification-delivery.json"],
)
def test_soft_bounces_deliveries_and_sends_are_ignored(name):
    """'You may be able to successfully resend to an address that initially resulted in a Transient bounce'
    (SES_CONTENTS); Delivery and Send change no membership."""
    assert parse(payload(name)) == []


def test_undetermined_bounces_and_not_spam_reports_are_ignored():
    """bounceType Undetermined ('unable to determine a specific bounce reason') and complaintFeedbackType
    not-spam ('does not consider the message to be spam'), both from SES_CONTENTS."""
    bounce = payload("event-bounce.json")
    bounce["bounce"].update(bounceType="Undetermined", bounceSubType="Undetermined")
    complaint = payload("event-complaint.json")
    complaint["complaint"]["complaintFeedbackType"] = "not-spam"

    assert parse(bounce) == []
    assert parse(complaint) == []


def test_suppressed_addresses_are_bounced_or_complained():
    """bounceSubType OnAccountSuppressionList / Suppressed are Permanent; a complaint with complaintSubType
    OnAccountSuppressionList was not sent either (SES_CONTENTS): the address stays out."""
    bounce = payload("event-bounce.json")
    bounce["bounce"].update(bounceSubType="OnAccountSuppressionList", bouncedRecipients=[{"emailAddress": "a@b.ca"}])
    complaint = payload("event-complaint.json")
    complaint["complaint"] = {
        "complainedRecipients": [{"emailAddress": "a@b.ca"}],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "complaintSubType": "OnAccountSuppressionList",
    }

    assert [(e.kind, e.detail) for e in parse(bounce)] == [("bounced", "hard bounce (OnAccountSuppressionList)")]
    assert [(e.kind, e.detail) for e in parse(complaint)] == [
        ("complained", "spam complaint, address on the account-level suppression list")
    ]


def test_the_ledger_key_comes_back_from_the_tag_our_adapter_sent(messages):
    """build_payload tags each entry newsletter_key=<ledger key> (ReplacementTags); event publishing gives every
    tag back in mail.tags as a name -> list of values map (SES_EXAMPLES: "myCustomTag1": ["myCustomTagValue1"])."""
    entries = build_payload(messages)["BulkEmailEntries"]
    for message, entry in zip(messages, entries, strict=True):
        record = payload("event-bounce.json")
        record["mail"]["tags"].update({tag["Name"]: [tag["Value"]] for tag in entry["ReplacementTags"]})
        record["mail"]["destination"] = entry["Destination"]["ToAddresses"]
        record["bounce"]["bouncedRecipients"][0]["emailAddress"] = message.recipient.address

        [event] = parse(record)

        assert event.key == message.key
        assert message.key.startswith("12-")  # campaign 12, then the subscriber
        assert event.email == message.recipient.address


def test_addresses_come_back_as_subscribers_are_stored():
    """mail.destination holds the To we sent ('Zoé <zoe@example.net>' RFC 2047-encoded); a Punycode domain (SES
    takes domains only so) comes back in Unicode, as subscribers are stored."""
    subscription = payload("event-subscription.json")
    subscription["mail"]["destination"] = ["=?utf-8?q?Zo=C3=A9_C=C3=B4t=C3=A9?= <zoe@example.net>"]
    bounce = payload("event-bounce.json")
    bounce["bounce"]["bouncedRecipients"] = [{"emailAddress": "zoe@xn--caf-dma.example"}, {"emailAddress": "nobody"}]

    assert [e.email for e in parse(subscription)] == ["zoe@example.net"]
    assert [e.email for e in parse(bounce)] == ["zoe@café.example"]


@pytest.mark.parametrize("name", ["sns-subscription-confirmation.json", "sns-unsubscribe-confirmation.json"])
def test_confirmations_are_no_events(name):
    assert parse_webhook(json.dumps(payload(name)).encode()) == []


def test_malformed_payloads_raise_value_error():
    """Not JSON, not an object, not an SNS message, or a Message that is not an SES record (the docs' own
    'Hello world!' notification)."""
    for body, reason in [
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[]", "the body is not a JSON object"),
        (b'{"Type": "Other"}', "not an SNS message"),
        (b'{"Type": "Notification"}', "no Message"),
        (json.dumps(payload("sns-notification.json")).encode(), "the SNS Message is not JSON"),
        (encode(ses_envelope(["Bounce"])), "the SNS Message is not a JSON object"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_webhook(body)


# subscription_confirmation_url


def test_the_subscribe_url_of_a_subscription_confirmation():
    """'This message contains a SubscribeURL value that you must visit to confirm the subscription' (SNS_FORMATS)."""
    confirmation = payload("sns-subscription-confirmation.json")
    assert subscription_confirmation_url(encode(confirmation)) == confirmation["SubscribeURL"]


@pytest.mark.parametrize(
    "body",
    [
        encode(payload("sns-unsubscribe-confirmation.json")),  # its SubscribeURL would subscribe again
        encode(payload("sns-notification.json")),
        encode(ses_envelope(payload("event-bounce.json"))),
        b"not json",
        b"[]",
        b"\xff",
    ],
)
def test_no_subscribe_url_for_other_messages(body):
    assert subscription_confirmation_url(body) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=1",
        "https://attacker.example/?Action=ConfirmSubscription&Token=1",
        "https://sns.us-west-2.amazonaws.com.attacker.example/?Action=ConfirmSubscription&Token=1",
        "https://sns.us-west-2.amazonaws.com@attacker.example/?Action=ConfirmSubscription&Token=1",
        "https://127.0.0.1/?Action=ConfirmSubscription&Token=1",
        "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        "https://sns.us-west-2.amazonaws.com/admin?Action=ConfirmSubscription&Token=1",
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=1 https://attacker.example/",
        None,
        42,
    ],
)
def test_no_subscribe_url_off_the_sns_host(url):
    """The server GETs what this returns: only https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription…"""
    confirmation = {**payload("sns-subscription-confirmation.json"), "SubscribeURL": url}
    assert subscription_confirmation_url(encode(confirmation)) is None
