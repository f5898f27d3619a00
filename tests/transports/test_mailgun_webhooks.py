"""Mailgun's webhooks: the signature in the body checked, then the event reduced to a membership change.

Payloads: tests/fixtures/mailgun/webhooks/ (event-data copied from Mailgun's webhook-payloads page, wrapped and
signed here as Mailgun posts them; that folder's README.md says how).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.transports.base import DeliveryEvent
from newsletter.transports.mailgun import (
    WEBHOOK_MAX_AGE,
    build_payload,
    parse_webhook,
    verify_webhook,
    webhook_token,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mailgun" / "webhooks"
PAYLOADS = "https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads"
SIGNING_KEY = "test-webhook-signing-key-" + "7f3a9c" * 5  # made for these tests; Mailgun's look like 32 hex digits
EXAMPLE = json.loads((FIXTURES / "signature-example.json").read_text(encoding="utf-8"))
TOKEN, TIMESTAMP = EXAMPLE["token"], EXAMPLE["timestamp"]  # "e0b54771…", "1770920772"
NOW = int(TIMESTAMP) + 2  # the request arrives two seconds after Mailgun signed it
HEADERS = {"Content-Type": "application/json", "User-Agent": "mailgun/treq-16.12.0"}
RECIPIENT_VARIABLE = re.compile(r"%recipient\.([^%\s]+)%")


def event_data(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def hmac_hex(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def signed(data: dict, *, key: str = SIGNING_KEY, timestamp: str = TIMESTAMP, token: str = TOKEN, **extra) -> bytes:
    """The body Mailgun posts: the event-data beside a signature block, HMAC-SHA256(key, timestamp + token)."""
    signature = {"token": token, "timestamp": timestamp, "signature": hmac_hex(key, timestamp, token), **extra}
    return json.dumps({"signature": signature, "event-data": data}).encode()


def verify(body: bytes, secret: str = SIGNING_KEY, headers=HEADERS, **kwargs) -> bool:
    return verify_webhook(headers, body, secret, now=kwargs.pop("now", NOW), **kwargs)


# Events that change a membership ---------------------------------------------------------------------------------


def test_a_permanent_failure_is_a_hard_bounce():
    """The "Permanent Failed Event" of https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
    (severity permanent, reason bounce, a 550 from Outlook)."""
    body = signed(event_data("failed-permanent.json"))
    assert verify(body)
    assert parse_webhook(body, HEADERS) == [
        DeliveryEvent(
            kind="bounced",
            email="badrecipient@sample.mailgun.com",
            provider_id="<20260212174255.58bbb7ce85a423e5@mailgun.com>",  # bracketed, as the sending answer gives it
            at=datetime.fromtimestamp(1770918175.5923693, tz=UTC),
            detail="permanent failure (bounce): 550 5.5.0 Requested action not taken: mailbox unavailable "
            "(S2017062302). [BN3PEPF0000B36D.namprd21.prod.outlook.com 2026-02-12T17:42:55.527Z 08DE657A58651558]",
            key=None,  # the docs' message was sent without our v:newsletter-key
        )
    ]


def test_a_permanent_failure_without_smtp_words_keeps_mailgun_description():
    """A drop before any SMTP session: Mailgun says why in delivery-status.description (the 605 "Not delivering to
    previously bounced address" of Mailgun's older webhook examples, as django-anymail's tests keep them)."""
    data = event_data("failed-permanent.json")
    data["reason"] = "suppress-bounce"
    data["delivery-status"] = {
        "code": None,
        "message": "",
        "description": "Not delivering to previously bounced address",
    }
    [event] = parse_webhook(signed(data))
    assert (event.kind, event.detail) == (
        "bounced",
        "permanent failure (suppress-bounce): Not delivering to previously bounced address",
    )


def test_a_spam_complaint():
    """The "Spam Complaint Event" of https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads"""
    body = signed(event_data("complained.json"))
    assert verify(body)
    assert parse_webhook(body) == [
        DeliveryEvent(
            kind="complained",
            email="recipient@sample.mailgun.com",
            provider_id="<20260212182531.0d5ed3254c319957@sample.mailgun.com>",
            at=datetime.fromtimestamp(1770920772.2684145, tz=UTC),
            detail="spam complaint",
        )
    ]


def test_an_unsubscribe_through_mailgun():
    """The "Unsubscribed Event" of https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
    (its "storage": [] and "tags": ["*"] as the page shows them)."""
    body = signed(event_data("unsubscribed.json"))
    assert verify(body)
    [event] = parse_webhook(body)
    assert (event.kind, event.email, event.key) == ("unsubscribed", "recipient@sample.mailgun.com", None)
    assert event.provider_id == "<20260205213049.8e3a7bf607f78309@sample.mailgun.com>"
    assert event.at == datetime(2026, 2, 5, 21, 31, 30, 465629, tzinfo=UTC)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(event_data("failed-temporary.json"), id="temporary failure (421)"),
        pytest.param(event_data("delivered.json"), id="delivered"),
        pytest.param({**event_data("delivered.json"), "event": "accepted"}, id="accepted"),
        pytest.param({**event_data("delivered.json"), "event": "opened"}, id="opened"),
        pytest.param({**event_data("delivered.json"), "event": "clicked"}, id="clicked"),
        pytest.param({**event_data("failed-permanent.json"), "severity": None}, id="failed without severity"),
        pytest.param({"event": "some-future-event", "recipient": "x@example.org"}, id="an event we do not know"),
    ],
)
def test_events_that_change_no_membership_are_ignored(data):
    """A soft bounce is retried by Mailgun ("severity=temporary when a message is temporary rejected by an ESP":
    https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-types); the others are news, not
    changes. The temporary failure and the delivery are the examples of the webhook-payloads page."""
    body = signed(data)
    assert verify(body)
    assert parse_webhook(body) == []


