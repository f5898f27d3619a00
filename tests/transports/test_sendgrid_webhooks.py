"""SendGrid's Signed Event Webhook: verify_webhook (ECDSA over timestamp + body), then parse_webhook (events).

Bodies come from tests/fixtures/sendgrid/webhooks/ (copied from SendGrid's documentation; README.md there gives
each source). They are signed here as SendGrid signs, with a P-256 key pair made for the test; one example was
signed by SendGrid itself (sdk-signed-example.json), which proves we follow their algorithm.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from newsletter.transports.base import DeliveryEvent
from newsletter.transports.sendgrid import (
    KEY_ARG,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TOLERANCE,
    build_payload,
    parse_webhook,
    verify_webhook,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid" / "webhooks"
NOW = 1_790_000_000  # the clock of every test that does not read SDK_EXAMPLE
SDK_EXAMPLE = json.loads((FIXTURES / "sdk-signed-example.json").read_text())


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def events(name: str) -> list[dict]:
    return json.loads(fixture(name))


class Signer:
    """A Signed Event Webhook key pair: SendGrid keeps the private key and shows the public one."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        public = self.private_key.public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()  # base64 DER, as Settings > Mail Settings shows it
        self.pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def sign(self, body: bytes, timestamp: str | int = NOW) -> dict[str, str]:
        """The two headers SendGrid adds: base64 of the DER ECDSA signature of SHA-256(timestamp + body)."""
        signature = self.private_key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: str(timestamp)}


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def verify(headers, body: bytes, secret: str, now: float = NOW, **kwargs) -> bool:
    return verify_webhook(headers, body, secret, now=now, **kwargs)


def body_of(items: list[dict]) -> bytes:
    return json.dumps(items, separators=(",", ":")).encode()


# SendGrid's own signed example


def test_sendgrids_own_signed_example_verifies():
    """The signed request of SendGrid's verifier test (sendgrid-python test/unit/test_eventwebhook.py) passes.

    https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
    links that helper; its key, signature, timestamp and body (with its trailing CRLF) are used as they are.
    """
    body = SDK_EXAMPLE["body"].encode()
    headers = {SIGNATURE_HEADER: SDK_EXAMPLE["signature"], TIMESTAMP_HEADER: SDK_EXAMPLE["timestamp"]}
    signed_at = int(SDK_EXAMPLE["timestamp"])
    assert verify(headers, body, SDK_EXAMPLE["public_key"], now=signed_at + 10)
    # The same failures as SendGrid's test: another key, another body, another signature, a bad timestamp.
    assert not verify(headers, body, SDK_EXAMPLE["other_public_key"], now=signed_at)
    assert not verify(headers, b"payload", SDK_EXAMPLE["public_key"], now=signed_at)
    assert not verify({**headers, SIGNATURE_HEADER: SDK_EXAMPLE["other_signature"]}, body, SDK_EXAMPLE["public_key"])
    assert not verify({**headers, TIMESTAMP_HEADER: "timestamp"}, body, SDK_EXAMPLE["public_key"], now=signed_at)
    # The body without its trailing CRLF is another body.
    assert not verify(headers, body.rstrip(), SDK_EXAMPLE["public_key"], now=signed_at)
    # Genuine, but signed in 2020: a replay today.
    assert not verify_webhook(headers, body, SDK_EXAMPLE["public_key"])


def test_sendgrids_own_example_is_a_bounced_address_drop():
    """Its event, a drop for "Bounced Address", is a bounce: SendGrid sends nothing more to that address."""
    [event] = parse_webhook(SDK_EXAMPLE["body"].encode())
    assert event == DeliveryEvent(
        kind="bounced",
        email="hello@world.com",
        provider_id="LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        at=datetime(2020, 9, 14, 19, 41, 32, tzinfo=UTC),
        detail="dropped: Bounced Address (on SendGrid's bounce list)",
        key=None,
    )


# verify_webhook


def test_a_genuine_request_verifies(signer):
    """Signed with the test key as SendGrid signs: ECDSA P-256, SHA-256 of the timestamp followed by the raw body."""
    body = fixture("bounce.json")
    assert verify(signer.sign(body), body, signer.public_key)


