"""The Postmark transport against respx: the request as Postmark documents it, and each kind of answer.

Bodies come from tests/fixtures/postmark/ (copied from Postmark's documentation; README.md there gives each
source and what was adapted to match the test messages).
"""

from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Recipient
from newsletter.transports import postmark, transport_from_dsn
from newsletter.transports.base import Dsn, Outcome, TransportError
from newsletter.transports.postmark import PostmarkTransport, address, build_payload, parse_response

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "postmark"
TOKEN = "f3c1a9e2-5b7d-4e0a-9c61-Secr3tT0ken"
DSN = f"postmark+api://{TOKEN}@default"
# These messages carry newsletter's own links; on the default stream the default is Postmark's (see
# test_postmark_unsubscribe.py), so the sending tests ask for ours.
DSN_OWN = f"{DSN}?unsubscribe=own"
URL = "https://api.postmarkapp.com/email/batch"
BATCH_PAGE = "https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails"
# The body format on https://postmarkapp.com/developer/api/email-api
BODY_FIELDS = set(
    "From To Cc Bcc Subject Tag HtmlBody TextBody ReplyTo Headers TrackOpens TrackLinks Metadata Attachments "
    "MessageStream".split()
)


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def transport(dsn: str = DSN) -> PostmarkTransport:
    made = transport_from_dsn(dsn)
    assert isinstance(made, PostmarkTransport)
    return made


def send(messages, dsn: str = DSN_OWN, times: int = 1) -> list[list[Outcome]]:
    """Send the batch `times` times through one transport; return each call's outcomes."""

    async def run() -> list[list[Outcome]]:
        sender = transport(dsn)
        try:
            return [await sender.send_batch(messages) for _ in range(times)]
        finally:
            await sender.aclose()

    return asyncio.run(run())


# The request


@respx.mock
def test_request_is_the_documented_batch_call(messages):
    """URL, method, headers and body shape as on the batch page (BATCH_PAGE; fixture batch-request.json)."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=body("batch-success.json")))
    send(messages)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"

    sent = json.loads(request.content)
    documented = json.loads(body("batch-request.json"))
    assert isinstance(sent, list) and len(sent) == len(messages) == 4
    for item in sent:
        assert set(documented[0]) <= set(item)  # every field of the documented example, and ours
        assert set(item) <= BODY_FIELDS
        assert item["From"] == "Le bulletin des Alliances <alliancesolidarite@crdbsl.org>"
        assert item["ReplyTo"] == "alliancesolidarite@crdbsl.org"
        assert item["MessageStream"] == "broadcast"
        assert item["TrackOpens"] is False
        assert item["TrackLinks"] == "None"
        assert item["Subject"] == "Retour sur le 2e Forum des Alliances"
    assert [item["To"] for item in sent] == [
        "Françoise Légaré-Pelletier <francoise@example.org>",
        "Audrey Charest <audrey@example.org>",
        "Zoé Côté-Bœuf <zoe@example.net>",
        "jean@example.com",
    ]
    # UTF-8 on the wire, not \u escapes and not RFC 2047: the names reach Postmark as written.
    assert "Françoise Légaré-Pelletier".encode() in request.content
    assert "Zoé Côté-Bœuf".encode() in request.content
    assert b"=?utf-8?" not in request.content


@respx.mock
def test_each_message_carries_its_own_content_and_list_headers(messages):
    """Postmark's batch substitutes nothing: each HtmlBody/TextBody is filled, with that recipient's links."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=body("batch-success.json")))
    send(messages)
    sent = json.loads(route.calls.last.request.content)

    for item, message in zip(sent, messages, strict=True):
        assert item["HtmlBody"] == message.html and item["TextBody"] == message.text
        assert "%%" not in item["HtmlBody"] and "%%" not in item["TextBody"]
        assert message.values["unsubscribe_url"] in item["TextBody"]
        assert html.escape(message.values["unsubscribe_url"]) in item["HtmlBody"]
        assert item["Headers"] == [
            {"Name": "List-Id", "Value": "Le bulletin des Alliances <alliances.crdbsl.org>"},
            {"Name": "List-Unsubscribe", "Value": f"<{message.values['unsubscribe_url']}>"},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ]
        assert item["Metadata"] == {"newsletter-key": message.key}
    assert sent[0]["Headers"] != sent[1]["Headers"]  # one unsubscribe link per subscriber


def test_batch_size_is_postmarks_limit(campaign):
    """'up to 500 messages per API call' (BATCH_PAGE): max_batch is 500 and a full batch is one array."""
    assert PostmarkTransport.max_batch == 500
    batch = [campaign.build(Recipient(n, f"abonne{n}@example.org", "Éloïse")) for n in range(1, 501)]
    assert len(build_payload(batch)) == 500