def test_one_event_per_request():
    """Mailgun posts each event on its own ("When something happens to your email, your URL will be called with
    application/JSON payload": https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads):
    there is no batch form, and a JSON array is no Mailgun webhook."""
    one = json.loads(signed(event_data("complained.json")))
    body = json.dumps([one, one]).encode()
    assert not verify(body)
    with pytest.raises(ValueError, match="no event-data object"):
        parse_webhook(body)


# The ledger key ---------------------------------------------------------------------------------------------------


def mailgun_fills(template: str, variables: dict) -> str:
    """What Mailgun makes of a %recipient.VAR% template for one recipient."""
    return RECIPIENT_VARIABLE.sub(lambda match: str(variables[match.group(1)]), template)


def test_the_key_our_adapter_sent_comes_back(messages):
    """build_payload sends v:newsletter-key=%recipient.newsletter_key%; "given a variable of
    v:recipient-id=%recipient.id% and a recipient variable of {"user1@example.com":{"id":123}}, events and webhooks
    associated with the recipient user1@example.com will contain a user-variable field with the content of
    {"recipient-id":"123"}": https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/send-attachments.
    So a bounce of one recipient of a batch carries that recipient's key, and only theirs."""
    fields = build_payload(messages)
    custom = {name[2:]: value for name, value in fields if name.startswith("v:")}
    recipient_variables = json.loads(next(value for name, value in fields if name == "recipient-variables"))
    for message in messages:
        own = recipient_variables[message.recipient.address]
        data = event_data("failed-permanent.json")
        data["recipient"] = message.recipient.address
        data["user-variables"] = {name: mailgun_fills(value, own) for name, value in custom.items()}
        [event] = parse_webhook(signed(data))
        assert (event.kind, event.email, event.key) == ("bounced", message.recipient.address, message.key)
    assert messages[1].key == "12-2"


@pytest.mark.parametrize(
    ("variables", "key"),
    [
        ({"newsletter-key": "12-2", "first_name": "John"}, "12-2"),
        ([], None),  # what Mailgun writes for a message without custom variables
        ({}, None),
        ({"newsletter-key": "%recipient.newsletter_key%"}, None),  # a recipient Mailgun found no variable for
        ({"newsletter-key": 122}, None),
        ({"newsletter-key": "12-2; DROP"}, None),
        ("12-2", None),
    ],
)
def test_only_a_well_formed_key_is_taken(variables, key):
    data = {**event_data("complained.json"), "user-variables": variables}
    assert parse_webhook(signed(data))[0].key == key


# Authenticity ----------------------------------------------------------------------------------------------------