def test_the_key_is_accepted_as_pem_and_with_line_breaks(signer):
    """SendGrid shows base64 DER; a PEM, or the base64 pasted over several lines or with spaces, works too."""
    body = fixture("spamreport.json")
    headers = signer.sign(body)
    assert verify(headers, body, signer.pem)
    wrapped = "\n".join(signer.public_key[i : i + 64] for i in range(0, len(signer.public_key), 64))
    assert verify(headers, body, f"  {wrapped}\n")


@pytest.mark.parametrize("case", [str.lower, str.upper, lambda name: name])
def test_header_names_are_matched_in_any_case(signer, case):
    body = fixture("unsubscribe.json")
    headers = {case(name): value for name, value in signer.sign(body).items()}
    assert verify(headers, body, signer.public_key)
    assert verify(httpx.Headers(headers), body, signer.public_key)


def test_an_unsigned_request_is_refused(signer):
    body = fixture("bounce.json")
    headers = signer.sign(body)
    assert not verify({}, body, signer.public_key)
    assert not verify({TIMESTAMP_HEADER: headers[TIMESTAMP_HEADER]}, body, signer.public_key)
    assert not verify({SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, body, signer.public_key)
    assert not verify({SIGNATURE_HEADER: "", TIMESTAMP_HEADER: headers[TIMESTAMP_HEADER]}, body, signer.public_key)


def test_a_request_signed_with_another_key_is_refused(signer):
    body = fixture("bounce.json")
    assert not verify(Signer().sign(body), body, signer.public_key)


def test_a_tampered_body_is_refused(signer):
    body = fixture("delivered.json")
    headers = signer.sign(body)
    tampered = body.replace(b'"delivered"', b'"spamreport"')
    assert tampered != body and json.loads(tampered)[0]["event"] == "spamreport"
    assert not verify(headers, tampered, signer.public_key)
    assert not verify(headers, body + b"\n", signer.public_key)


def test_a_changed_timestamp_breaks_the_signature(signer):
    """The timestamp is signed: moving it forward to pass the age check breaks the signature."""
    body = fixture("bounce.json")
    headers = signer.sign(body, NOW - 3600)
    assert not verify({**headers, TIMESTAMP_HEADER: str(NOW)}, body, signer.public_key)


def test_the_wrong_secret_is_refused(signer):
    body = fixture("bounce.json")
    headers = signer.sign(body)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_der = rsa_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (
        Signer().public_key,  # another webhook's key
        "",
        "   ",
        "not base64 at all!",
        base64.b64encode(b"not a DER key").decode(),
        base64.b64encode(rsa_der).decode(),  # not an elliptic curve key
        signer.public_key[:-8],  # cut short
        "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
        "SG.an-api-key-is-not-the-verification-key",
    ):
        assert not verify(headers, body, secret), secret


def test_a_stale_or_future_timestamp_is_refused(signer):
    """A genuine request signed more than WEBHOOK_TOLERANCE (300) seconds from now is a replay."""
    body = fixture("bounce.json")
    assert WEBHOOK_TOLERANCE == 300
    assert verify(signer.sign(body, NOW - 300), body, signer.public_key)
    assert not verify(signer.sign(body, NOW - 301), body, signer.public_key)
    assert not verify(signer.sign(body, NOW - 86_400), body, signer.public_key)
    assert verify(signer.sign(body, NOW + 300), body, signer.public_key)
    assert not verify(signer.sign(body, NOW + 301), body, signer.public_key)
    # The tolerance can be set by the caller.
    assert verify(signer.sign(body, NOW - 3600), body, signer.public_key, tolerance=3600)


def test_the_clock_is_read_when_no_time_is_given(signer):
    body = fixture("bounce.json")
    assert verify_webhook(signer.sign(body, int(datetime.now(UTC).timestamp())), body, signer.public_key)
    assert not verify_webhook(signer.sign(body, NOW - 10 * 365 * 86_400), body, signer.public_key)


@pytest.mark.parametrize(
    "signature, timestamp",
    [
        ("not base64!", None),
        ("", None),
        (base64.b64encode(b"\x30\x03\x02\x01").decode(), None),  # truncated DER
        (base64.b64encode(b"").decode(), None),
        ("é", None),
        (None, "timestamp"),
        (None, f" {NOW}"),
        (None, f"+{NOW}"),
        (None, f"{NOW}.0"),
        (None, "1_790_000_000"),
        (None, "-1"),
        (None, f"{NOW}\n"),
        (None, "9" * 40),
        (None, "١٧٩٠٠٠٠٠٠٠"),  # Arabic-Indic digits: int() reads them, SendGrid never sends them
    ],
)
def test_garbage_headers_are_refused_without_raising(signer, signature, timestamp):
    body = fixture("bounce.json")
    headers = signer.sign(body)
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    if timestamp is not None:
        headers[TIMESTAMP_HEADER] = timestamp
    assert verify(headers, body, signer.public_key) is False


def test_a_timestamp_that_is_not_plain_digits_is_refused_even_when_signed(signer):
    """SendGrid sends Unix seconds: anything else in the header is refused, whatever was signed."""
    body = fixture("bounce.json")
    for timestamp in (f"{NOW}\n", f" {NOW}", f"+{NOW}", "1_790_000_000"):
        assert not verify(signer.sign(body, timestamp), body, signer.public_key), repr(timestamp)


def test_malformed_arguments_return_false(signer):
    body = fixture("bounce.json")
    headers = signer.sign(body)
    signature, timestamp = headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]
    assert verify({SIGNATURE_HEADER: None, TIMESTAMP_HEADER: timestamp}, body, signer.public_key) is False
    assert verify({SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: NOW}, body, signer.public_key) is False
    assert verify({1: "x", b"raw": b"y"}, body, signer.public_key) is False
    assert verify(headers, body.decode(), signer.public_key) is False  # the raw bytes are signed, not a str
    assert verify(headers, body, None) is False
    assert verify(None, body, signer.public_key) is False


