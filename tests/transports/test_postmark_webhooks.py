"""Postmark webhooks: HTTP basic auth checked by verify_webhook, then each documented payload through parse_webhook.

Payloads come from tests/fixtures/postmark/webhooks/ (copied from Postmark's webhook pages; README.md there says what
was adapted). Postmark signs nothing. The only documented protection is "basic HTTP authentication … by adding the user
name and password to the URL … https://<username>:<password>@example.com/webhook" (OVERVIEW_PAGE). So each genuine
request here carries the Authorization header an HTTP client builds from such a URL. The credentials are made in the
test.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from newsletter.transports.base import DeliveryEvent
from newsletter.transports.postmark import build_payload, parse_webhook, verify_webhook

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "postmark" / "webhooks"
OVERVIEW_PAGE = "https://postmarkapp.com/developer/webhooks/webhooks-overview"
BOUNCE_PAGE = "https://postmarkapp.com/developer/webhooks/bounce-webhook"
SPAM_PAGE = "https://postmarkapp.com/developer/webhooks/spam-complaint-webhook"
SUBSCRIPTION_PAGE = "https://postmarkapp.com/developer/webhooks/subscription-change-webhook"
DELIVERY_PAGE = "https://postmarkapp.com/developer/webhooks/delivery-webhook"
BOUNCE_TYPES = "https://postmarkapp.com/developer/api/bounce-api#bounce-types"

USER = "postmark-" + secrets.token_hex(4)
PASSWORD = secrets.token_urlsafe(24)
SECRET = f"{USER}:{PASSWORD}"  # what NEWSLETTER_WEBHOOK_SECRET_POSTMARK holds


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payload(name: str) -> dict:
    return json.loads(body(name))


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode("ascii")


def postmark_headers(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    """The headers of a POST to https://USER:PASSWORD@example.org/webhooks/postmark, as an HTTP client sends them."""
    sent: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(receive)) as client:
        client.post(f"https://{user}:{password}@example.org/webhooks/postmark", json={})
    return dict(sent[0].headers)


# verify_webhook


@pytest.mark.parametrize(
    "name",
    [
        "bounce-hard.json",
        "spam-complaint.json",
        "subscription-change-unsubscribe.json",
        "delivery.json",
    ],
)
def test_genuine_request_is_accepted(name):
    """The credentials from the webhook URL arrive as 'Authorization: Basic base64(user:password)' (OVERVIEW_PAGE)."""
    headers = postmark_headers()
    assert headers["authorization"] == basic(SECRET)
    assert verify_webhook(headers, body(name), SECRET) is True


def test_header_name_and_scheme_in_any_case():
    """HTTP header names are case-insensitive, and so is the 'Basic' scheme (RFC 7617 §2)."""
    token = basic(SECRET).split(" ", 1)[1]
    for name, scheme in (("Authorization", "Basic"), ("AUTHORIZATION", "basic"), ("authorization", "BASIC")):
        assert verify_webhook({name: f"{scheme} {token}"}, b"{}", SECRET) is True


def test_percent_encoded_url_credentials_arrive_decoded():
    """A password with / @ : must be %-encoded in the URL; the header carries it decoded, as the secret does."""
    password = "p@ss/w:rd"
    headers = postmark_headers(password="p%40ss%2Fw%3Ard")
    assert verify_webhook(headers, b"{}", f"{USER}:{password}") is True


def test_unsigned_request_is_refused():
    """Without an Authorization header the request is not from Postmark's configured webhook."""
    assert verify_webhook({"Content-Type": "application/json"}, body("bounce-hard.json"), SECRET) is False
    assert verify_webhook({}, body("bounce-hard.json"), SECRET) is False


@pytest.mark.parametrize(
    "credentials",
    [
        f"{USER}:wrong-password",
        f"someone-else:{PASSWORD}",
        f"{USER}:{PASSWORD}x",
        f"{USER}:{PASSWORD[:-1]}",
        f"{USER}{PASSWORD}",
        f"{USER}:",
        f":{PASSWORD}",
        "",
    ],
)
def test_wrong_credentials_are_refused(credentials):
    assert verify_webhook({"Authorization": basic(credentials)}, body("bounce-hard.json"), SECRET) is False