def test_the_signature_matches_mailgun_own_sdk():
    """The test vector of Mailgun's PHP SDK (mailgun/mailgun-php tests/Api/WebhookTest.php, testVerifyWebhookGood
    and testVerifyWebhookBad): HMAC-SHA256 of timestamp + token, hex, with the webhook signing key."""
    key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
    signature = "9cfc5c41582e51246e73c88d34db3af0a3a2692a76fbab81492842f000256d33"
    good = {"timestamp": "1403645220", "token": "5egbgr1vjgqxtrnp65xfznchgdccwh5d6i09vijqi3whgowmn6"}
    bad = {"timestamp": "1403645220", "token": "owyldpe6nxhmrn78epljl6bj0orrki1u3d2v5e6cnlmmuox8jr"}
    data = event_data("complained.json")
    for block, expected in ((good, True), (bad, False)):
        body = json.dumps({"signature": {**block, "signature": signature}, "event-data": data}).encode()
        assert verify_webhook({}, body, key, now=1403645220 + 5) is expected


def test_the_docs_example_signature_is_a_placeholder():
    """The signature block of https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
    ends in …baed12345: it is no HMAC, so no key verifies it, and the tests sign with a key of their own."""
    body = json.dumps({"signature": EXAMPLE, "event-data": event_data("complained.json")}).encode()
    assert not verify(body)
    assert not verify(body, secret="key-3ax6xnjp29jd6fds4gc373sgvjxteol0")


def test_unsigned_mis_signed_and_wrong_key_are_refused():
    data = event_data("failed-permanent.json")
    genuine = signed(data)
    assert verify(genuine)
    assert verify(genuine, headers={})  # the signature is in the body: headers play no part
    assert not verify(json.dumps({"event-data": data}).encode())  # unsigned
    block = json.loads(genuine)["signature"]
    flipped = block["signature"][:-1] + ("0" if block["signature"][-1] != "0" else "1")
    assert not verify(json.dumps({"signature": {**block, "signature": flipped}, "event-data": data}).encode())
    assert not verify(json.dumps({"signature": {**block, "signature": ""}, "event-data": data}).encode())
    assert not verify(genuine, secret="another-signing-key")
    assert not verify(genuine, secret="")
    assert not verify(signed(data, key="the-api-key-not-the-signing-key"))
    assert verify(genuine, secret=f"  {SIGNING_KEY}\n")  # as an environment file may hold it


def test_the_signed_timestamp_and_token_cannot_be_changed():
    """Only timestamp + token are signed: changing either one breaks the signature."""
    block = json.loads(signed(event_data("complained.json")))["signature"]
    for changed in ({"timestamp": str(NOW)}, {"token": TOKEN[::-1]}, {"token": TOKEN + "x"}):
        body = json.dumps({"signature": {**block, **changed}, "event-data": event_data("complained.json")}).encode()
        assert not verify(body)


def test_the_event_itself_is_not_signed_so_tokens_must_be_remembered():
    """Mailgun signs timestamp + token and nothing of the event: another event under a signature already seen
    verifies, and so does the same body again. Only remembering tokens stops it ("cache the token value locally
    and not honor any subsequent request with the same token. This will prevent replay attacks":
    https://documentation.mailgun.com/en/latest/user_manual.html#securing-webhooks): the server reserves
    webhook_token's in its store (tests/test_web.py), the token the same in both bodies."""
    genuine = signed(event_data("delivered.json"))
    forged = json.loads(genuine)
    forged["event-data"] = {**event_data("unsubscribed.json"), "recipient": "someone.else@example.org"}
    forged = json.dumps(forged).encode()
    assert verify(forged) and verify(genuine)  # the limit of Mailgun's scheme, stated so that nobody relies on it
    assert webhook_token(genuine) == webhook_token(forged) == TOKEN
    assert webhook_token(signed(event_data("delivered.json"), token="f" * 50)) == "f" * 50


@pytest.mark.parametrize(
    ("age", "fresh"),
    [
        (0, True),
        (2, True),
        (8 * 3600, True),  # the last of Mailgun's retries, if a retry keeps the first attempt's signature
        (WEBHOOK_MAX_AGE, True),
        (WEBHOOK_MAX_AGE + 1, False),
        (30 * 86400, False),
        (-60, True),  # our clock a minute behind Mailgun's
        (-301, False),
    ],
)
def test_stale_or_future_timestamps_are_refused(age, fresh):
    """Mailgun retries for 8 hours (5 min, 10 min, 15 min, 1 h, 2 h, 4 h:
    https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-retries), and no page says whether a
    retry is signed anew; the tolerance is 9 hours back and 5 minutes ahead."""
    assert WEBHOOK_MAX_AGE == 9 * 3600
    assert verify(signed(event_data("complained.json")), now=int(TIMESTAMP) + age) is fresh
    assert verify(signed(event_data("complained.json")), now=int(TIMESTAMP) + 60, max_age=30) is False