# parse_webhook


def test_a_hard_bounce_is_bounced():
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: Bounce ("type":"bounce").

    With "bounce_classification": "Invalid Address" (fields of the current page; README.md says what was added).
    """
    assert parse_webhook(fixture("bounce.json")) == [
        DeliveryEvent(
            kind="bounced",
            email="example@test.com",
            provider_id="14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            at=datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC),
            detail="hard bounce (Invalid Address): 5.0.0 500 unknown recipient",
            key=None,
        )
    ]


def test_a_block_is_ignored():
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: a bounce of "type":"blocked".

    "Receiving server could not or would not accept the message temporarily": not a hard bounce.
    """
    assert parse_webhook(fixture("blocked.json")) == []


def test_an_asynchronous_bounce_has_no_message_id_and_no_key():
    """The bounce quoted in https://github.com/sendgrid/docs/issues/5177: sg_message_id "" and no custom args.

    It applies to the address on every list (DeliveryEvent without a key).
    """
    [event] = parse_webhook(fixture("async-bounce.json"))
    assert event.kind == "bounced" and event.email == "foo@bar.com"
    assert event.provider_id is None and event.key is None
    assert event.detail.startswith("hard bounce: 5.1.10 550 5.1.10 RESOLVER.ADR.RecipientNotFound;")
    assert event.at == datetime.fromtimestamp(1556628023, UTC)


def test_a_spam_report_is_complained():
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: Spam Report."""
    [event] = parse_webhook(fixture("spamreport.json"))
    assert (event.kind, event.email, event.detail) == ("complained", "example@test.com", "spam report")
    assert event.provider_id == "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"


def test_unsubscribes_are_unsubscribed():
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: Unsubscribe, Group Unsubscribe."""
    [event] = parse_webhook(fixture("unsubscribe.json"))
    assert (event.kind, event.email, event.detail) == ("unsubscribed", "example@test.com", "unsubscribe")
    [event] = parse_webhook(fixture("group-unsubscribe.json"))
    assert (event.kind, event.detail) == ("unsubscribed", "group unsubscribe (group 10)")


