"""Resend's webhooks: Svix signatures checked (against Svix's own worked example, then on Resend's sample bodies
signed with a test key), then each event reduced to what changes a membership.

Bodies come from tests/fixtures/resend/webhooks/ (copied from Resend's documentation; README.md there gives each
source and what was adapted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.transports.base import DeliveryEvent
from newsletter.transports.resend import KEY_TAG, WEBHOOK_TOLERANCE, build_payload, parse_webhook, verify_webhook

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "resend" / "webhooks"
KEY_BYTES = hashlib.sha256(b"newsletter tests: resend webhook key").digest()
SECRET = "whsec_" + base64.b64encode(KEY_BYTES).decode()
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
MESSAGE_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"

# Svix's worked example (https://docs.svix.com/receiving/verifying-payloads/how; the same values are the expected
# output of test_sign_function in https://github.com/svix/svix-webhooks python/tests/test_webhooks.py).
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SVIX_HEADERS = {
    "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "svix-timestamp": "1614265330",
    "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
SVIX_BODY = b'{"test": 2432232314}'
SVIX_NOW = 1614265330

MAPPED = [
    "email-bounced.json",
    "email-bounced-with-key.json",
    "email-complained.json",
    "email-complained-tags-array.json",
    "email-suppressed.json",
]
IGNORED = [
    "email-bounced-transient.json",
    "email-delivered.json",
    "email-delivery-delayed.json",
    "email-clicked.json",
    "email-failed.json",
    "contact-updated-unsubscribed.json",
]


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def signature(payload: bytes, *, key: bytes = KEY_BYTES, message_id: str = MESSAGE_ID, timestamp: int = NOW) -> str:
    """What Svix puts in svix-signature: v1,base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = f"{message_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(payload: bytes, *, timestamp: int = NOW, **kwargs) -> dict[str, str]:
    """The three headers Resend sends with a webhook, as Svix would sign `payload`."""
    return {
        "svix-id": MESSAGE_ID,
        "svix-timestamp": str(timestamp),
        "svix-signature": signature(payload, timestamp=timestamp, **kwargs),
        "content-type": "application/json",
    }


# Svix's algorithm


def test_svixs_worked_example_verifies():
    """The documented secret, headers and body give True at the documented moment: our HMAC is Svix's
    (https://docs.svix.com/receiving/verifying-payloads/how, https://docs.svix.com/receiving/verifying-payloads/how-manual)."""
    assert verify_webhook(SVIX_HEADERS, SVIX_BODY, SVIX_SECRET, now=SVIX_NOW)
    assert (
        signature(
            SVIX_BODY, key=base64.b64decode(SVIX_SECRET[6:]), message_id=SVIX_HEADERS["svix-id"], timestamp=SVIX_NOW
        )
        == SVIX_HEADERS["svix-signature"]
    )
    # The secret pasted without its prefix, as Svix's libraries accept it; header names in any case.
    assert verify_webhook(SVIX_HEADERS, SVIX_BODY, SVIX_SECRET.removeprefix("whsec_"), now=SVIX_NOW)
    capitalised = {
        "Svix-Id": SVIX_HEADERS["svix-id"],
        "SVIX-TIMESTAMP": SVIX_HEADERS["svix-timestamp"],
        "Svix-Signature": SVIX_HEADERS["svix-signature"],
    }
    assert verify_webhook(capitalised, SVIX_BODY, SVIX_SECRET, now=SVIX_NOW)
    # The unbranded names Svix's libraries also read (Standard Webhooks).
    unbranded = {k.replace("svix-", "webhook-"): v for k, v in SVIX_HEADERS.items()}
    assert verify_webhook(unbranded, SVIX_BODY, SVIX_SECRET, now=SVIX_NOW)