def test_a_subaccount_event_verifies_with_the_primary_account_key():
    """A subaccount's events carry a parent-signature made with the primary account's key:
    https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks"""
    parent = hmac_hex(SIGNING_KEY, TIMESTAMP, TOKEN)
    body = signed(event_data("complained.json"), key="the-subaccount-key", **{"parent-signature": parent})
    assert verify(body)
    assert verify(body, secret="the-subaccount-key")
    assert not verify(body, secret="a-third-key")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[]",
        b'"signature"',
        b'{"signature": null, "event-data": {}}',
        b'{"signature": [], "event-data": {}}',
        b'{"signature": {"timestamp": "1770920772", "token": "abc"}}',
        json.dumps({"signature": {"timestamp": True, "token": TOKEN, "signature": "00"}}).encode(),
        json.dumps({"signature": {"timestamp": "17709e5", "token": TOKEN, "signature": "00"}}).encode(),
        json.dumps({"signature": {"timestamp": "١٧٧٠٩٢٠٧٧٢", "token": TOKEN, "signature": "00"}}).encode(),
        json.dumps({"signature": {"timestamp": "9" * 5000, "token": TOKEN, "signature": "00"}}).encode(),
        json.dumps({"signature": {"timestamp": TIMESTAMP, "token": 5, "signature": "00"}}).encode(),
        json.dumps({"signature": {"timestamp": TIMESTAMP, "token": "", "signature": "00"}}).encode(),
        json.dumps({"signature": {"timestamp": TIMESTAMP, "token": TOKEN, "signature": 123}}).encode(),
        json.dumps({"signature": {"timestamp": TIMESTAMP, "token": TOKEN, "signature": "é" * 64}}).encode(),
        json.dumps({"signature": {"timestamp": TIMESTAMP, "token": TOKEN, "signature": None}}).encode(),
        b"signature=00&timestamp=1770920772&token=abc",  # a legacy form-encoded webhook
        b"[" * 100_000,
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        HEADERS,
        {},
        {"X-Mailgun-Signature": "zz", "CONTENT-TYPE": "text/plain"},
        {"x-mailgun-signature-v2": "\x00\xff", "Authorization": "Basic Og=="},
    ],
)
def test_garbage_is_refused_without_raising(body, headers):
    assert verify_webhook(headers, body, SIGNING_KEY, now=NOW) is False


@pytest.mark.parametrize("headers", [{}, {"X-Mailgun-Signature": "zz"}, {"content-type": "text/plain"}])
def test_headers_do_not_matter(headers):
    assert verify(signed(event_data("complained.json")), headers=headers)


def test_webhook_token_of_garbage_is_none():
    for body in (b"", b"{", b"[]", b"\xff", b"[" * 100_000, b'{"signature": "x"}', b'{"signature": {"token": 5}}'):
        assert webhook_token(body) is None


# Malformed payloads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff", "not JSON"),
        (b"", "not JSON"),
        (b"[]", "no event-data object"),
        (b'{"signature": {}}', "no event-data object"),
        (b'{"event-data": "failed"}', "no event-data object"),
        (b"signature=00&timestamp=1770920772&token=abc&event=bounced", "not JSON"),
    ],
)
def test_malformed_payloads_raise_value_error(body, reason):
    with pytest.raises(ValueError, match=reason):
        parse_webhook(body)


def test_a_membership_event_without_an_address_is_malformed():
    data = {**event_data("failed-permanent.json"), "recipient": None}
    with pytest.raises(ValueError, match="failed event without a recipient"):
        parse_webhook(signed(data))


def test_odd_but_readable_fields_are_tolerated():
    """Fields Mailgun may leave out: no message headers, no timestamp, no delivery-status."""
    data = {"event": "failed", "severity": "permanent", "recipient": " Zoe@Example.net "}
    [event] = parse_webhook(json.dumps({"event-data": data}).encode())
    assert event == DeliveryEvent("bounced", "Zoe@Example.net", None, None, "permanent failure (no reason given)")
    data = {**event_data("complained.json"), "timestamp": "soon", "message": {"headers": {"message-id": "<x@y>"}}}
    [event] = parse_webhook(signed(data))
    assert (event.at, event.provider_id) == (None, "<x@y>")