def test_wrong_secret_is_refused():
    """The server configured with other credentials refuses Postmark's genuine request."""
    headers = postmark_headers()
    other = f"{USER}:{secrets.token_urlsafe(24)}"
    assert verify_webhook(headers, body("bounce-hard.json"), other) is False


@pytest.mark.parametrize("secret", ["", ":", "no-colon-here", f"{USER}:", f":{PASSWORD}"])
def test_a_secret_without_user_or_password_refuses_everything(secret):
    """NEWSLETTER_WEBHOOK_SECRET_POSTMARK must be 'user:password' with both parts; anything else lets nobody in."""
    headers = {"Authorization": basic(secret)}
    assert verify_webhook(headers, b"{}", secret) is False


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},
        {"Authorization": "Basic"},
        {"Authorization": "Basic "},
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(SECRET.encode()).decode()[:-2]},
        {"Authorization": basic(SECRET) + " extra"},
        {"Authorization": "Bearer " + base64.b64encode(SECRET.encode()).decode()},
        {"Authorization": SECRET},
        {"Authorization": "Basic " + SECRET},
        {"Authorization": "Basic ЖЖЖЖ"},
        {"Authorization": None},
        {"Authorization": 42},
        {None: basic(SECRET)},
        {"X-Postmark-Signature": "abc"},
    ],
)
def test_garbage_headers_are_refused_without_raising(headers):
    assert verify_webhook(headers, body("bounce-hard.json"), SECRET) is False


def test_garbage_secret_does_not_raise():
    assert verify_webhook(postmark_headers(), b"{}", None) is False  # type: ignore[arg-type]


def test_basic_auth_does_not_cover_the_body():
    """Postmark has no signature, timestamp or body hash (OVERVIEW_PAGE): verify_webhook cannot detect a tampered
    or replayed body, and does not pretend to. Only HTTPS on the webhook URL protects them."""
    headers = postmark_headers()
    tampered = body("bounce-hard.json").replace(b"john@example.com", b"victim@example.org")
    assert verify_webhook(headers, tampered, SECRET) is True
    assert verify_webhook(headers, body("bounce-hard.json"), SECRET) is True


# parse_webhook


def test_hard_bounce_is_bounced():
    """The Bounce example of BOUNCE_PAGE: Type HardBounce."""
    assert parse_webhook(body("bounce-hard.json")) == [
        DeliveryEvent(
            kind="bounced",
            email="john@example.com",
            provider_id="883953f4-6105-42a2-a16a-77a8eac79483",
            at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
            detail="hard bounce: Test bounce details",
            key=None,
        )
    ]


def test_bad_email_address_is_bounced():
    """BadEmailAddress (100000, 'The address is not a valid email address', BOUNCE_TYPES) is permanent too."""
    data = payload("bounce-hard.json") | {
        "Type": "BadEmailAddress",
        "TypeCode": 100000,
        "Name": "Invalid email address",
    }
    [event] = parse_webhook(json.dumps(data).encode())
    assert event.kind == "bounced" and event.detail == "invalid email address: Test bounce details"


def test_soft_bounce_is_ignored():
    """SoftBounce (BOUNCE_TYPES: 'Unable to temporarily deliver message'): no membership changes."""
    assert parse_webhook(body("bounce-soft.json")) == []


@pytest.mark.parametrize(
    ("bounce_type", "code"),
    [
        ("Transient", 2),
        ("AutoResponder", 64),
        ("AddressChange", 128),
        ("DnsError", 256),
        ("SpamNotification", 512),
        ("OpenRelayTest", 1024),
        ("Unknown", 2048),
        ("VirusNotification", 8192),
        ("ChallengeVerification", 16384),
        ("ManuallyDeactivated", 100002),
        ("Unconfirmed", 100003),
        ("Blocked", 100006),
        ("SMTPApiError", 100007),
        ("DMARCPolicy", 100009),
        ("TemplateRenderingFailed", 100010),
        ("SomethingPostmarkAddsLater", 999999),
    ],
)
def test_bounce_types_that_do_not_condemn_the_address_are_ignored(bounce_type, code):
    """Temporary failures, autoreplies, and verdicts on the sender or content (BOUNCE_TYPES) change nothing."""
    data = payload("bounce-hard.json") | {"Type": bounce_type, "TypeCode": code, "Inactive": False}
    assert parse_webhook(json.dumps(data).encode()) == []