def test_addresses_keep_accents_and_quote_punctuation():
    assert address(Mailbox("Zoé Côté-Bœuf", "zoe@example.net")) == "Zoé Côté-Bœuf <zoe@example.net>"
    assert address(Mailbox("", "jean@example.com")) == "jean@example.com"
    assert address(Mailbox("Côté, Zoé", "zoe@example.net")) == '"Côté, Zoé" <zoe@example.net>'
    assert address(Mailbox('Le "vrai" Jean', "j@example.com")) == '"Le \\"vrai\\" Jean" <j@example.com>'
    assert address(Mailbox("Jean\r\nBcc: x@evil.example", "j@example.com")).count("\n") == 0


@respx.mock
def test_a_batch_over_50_mb_is_split(messages, monkeypatch):
    """'up to 50 MB payload size' (BATCH_PAGE): a batch whose JSON is larger goes in several requests."""
    monkeypatch.setattr(postmark.sending, "MAX_PAYLOAD_BYTES", len(postmark.encode(build_payload(messages[:2]))) + 1)
    success = json.loads(body("batch-success.json"))
    route = respx.post(URL).mock(
        side_effect=[
            httpx.Response(200, json=success[:2]),
            httpx.Response(200, json=success[2:]),
        ]
    )
    [outcomes] = send(messages)
    assert route.call_count == 2
    assert [len(json.loads(call.request.content)) for call in route.calls] == [2, 2]
    assert [o.provider_id for o in outcomes] == [r["MessageID"] for r in success]


# The answers


def test_documented_response_verbatim(campaign):
    """batch-response.json unchanged from BATCH_PAGE, for messages to receiver1@ and receiver2@example.com."""
    two = [campaign.build(Recipient(n, f"receiver{n}@example.com")) for n in (1, 2)]
    outcomes = parse_response(200, {}, body("batch-response.json"), two)
    assert outcomes == [
        Outcome.sent("b7bc2f4a-e38e-4336-af7d-e6c392c2f817"),
        Outcome.sent("e2ecbbfc-fe12-463d-b933-9fe22915106d"),
    ]


@respx.mock
def test_partial_failure_maps_each_result_to_its_message(messages):
    """Per-message ErrorCodes in a 200 answer (https://postmarkapp.com/developer/api/overview#error-codes;
    texts as quoted by django-anymail): 406 is a hard bounce, 300 fails without bounce, the others are sent."""
    respx.post(URL).mock(return_value=httpx.Response(200, content=body("batch-partial-failure.json")))
    [outcomes] = send(messages)

    assert [o.status for o in outcomes] == ["sent", "failed", "failed", "sent"]
    assert outcomes[0].provider_id == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    assert outcomes[3].provider_id == "e2ecbbfc-fe12-463d-b933-9fe22915106d"
    inactive, invalid = outcomes[1], outcomes[2]
    assert inactive.bounce is True
    assert inactive.reason.startswith("postmark 406: inactive recipient (hard bounce or spam complaint)")
    assert invalid.bounce is False
    assert invalid.reason.startswith("postmark 300: invalid email request")
    assert "Invalid 'To' address" in invalid.reason


def test_accepted_but_inactive_address_is_a_bounce(messages):
    """ErrorCode 0 with 'will not deliver to these inactive addresses' (Postmark's wording, quoted by anymail)."""
    answer = [
        {
            "ErrorCode": 0,
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
            "To": "francoise@example.org",
            "Message": "Message OK, but will not deliver to these inactive addresses: francoise@example.org. "
            "Inactive recipients are ones that have generated a hard bounce or a spam complaint.",
        }
    ]
    [outcome] = parse_response(200, {}, json.dumps(answer).encode(), messages[:1])
    assert outcome.status == "failed" and outcome.bounce is True


def test_delayed_delivery_is_still_sent(messages):
    """'Message accepted, but delivery may be delayed.' without ErrorCode (django-anymail #392) counts as sent."""
    answer = [
        {
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
            "Message": "Message accepted, but delivery may be delayed.",
        }
    ]
    assert parse_response(200, {}, json.dumps(answer).encode(), messages[:1]) == [
        Outcome.sent("b7bc2f4a-e38e-4336-af7d-e6c392c2f817")
    ]


@respx.mock
def test_an_answer_missing_a_message_leaves_it_retry(messages):
    """Three results for four messages (batch-success.json cut short): the fourth is not counted as sent."""
    respx.post(URL).mock(return_value=httpx.Response(200, json=json.loads(body("batch-success.json"))[:3]))
    [outcomes] = send(messages)
    assert [o.status for o in outcomes] == ["sent", "sent", "sent", "retry"]
    assert outcomes[3].provider_id is None
    assert "did not mention" in outcomes[3].reason


def test_a_result_for_another_recipient_is_not_trusted(messages):
    """Results come in the order sent; a result whose To is someone else leaves the message retry."""
    results = json.loads(body("batch-success.json"))
    results[0], results[1] = results[1], results[0]
    outcomes = parse_response(200, {}, json.dumps(results).encode(), messages)
    assert [o.status for o in outcomes] == ["retry", "retry", "sent", "sent"]