def test_svixs_worked_example_is_refused_when_altered():
    """The same example with one thing changed (https://docs.svix.com/receiving/verifying-payloads/how)."""
    assert not verify_webhook(SVIX_HEADERS, b'{"test": 2432232315}', SVIX_SECRET, now=SVIX_NOW)
    assert not verify_webhook({**SVIX_HEADERS, "svix-id": "msg_other"}, SVIX_BODY, SVIX_SECRET, now=SVIX_NOW)
    assert not verify_webhook({**SVIX_HEADERS, "svix-timestamp": "1614265331"}, SVIX_BODY, SVIX_SECRET, now=SVIX_NOW)
    # The invalid signature of Svix's test_invalid_signature_raises_error: the last character changed.
    wrong = {**SVIX_HEADERS, "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}
    assert not verify_webhook(wrong, SVIX_BODY, SVIX_SECRET, now=SVIX_NOW)
    # Today, years after its timestamp: a replay.
    assert not verify_webhook(SVIX_HEADERS, SVIX_BODY, SVIX_SECRET)


# Genuine and forged requests, on Resend's bodies


@pytest.mark.parametrize("name", MAPPED + IGNORED)
def test_resends_bodies_signed_with_the_secret_are_genuine(name):
    """Every sample body of Resend's event pages, signed as Svix signs it
    (https://resend.com/docs/webhooks/verify-webhooks-requests)."""
    payload = body(name)
    assert verify_webhook(signed_headers(payload), payload, SECRET, now=NOW)


def test_a_request_within_the_tolerance_is_genuine_and_one_outside_is_a_replay():
    """Svix's libraries allow five minutes either way (svix-webhooks python/svix/webhooks.py)."""
    payload = body("email-bounced.json")
    headers = signed_headers(payload)
    assert WEBHOOK_TOLERANCE == 300
    for now in (NOW - 300, NOW + 300, NOW + 0.5):
        assert verify_webhook(headers, payload, SECRET, now=now)
    for now in (NOW - 301, NOW + 301, NOW + 86_400):
        assert not verify_webhook(headers, payload, SECRET, now=now)
    # The real clock: a request signed now passes, one signed an hour ago does not.
    now = int(datetime.now(UTC).timestamp())
    assert verify_webhook(signed_headers(payload, timestamp=now), payload, SECRET)
    assert not verify_webhook(signed_headers(payload, timestamp=now - 3600), payload, SECRET)


def test_an_unsigned_request_is_refused():
    payload = body("email-complained.json")
    headers = signed_headers(payload)
    assert not verify_webhook({}, payload, SECRET, now=NOW)
    assert not verify_webhook({"content-type": "application/json"}, payload, SECRET, now=NOW)
    for missing in ("svix-id", "svix-timestamp", "svix-signature"):
        assert not verify_webhook({k: v for k, v in headers.items() if k != missing}, payload, SECRET, now=NOW)


def test_a_mis_signed_request_is_refused():
    """A signature of another body, another id, another key, or of nothing, in every position."""
    payload = body("email-bounced-with-key.json")
    other = body("email-delivered.json")
    headers = signed_headers(payload)
    for wrong in (
        signature(other),
        signature(payload, message_id="msg_other"),
        signature(payload, key=b"another key"),
        "v1," + base64.b64encode(b"\0" * 32).decode(),
        "v1,",
        "",
    ):
        assert not verify_webhook({**headers, "svix-signature": wrong}, payload, SECRET, now=NOW), wrong
    # The signature of our body under another version than v1 is not a v1 signature.
    assert not verify_webhook(
        {**headers, "svix-signature": "v2," + headers["svix-signature"][3:]}, payload, SECRET, now=NOW
    )
    assert not verify_webhook(
        {**headers, "svix-signature": "v1a," + headers["svix-signature"][3:]}, payload, SECRET, now=NOW
    )


def test_several_signatures_one_of_which_matches_are_genuine():
    """While a secret is rotated Svix sends one signature per secret, separated by spaces
    (https://docs.svix.com/receiving/verifying-payloads/how-manual; svix-webhooks' test_multi_sig_payload_is_valid)."""
    payload = body("email-suppressed.json")
    headers = signed_headers(payload)
    mixed = " ".join(
        [
            signature(payload, key=b"old key"),
            "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            headers["svix-signature"],
            "v1,not-base64!",
        ]
    )
    assert verify_webhook({**headers, "svix-signature": mixed}, payload, SECRET, now=NOW)
    only_old = " ".join([signature(payload, key=b"old key"), signature(payload, key=b"older key")])
    assert not verify_webhook({**headers, "svix-signature": only_old}, payload, SECRET, now=NOW)


def test_a_tampered_body_is_refused():
    """A body changed after signing, even only re-serialised (which is why the raw body is verified)."""
    payload = body("email-bounced-with-key.json")
    headers = signed_headers(payload)
    assert verify_webhook(headers, payload, SECRET, now=NOW)
    for tampered in (
        payload.replace(b"zoe@example.net", b"someone@example.net"),
        payload.replace(b'"Permanent"', b'"Transient"'),
        payload + b" ",
        payload[:-2],
        json.dumps(json.loads(payload)).encode(),
        b"",
    ):
        assert not verify_webhook(headers, tampered, SECRET, now=NOW)


def test_a_request_signed_with_another_secret_is_refused():
    payload = body("email-complained.json")
    headers = signed_headers(payload)
    other = "whsec_" + base64.b64encode(hashlib.sha256(b"another endpoint").digest()).decode()
    assert not verify_webhook(headers, payload, other, now=NOW)
    assert not verify_webhook(headers, payload, SVIX_SECRET, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"svix-timestamp": "not a number"},
        {"svix-timestamp": ""},
        {"svix-timestamp": "-1767225600"},
        {"svix-timestamp": "1767225600.0"},
        {"svix-timestamp": "1.7e9"},
        {"svix-timestamp": " 1767225600"},
        {"svix-timestamp": "٧٦٧٢٢٥٦٠٠"},  # Arabic-Indic digits, which int() would accept
        {"svix-timestamp": "9" * 400},
        {"svix-id": ""},
        {"svix-id": "msg_\udc80"},
        {"svix-signature": "garbage"},
        {"svix-signature": "v1"},
        {"svix-signature": "v1,%%%%"},
        {"svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"},  # padding missing
        {"svix-signature": "\x00\x01"},
        {"svix-id": None},
        {"svix-signature": b"v1,abc"},
        {"svix-timestamp": 1767225600},
    ],
)
def test_garbage_headers_are_refused_without_an_exception(change):
    payload = body("email-bounced.json")
    headers = {**signed_headers(payload), **change}
    assert verify_webhook(headers, payload, SECRET, now=NOW) is False