def test_unsubscribe_request_bounce_is_unsubscribed():
    """Bounce Type Unsubscribe (16, 'Unsubscribe or Remove request', BOUNCE_TYPES): the recipient asked to leave."""
    data = payload("bounce-hard.json") | {"Type": "Unsubscribe", "TypeCode": 16, "Name": "Unsubscribe request"}
    [event] = parse_webhook(json.dumps(data).encode())
    assert event.kind == "unsubscribed" and event.email == "john@example.com"


def test_spam_complaint_is_complained():
    """The SpamComplaint example of SPAM_PAGE (its TypeCode 512 is kept as published; only Type is read)."""
    assert parse_webhook(body("spam-complaint.json")) == [
        DeliveryEvent(
            kind="complained",
            email="john@example.com",
            provider_id="00000000-0000-0000-0000-000000000000",
            at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
            detail="spam complaint: Test spam complaint details",
            key=None,
        )
    ]


def test_spam_complaint_type_in_a_bounce_record_is_complained():
    """Older bounce hooks carried spam complaints as RecordType Bounce with Type SpamComplaint (BOUNCE_PAGE)."""
    data = payload("spam-complaint.json") | {"RecordType": "Bounce"}
    [event] = parse_webhook(json.dumps(data).encode())
    assert event.kind == "complained"


def test_subscription_change_unsubscribe_is_unsubscribed():
    """SUBSCRIPTION_PAGE: 'If a recipient unsubscribes, they will be suppressed with the SuppressionReason of
    ManualSuppression'. This is the only event a Broadcast stream sends for an unsubscribe."""
    assert parse_webhook(body("subscription-change-unsubscribe.json")) == [
        DeliveryEvent(
            kind="unsubscribed",
            email="unsubscribed-address@wildbit.com",
            provider_id="883953f4-6105-42a2-a16a-77a8eac79483",
            at=datetime(2020, 2, 1, 10, 53, 34, 416071, tzinfo=UTC),
            detail="suppressed: ManualSuppression by Recipient on stream broadcast",
            key=None,
        )
    ]


def test_subscription_change_hard_bounce_is_bounced():
    """The example of SUBSCRIPTION_PAGE, unchanged: SuppressionReason HardBounce."""
    [event] = parse_webhook(body("subscription-change-hard-bounce.json"))
    assert (event.kind, event.email) == ("bounced", "bounced-address@wildbit.com")
    assert event.detail == "suppressed: HardBounce by Recipient on stream outbound"


def test_subscription_change_spam_complaint_is_complained():
    """SUBSCRIPTION_PAGE: 'Possible SuppressionReason values are: HardBounce, SpamComplaint, or ManualSuppression.'"""
    [event] = parse_webhook(body("subscription-change-spam-complaint.json"))
    assert (event.kind, event.email) == ("complained", "complained-address@wildbit.com")


def test_suppression_made_in_postmark_has_no_message():
    """SUBSCRIPTION_PAGE: 'MessageID is null for Manual Suppressions with Origin value of Customer or Admin'."""
    data = payload("subscription-change-unsubscribe.json") | {"MessageID": None, "Origin": "Customer", "Metadata": {}}
    [event] = parse_webhook(json.dumps(data).encode())
    assert event.kind == "unsubscribed"
    assert event.provider_id is None and event.key is None
    assert "by Customer" in event.detail


def test_reactivation_is_ignored():
    """SuppressSending false is a reactivation (SUBSCRIPTION_PAGE): it never resubscribes anyone here."""
    assert parse_webhook(body("subscription-change-reactivation.json")) == []


def test_unknown_suppression_reason_is_ignored():
    data = payload("subscription-change-unsubscribe.json") | {"SuppressionReason": "SomethingNew"}
    assert parse_webhook(json.dumps(data).encode()) == []
    data["SuppressionReason"] = None
    assert parse_webhook(json.dumps(data).encode()) == []