def test_a_bounced_address_drop_is_bounced():
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: Dropped, "Bounced Address"."""
    [event] = parse_webhook(fixture("dropped-bounced-address.json"))
    assert (event.kind, event.email) == ("bounced", "example@test.com")
    assert event.detail == "dropped: Bounced Address (on SendGrid's bounce list)"


@pytest.mark.parametrize(
    "reason",
    [
        "Invalid SMTPAPI header",
        "Spam Content",
        "Unsubscribed Address",
        "Spam Reporting Address",
        "Invalid",
        "Recipient List over Package Quota",
        "",
    ],
)
def test_other_drops_are_ignored(reason):
    """The page's other drop reasons: a suppression for another cause, the content, a quota, not the address."""
    items = events("dropped-bounced-address.json")
    items[0]["reason"] = reason
    assert parse_webhook(body_of(items)) == []


@pytest.mark.parametrize("name", ["delivered.json", "deferred.json"])
def test_delivered_and_deferred_are_ignored(name):
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: Delivered, Deferred."""
    assert parse_webhook(fixture(name)) == []


def test_a_batch_gives_its_membership_changes_in_order(signer):
    """The page's "event response that includes an example of each type of event": one signed batch of 11."""
    body = fixture("every-event-type.json")
    assert verify(signer.sign(body), body, signer.public_key)
    parsed = parse_webhook(body, signer.sign(body))
    assert [(e.kind, e.detail) for e in parsed] == [
        ("bounced", "hard bounce: 5.0.0 500 unknown recipient"),  # this example has no "type": still a bounce
        ("bounced", "dropped: Bounced Address (on SendGrid's bounce list)"),
        ("complained", "spam report"),
        ("unsubscribed", "unsubscribe"),
        ("unsubscribed", "group unsubscribe (group 10)"),
    ]  # processed, deferred, delivered, open, click and group_resubscribe change nothing
    assert {e.email for e in parsed} == {"example@test.com"}
    assert {e.provider_id for e in parsed} == {"sg_message_id"}
    assert {e.at for e in parsed} == {datetime.fromtimestamp(1513299569, UTC)}


def test_the_ledger_key_comes_back_from_the_custom_args(signer, messages):
    """The custom_args build_payload attaches come back as top-level keys of each event (page's Custom Arguments)."""
    payload = build_payload(messages)
    template = events("bounce.json")[0]
    items = []
    for personalization in payload["personalizations"]:
        address = personalization["to"][0]["email"]
        items.append({**template, "email": address, **personalization["custom_args"]})
    body = body_of(items)
    assert verify(signer.sign(body), body, signer.public_key)
    parsed = parse_webhook(body)
    assert [(e.email, e.key) for e in parsed] == [(m.recipient.address, m.key) for m in messages]
    assert [e.key for e in parsed] == ["12-1", "12-2", "12-3", "12-4"]


def test_a_key_that_is_not_a_string_is_no_key():
    for value in (None, 12, ["12-1"], {"k": "12-1"}, "", "  "):
        [event] = parse_webhook(body_of([{**events("spamreport.json")[0], KEY_ARG: value}]))
        assert event.key is None


def test_an_unknown_event_or_bounce_type_is_ignored():
    bounce = events("bounce.json")[0]
    for item in (
        {**bounce, "type": "expired"},
        {**bounce, "event": "group_resubscribe"},
        {**bounce, "event": "account_status_change"},
        {**bounce, "event": None},
        {"sg_event_id": "x"},
    ):
        assert parse_webhook(body_of([item])) == []
    assert parse_webhook(b"[]") == []


def test_an_unreadable_event_time_is_none():
    bounce = events("bounce.json")[0]
    for value in (None, "soon", True, 10**20, [1]):
        [event] = parse_webhook(body_of([{**bounce, "timestamp": value}]))
        assert event.at is None
    [event] = parse_webhook(body_of([{**bounce, "timestamp": "1513299569"}]))
    assert event.at == datetime.fromtimestamp(1513299569, UTC)


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "not JSON"),
        (b"[{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"<html>", "not JSON"),
        (b'{"event": "bounce"}', "expected a JSON array"),
        (b"null", "expected a JSON array"),
        (b'["bounce"]', "event 0 is str"),
        (b'[{"event": "spamreport"}]', "without an email address"),
        (b'[{"event": "bounce", "email": "not an address"}]', "without an email address"),
    ],
)
def test_a_malformed_body_raises_value_error(body, reason):
    with pytest.raises(ValueError, match=reason):
        parse_webhook(body)