@pytest.mark.parametrize(
    "secret", ["", "whsec_", "whsec_not base64!", "whsec_%%%%", "   ", "whsec_" + "A" * 3, None, 42, b"whsec_abc"]
)
def test_a_malformed_secret_refuses_everything(secret):
    payload = body("email-bounced.json")
    assert verify_webhook(signed_headers(payload), payload, secret, now=NOW) is False


def test_malformed_arguments_give_false_not_an_exception():
    payload = body("email-bounced.json")
    headers = signed_headers(payload)
    assert verify_webhook(None, payload, SECRET, now=NOW) is False
    assert verify_webhook(["svix-id"], payload, SECRET, now=NOW) is False
    assert verify_webhook(headers, None, SECRET, now=NOW) is False
    assert verify_webhook(headers, payload.decode(), SECRET, now=NOW) is False
    assert verify_webhook(headers, payload, SECRET, now="soon") is False
    # A body that is not UTF-8 is still only bytes to sign.
    binary = b"\xff\xfe" + payload
    assert verify_webhook(signed_headers(binary), binary, SECRET, now=NOW) is True


# What the events mean


def test_a_hard_bounce_is_bounced():
    """email.bounced with bounce.type Permanent (https://resend.com/docs/webhooks/emails/bounced, sample)."""
    assert parse_webhook(body("email-bounced.json")) == [
        DeliveryEvent(
            "bounced",
            "delivered@resend.dev",
            provider_id="56761188-7520-42d8-8898-ff6fc54ce618",
            at=datetime(2026, 11, 22, 23, 41, 12, 126000, tzinfo=UTC),
            detail="hard bounce (Suppressed): The recipient's email address is on the suppression list because it "
            "has a recent history of producing hard bounces.",
            key=None,  # the sample's only tag is category
        )
    ]


def test_a_hard_bounce_of_our_message_gives_back_its_key():
    """Our newsletter_key tag echoed in data.tags; the address taken out of `Name <address>`; the SMTP
    diagnostic kept (https://resend.com/docs/webhooks/emails/bounced, adapted: see README)."""
    [event] = parse_webhook(body("email-bounced-with-key.json"), {"svix-id": MESSAGE_ID})
    assert event == DeliveryEvent(
        "bounced",
        "zoe@example.net",
        provider_id="ae2014de-c168-4c61-8267-70d2662a1ce1",
        at=datetime(2026, 11, 22, 23, 41, 12, 126000, tzinfo=UTC),
        detail="hard bounce (General): The recipient's email provider sent a hard bounce message.; "
        "smtp; 550 5.5.0 Requested action not taken: mailbox unavailable",
        key="12-345",
    )


def test_a_spam_complaint_is_complained():
    """email.complained (https://resend.com/docs/dashboard/webhooks/event-types, sample)."""
    assert parse_webhook(body("email-complained.json")) == [
        DeliveryEvent(
            "complained",
            "delivered@resend.dev",
            provider_id="56761188-7520-42d8-8898-ff6fc54ce618",
            at=datetime(2024, 2, 22, 23, 41, 12, 126000, tzinfo=UTC),
            detail="spam complaint",
        )
    ]


def test_tags_written_as_an_array_also_give_the_key():
    """The older field table's array of {name, value} (https://resend.com/docs/webhooks/emails/complained)."""
    [event] = parse_webhook(body("email-complained-tags-array.json"))
    assert (event.kind, event.email, event.key) == ("complained", "audrey@example.org", "12-2")
    assert event.provider_id == "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb"