def test_delivery_is_ignored():
    """The Delivery example of DELIVERY_PAGE changes no membership."""
    assert parse_webhook(body("delivery.json")) == []


@pytest.mark.parametrize("record_type", ["Open", "Click", "Delivery", "SomethingNew", None])
def test_other_record_types_are_ignored(record_type):
    data = payload("delivery.json") | {"RecordType": record_type}
    assert parse_webhook(json.dumps(data).encode()) == []


def test_inbound_mail_posted_here_is_ignored():
    """An inbound message has no RecordType (anymail checks FromFull to detect one): nothing to record."""
    inbound = {"FromFull": {"Email": "someone@example.com", "Name": "", "MailboxHash": ""}, "Subject": "Re: bulletin"}
    assert parse_webhook(json.dumps(inbound).encode()) == []


def test_key_comes_back_from_our_metadata(messages):
    """build_payload puts Metadata {"newsletter-key": key} on each message; Postmark echoes a message's Metadata in
    its Bounce, SpamComplaint and SubscriptionChange events (BOUNCE_PAGE, SPAM_PAGE, SUBSCRIPTION_PAGE)."""
    sent = build_payload(messages)
    cases = [
        ("bounce-hard.json", "Email", "bounced"),
        ("spam-complaint.json", "Email", "complained"),
        ("subscription-change-unsubscribe.json", "Recipient", "unsubscribed"),
    ]
    for (name, field, kind), message, item in zip(cases, messages, sent, strict=False):
        data = payload(name) | {field: message.recipient.address, "Metadata": item["Metadata"]}
        [event] = parse_webhook(json.dumps(data).encode(), postmark_headers())
        assert (event.kind, event.email, event.key) == (kind, message.recipient.address, message.key)


@pytest.mark.parametrize("metadata", [{}, None, "newsletter-key", {"newsletter-key": ""}, {"newsletter-key": 12}])
def test_missing_or_odd_metadata_gives_no_key(metadata):
    data = payload("bounce-hard.json") | {"Metadata": metadata}
    [event] = parse_webhook(json.dumps(data).encode())
    assert event.key is None and event.kind == "bounced"


def test_one_event_per_request_in_the_order_received():
    """Postmark posts one JSON object per event, no batches: a run of requests gives their events in order."""
    requests = [
        "delivery.json",
        "bounce-hard.json",
        "bounce-soft.json",
        "spam-complaint.json",
        "subscription-change-unsubscribe.json",
        "subscription-change-reactivation.json",
    ]
    events = [event for name in requests for event in parse_webhook(body(name))]
    assert [event.kind for event in events] == ["bounced", "complained", "unsubscribed"]


def test_offset_timestamps_are_kept():
    """BouncedAt with an offset, as in the older example of BOUNCE_PAGE: '2014-08-01T13:28:10.2735393-04:00'."""
    data = payload("bounce-hard.json") | {"BouncedAt": "2014-08-01T13:28:10.2735393-04:00"}
    [event] = parse_webhook(json.dumps(data).encode())
    assert event.at == datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)
    for unreadable in ("yesterday", None, 1572971634):
        data["BouncedAt"] = unreadable
        assert parse_webhook(json.dumps(data).encode())[0].at is None


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'{"RecordType": "Bounce",', b"\xff\xfe{}", b"[]", b"null", b'"Bounce"', b"42"],
)
def test_malformed_json_raises_value_error(raw):
    with pytest.raises(ValueError, match="postmark webhook"):
        parse_webhook(raw)


def test_an_event_to_record_without_an_address_raises():
    for field, name in (("Email", "bounce-hard.json"), ("Recipient", "subscription-change-unsubscribe.json")):
        data = payload(name)
        del data[field]
        with pytest.raises(ValueError, match=f"without an address in {field}"):
            parse_webhook(json.dumps(data).encode())
    # An ignored event need not name anyone.
    soft = payload("bounce-soft.json")
    del soft["Email"]
    assert parse_webhook(json.dumps(soft).encode()) == []