def test_an_unreadable_answer_sends_nothing(messages):
    for answer in (b"<html>Bad gateway</html>", b'{"ErrorCode": 0}', b"[null, 42]"):
        outcomes = parse_response(200, {}, answer, messages[:2])
        assert [o.status for o in outcomes] == ["retry", "retry"]


@respx.mock
def test_422_for_the_whole_request_fails_every_message(messages):
    """The 422 body from https://postmarkapp.com/support/article/troubleshooting-422-unprocessable-entity-errors."""
    respx.post(URL).mock(return_value=httpx.Response(422, content=body("error-422-invalid-from.json")))
    [outcomes] = send(messages)
    assert [o.status for o in outcomes] == ["failed"] * 4
    assert not any(o.bounce for o in outcomes)
    assert outcomes[0].reason.startswith("postmark 300: invalid email request")
    assert "not a verified sender signature" in outcomes[0].reason


def test_422_for_an_account_problem_stops_the_run(messages):
    """ErrorCodes 405/412/413 (https://postmarkapp.com/developer/api/overview#error-codes; message text invented)."""
    answer = json.dumps({"ErrorCode": 412, "Message": "Your account is pending approval."}).encode()
    with pytest.raises(TransportError, match="postmark 412: the Postmark account is pending"):
        parse_response(422, {}, answer, messages)


def test_422_naming_inactive_addresses_bounces_only_those(messages):
    """A request-level 406 (Postmark's wording as quoted by django-anymail's tests)."""
    answer = json.dumps(
        {
            "ErrorCode": 406,
            "Message": "You tried to send to a recipient that has been marked as inactive.\n"
            "Found inactive addresses: audrey@example.org, zoe@example.net.\n"
            "Inactive recipients are ones that have generated a hard bounce or a spam complaint.",
        }
    ).encode()
    outcomes = parse_response(422, {}, answer, messages)
    assert [(o.status, o.bounce) for o in outcomes] == [
        ("retry", False),
        ("failed", True),
        ("failed", True),
        ("retry", False),
    ]


def test_other_whole_request_errors(messages):
    maintenance = json.dumps({"ErrorCode": 100, "Message": "Maintenance"}).encode()
    assert [o.status for o in parse_response(422, {"retry-after": "60"}, maintenance, messages)] == ["retry"] * 4
    plain = parse_response(400, {}, b"Bad Request", messages)
    assert [o.status for o in plain] == ["failed"] * 4 and plain[0].reason == "postmark 400: Bad Request"
    too_big = parse_response(413, {}, b"", messages)
    assert [o.status for o in too_big] == ["failed"] * 4 and "413" in too_big[0].reason
    with pytest.raises(TransportError, match="404"):
        parse_response(404, {}, b"Not Found", messages)


# The DSN


def test_default_host_is_postmarks_api():
    made = transport()
    assert made.base_url == "https://api.postmarkapp.com"
    assert made.stream == "broadcast"
    assert str(made) == "postmark+api://default"


@respx.mock
def test_a_local_host_and_port_is_plain_http(messages):
    route = respx.post("http://127.0.0.1:8025/email/batch").mock(
        return_value=httpx.Response(200, content=body("batch-success.json"))
    )
    dsn = f"postmark+api://{TOKEN}@127.0.0.1:8025?stream=infolettre&unsubscribe=own"
    [outcomes] = send(messages, dsn=dsn)
    assert route.call_count == 1
    assert all(o.status == "sent" for o in outcomes)
    assert {item["MessageStream"] for item in json.loads(route.calls.last.request.content)} == {"infolettre"}
    assert str(transport(dsn)) == "postmark+api://127.0.0.1:8025?stream=infolettre&unsubscribe=own"


def test_stream_option():
    assert transport(f"postmark+api://{TOKEN}@default?stream=outbound").stream == "outbound"
    assert PostmarkTransport.from_dsn(Dsn.parse("postmark+api://POSTMARK_API_TEST@default")).stream == "broadcast"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postmark+api://default", "needs the server's API token"),
        ("postmark+api://@default", "needs the server's API token"),
        (f"postmark+api://{TOKEN}:extra@default", "needs the server's API token, alone"),
        (f"postmark+api://{TOKEN}@default?message_stream=broadcast", "message_stream=…: unknown option"),
        (f"postmark+api://{TOKEN}@default?stream=%20", "stream= takes a message stream's ID"),
    ],
)
def test_dsn_errors_say_what_to_write(dsn, message):
    with pytest.raises(NewsletterError, match=message) as error:
        transport_from_dsn(dsn)
    assert "postmark+api://SERVER_TOKEN@default?stream=broadcast" in str(error.value)
    assert TOKEN not in str(error.value)