def test_a_suppressed_email_marks_the_address_bounced():
    """email.suppressed: Resend did not send, the address being on the account's suppression list, where hard
    bounces and complaints put it (https://resend.com/docs/webhooks/emails/suppressed, sample;
    https://resend.com/docs/dashboard/emails/email-suppressions)."""
    assert parse_webhook(body("email-suppressed.json")) == [
        DeliveryEvent(
            "bounced",
            "delivered@resend.dev",
            provider_id="56761188-7520-42d8-8898-ff6fc54ce618",
            at=datetime(2026, 11, 22, 23, 41, 12, 126000, tzinfo=UTC),
            detail="suppressed by Resend (OnAccountSuppressionList): Resend has suppressed sending to this address "
            "because it is on the account-level suppression list. This does not count toward your bounce rate metric",
        )
    ]


@pytest.mark.parametrize("name", IGNORED)
def test_events_that_change_no_membership_are_ignored(name):
    """A soft bounce (Transient, https://resend.com/docs/dashboard/emails/email-bounces), delivered, delayed,
    clicked, failed, and an Audience contact's update (https://resend.com/docs/dashboard/webhooks/event-types)."""
    assert parse_webhook(body(name)) == []


def test_a_bounce_that_is_not_permanent_is_ignored():
    """Only Permanent is a hard bounce; Transient, Temporary and Undetermined are not, nor a bounce without type
    (https://resend.com/docs/dashboard/emails/email-bounces; https://resend.com/docs/webhooks/emails/bounced)."""
    event = json.loads(body("email-bounced.json"))
    for bounce in ({"type": "Transient"}, {"type": "Temporary"}, {"type": "Undetermined"}, {}, None, "Permanent"):
        event["data"]["bounce"] = bounce
        assert parse_webhook(json.dumps(event).encode()) == [], bounce
    event["data"]["bounce"] = {"type": "permanent", "subType": "NoEmail"}
    assert [e.detail for e in parse_webhook(json.dumps(event).encode())] == ["hard bounce (NoEmail)"]


def test_every_recipient_of_the_event_is_reported_in_order():
    """data.to is an array of the impacted recipients (https://resend.com/docs/webhooks/emails/complained)."""
    event = json.loads(body("email-complained.json"))
    event["data"]["to"] = ["a@example.org", '"Dupont, Jean" <j@example.com>', "not an address", 7]
    assert [(e.kind, e.email) for e in parse_webhook(json.dumps(event).encode())] == [
        ("complained", "a@example.org"),
        ("complained", "j@example.com"),
    ]


def test_the_key_our_adapter_sends_is_the_key_that_comes_back(messages):
    """build_payload tags each email with its ledger key; Resend echoes the tags in data.tags as an object
    (https://resend.com/docs/dashboard/emails/tags: "After the email is sent, the tag is included in the webhook
    event")."""
    email = build_payload(messages)[2]
    tags = {tag["name"]: tag["value"] for tag in email["tags"]}
    event = json.loads(body("email-complained.json"))
    event["data"].update(to=email["to"], tags={"category": "newsletter", **tags})
    [parsed] = parse_webhook(json.dumps(event).encode())
    assert parsed.key == messages[2].key == tags[KEY_TAG]
    assert parsed.email == messages[2].recipient.address


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"\xff\xfe{}",
        b"null",
        b"[]",
        b'"email.bounced"',
        b"{}",
        b'{"type": 5}',
        b'{"type": "email.bounced"}',
        b'{"type": "email.complained", "data": []}',
        b'{"type": "email.complained", "data": {}}',
        b'{"type": "email.complained", "data": {"to": "nobody"}}',
        b'{"type": "email.suppressed", "data": {"to": []}}',
    ],
)
def test_malformed_json_is_a_value_error(payload):
    with pytest.raises(ValueError) as raised:
        parse_webhook(payload)
    assert str(raised.value)


def test_an_unknown_event_type_is_ignored():
    assert parse_webhook(b'{"type": "domain.updated", "data": {"id": "d91cd9bd"}}') == []
    assert parse_webhook(b'{"type": "suppression.added", "data": {"email": "a@example.org"}}') == []


def test_a_timestamp_resend_did_not_write_leaves_at_empty():
    event = json.loads(body("email-complained.json"))
    for created_at in ("yesterday", None, 1708645272):
        event["created_at"] = created_at
        [parsed] = parse_webhook(json.dumps(event).encode())
        assert parsed.at is None
