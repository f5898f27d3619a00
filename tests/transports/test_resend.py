"""The Resend transport against respx: the request as Resend documents it, and each kind of answer.

Bodies come from tests/fixtures/resend/ (copied from Resend's documentation; README.md there gives each source).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Recipient
from newsletter.transports import transport_from_dsn
from newsletter.transports.base import Dsn, Outcome, TransportError
from newsletter.transports.resend import (
    ResendTransport,
    build_email,
    build_payload,
    idempotency_key,
    mailbox,
    parse_response,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "resend"
KEY = "re_Secr3tKeyForTests_123"
DSN = f"resend+api://{KEY}@default"
URL = "https://api.resend.com/emails/batch"
DOCUMENTED_FIELDS = {  # SendEmailRequest in https://github.com/resend/resend-openapi (resend.yaml)
    "from",
    "to",
    "subject",
    "bcc",
    "cc",
    "reply_to",
    "html",
    "text",
    "template",
    "headers",
    "scheduled_at",
    "attachments",
    "tags",
    "topic_id",
}


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def send(messages, dsn: str = DSN) -> list[Outcome]:
    """Send one batch through a fresh transport (its client closed afterwards)."""

    async def run() -> list[Outcome]:
        transport = transport_from_dsn(dsn)
        try:
            return await transport.send_batch(messages)
        finally:
            await transport.aclose()

    return asyncio.run(run())


# The request


@respx.mock
def test_the_request_is_the_documented_batch_call(messages):
    """POST /emails/batch with Bearer auth, a User-Agent, permissive validation and an Idempotency-Key; the
    body is a JSON array of full email objects, one per recipient, names and subjects in UTF-8
    (https://resend.com/docs/api-reference/emails/send-batch-emails,
    https://resend.com/docs/dashboard/emails/batch-validation-modes)."""
    ids = [{"id": f"id-{i}"} for i in range(len(messages))]
    route = respx.post(URL).mock(return_value=httpx.Response(200, json={"data": ids}))

    outcomes = send(messages)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"].startswith("newsletter/")
    assert request.headers["x-batch-validation"] == "permissive"
    assert request.headers["Idempotency-Key"] == idempotency_key(messages)
    assert request.headers["Content-Type"] == "application/json"

    raw = request.content.decode("utf-8")
    for name in ("Françoise Légaré-Pelletier", "Zoé Côté-Bœuf"):
        assert name in raw  # sent as UTF-8, not as \u escapes or RFC 2047 words
    assert "=?utf-8?" not in raw.lower()

    sent = json.loads(raw)
    assert isinstance(sent, list) and len(sent) == len(messages)
    assert [email["to"] for email in sent] == [
        ["Françoise Légaré-Pelletier <francoise@example.org>"],
        ["Audrey Charest <audrey@example.org>"],
        ["Zoé Côté-Bœuf <zoe@example.net>"],
        ["jean@example.com"],
    ]
    for email, message in zip(sent, messages, strict=True):
        assert set(email) <= DOCUMENTED_FIELDS
        assert email["from"] == "Le bulletin des Alliances <alliancesolidarite@crdbsl.org>"
        assert email["subject"] == message.subject
        assert email["reply_to"] == "alliancesolidarite@crdbsl.org"
        assert email["headers"] == {
            "List-Id": message.headers["List-Id"],
            "List-Unsubscribe": message.headers["List-Unsubscribe"],
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        # The ledger key as a tag, which Resend echoes in the webhooks (https://resend.com/docs/dashboard/emails/tags).
        assert email["tags"] == [{"name": "newsletter_key", "value": message.key}]
        # Each recipient's own content, placeholders filled.
        assert email["html"] == message.html and email["text"] == message.text
        assert message.values["unsubscribe_url"] in email["text"]
        assert "%%" not in email["html"] and "%%" not in email["text"]
    assert len({email["html"] for email in sent}) == len(messages)
    assert outcomes == [Outcome.sent(f"id-{i}") for i in range(len(messages))]


def test_the_payload_has_the_documented_shape(messages):
    """Our email objects carry the fields of the documented example with the same types
    (https://resend.com/docs/api-reference/emails/send-batch-emails, request example)."""
    documented = json.loads(body("batch-request.json"))
    payload = build_payload(messages)
    for ours in payload:
        for field, example in documented[0].items():
            assert type(ours[field]) is type(example), field
        assert all(isinstance(address, str) for address in ours["to"])
    assert "Date" not in payload[0]["headers"] and "Message-ID" not in payload[0]["headers"]


def test_the_ledger_key_is_a_tag_resend_accepts(messages):
    """Tag names and values may hold only ASCII letters, numbers, underscores and dashes
    (https://resend.com/docs/dashboard/emails/tags; tags on /emails/batch since
    https://resend.com/changelog/tags-for-batch-and-scheduled-emails). A key that could not be a tag is left out:
    Resend would refuse the email for it, and without it a webhook event applies to the address on every list."""
    allowed = re.compile(r"[A-Za-z0-9_-]{1,256}")
    for email, message in zip(build_payload(messages), messages, strict=True):
        [tag] = email["tags"]
        assert tag == {"name": "newsletter_key", "value": message.key}
        assert allowed.fullmatch(tag["name"]) and allowed.fullmatch(tag["value"])
        assert re.fullmatch(r"12-[0-9]+", tag["value"])  # <campaign>-<subscriber>
    for key in ("12-3 4", "12/34", "clé-1", "x" * 257, ""):
        assert "tags" not in build_email(dataclasses.replace(messages[0], key=key)), key


def test_the_idempotency_key_follows_the_messages_keys(campaign, messages):
    """The same batch built again (a retry) gives the same key and the same body; another batch another key."""
    recipients = [Recipient(i + 1, m.recipient.address, m.recipient.name or None) for i, m in enumerate(messages)]
    rebuilt = [campaign.build(recipient) for recipient in recipients]
    assert [m.key for m in rebuilt] == [m.key for m in messages]
    assert idempotency_key(rebuilt) == idempotency_key(messages)
    assert build_payload(rebuilt) == build_payload(messages)  # Date is not sent: a replay is the same payload
    assert idempotency_key(messages[:3]) != idempotency_key(messages)
    assert idempotency_key(list(reversed(messages))) != idempotency_key(messages)
    assert len(idempotency_key(messages)) <= 256  # https://resend.com/docs/dashboard/emails/idempotency-keys


def test_display_names_are_quoted_when_rfc_5322_needs_it():
    assert mailbox(Mailbox("", "a@example.org")) == "a@example.org"
    assert mailbox(Mailbox("Zoé Côté-Bœuf", "z@example.net")) == "Zoé Côté-Bœuf <z@example.net>"
    assert mailbox(Mailbox("Dupont, Jean", "j@example.com")) == '"Dupont, Jean" <j@example.com>'
    assert mailbox(Mailbox('Le "Bulletin"', "b@example.org")) == '"Le \\"Bulletin\\"" <b@example.org>'
    assert mailbox(Mailbox("Évil\r\nBcc: x@y", "e@example.org")) == '"Évil Bcc: x@y" <e@example.org>'


# Answers


@respx.mock
def test_a_partial_failure_fails_only_the_rejected_email(messages):
    """Permissive mode: index 2 rejected, the two others created
    (https://resend.com/docs/dashboard/emails/batch-validation-modes, example response)."""
    respx.post(URL).mock(return_value=httpx.Response(200, content=body("batch-permissive-response.json")))
    outcomes = send(messages[:3])
    assert outcomes[:2] == [
        Outcome.sent("ae2014de-c168-4c61-8267-70d2662a1ce1"),
        Outcome.sent("faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb"),
    ]
    assert outcomes[2] == Outcome.failed("resend validation_error: The `to` field is missing.")
    assert outcomes[2].bounce is False


def test_ids_skip_the_rejected_index(messages):
    """A rejected email in the middle: the ids go to the other messages in order
    (https://resend.com/docs/dashboard/emails/batch-validation-modes, adapted to four messages: see README)."""
    outcomes = parse_response(200, {}, body("batch-permissive-middle.json"), messages)
    assert [o.status for o in outcomes] == ["sent", "failed", "sent", "sent"]
    assert [o.provider_id for o in outcomes] == [
        "ae2014de-c168-4c61-8267-70d2662a1ce1",
        None,
        "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb",
        "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794",
    ]
    assert outcomes[1].reason.startswith("resend validation_error: Invalid `to` field.")


def test_an_answer_missing_a_message_counts_none_as_sent(messages):
    """Two ids for three messages: no id can be matched, so all three stay retry
    (https://resend.com/docs/api-reference/emails/send-batch-emails, response example used for three)."""
    outcomes = parse_response(200, {}, body("batch-response-missing-one.json"), messages[:3])
    assert [o.status for o in outcomes] == ["retry"] * 3
    assert "2 created emails for 3 valid messages" in outcomes[0].reason


def test_answers_that_name_nothing_leave_every_message_retry(messages):
    for answer in (b"", b"<html>Bad gateway</html>", b'{"object": "email"}', b'{"data": null}'):
        assert [o.status for o in parse_response(200, {}, answer, messages)] == ["retry"] * 4
    # An error whose index is not one of the batch's names no message: the four ids go to the four messages.
    answer = json.dumps({"data": [{"id": "a"}] * 4, "errors": [{"index": 9, "message": "?"}, {"index": "1"}]})
    assert [o.status for o in parse_response(200, {}, answer.encode(), messages)] == ["sent"] * 4
    answer = json.dumps({"data": [{"id": "a"}, {}, {"id": ""}, {"id": "d"}]})
    assert [o.status for o in parse_response(200, {}, answer.encode(), messages)] == ["sent", "retry", "retry", "sent"]


@respx.mock
def test_a_batch_retried_after_a_500_carries_the_same_idempotency_key_and_body(messages):
    """A 500 leaves the batch retry; sent again, the same Idempotency-Key and body go out and succeed
    (https://resend.com/docs/dashboard/emails/idempotency-keys; 2xx body from the send-batch-emails page)."""
    route = respx.post(URL).mock(
        side_effect=[
            httpx.Response(500, content=body("error-500-application-error.json")),
            httpx.Response(200, content=body("batch-response.json")),
        ]
    )
    first = send(messages[:2])
    assert [o.status for o in first] == ["retry", "retry"]
    assert first[0].reason.startswith("Resend 500")
    second = send(messages[:2])
    assert [o.status for o in second] == ["sent", "sent"]
    one, two = (call.request for call in route.calls)
    assert one.headers["Idempotency-Key"] == two.headers["Idempotency-Key"]
    assert one.content == two.content


@respx.mock
@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        (
            "error-400-validation-error.json",
            "resend 400 validation_error: We found an error with one or more fields in the request.",
        ),
        (
            "error-422-missing-required-field.json",
            "resend 422 missing_required_field: The request body is missing one or more required fields.",
        ),
    ],
)
def test_a_refused_request_fails_every_message(messages, fixture, reason):
    """A whole-request validation error (https://resend.com/docs/api-reference/errors)."""
    status = int(fixture.split("-")[1])
    respx.post(URL).mock(return_value=httpx.Response(status, content=body(fixture)))
    outcomes = send(messages)
    assert [o.status for o in outcomes] == ["failed"] * 4
    assert all(o.reason.startswith(reason) and not o.bounce for o in outcomes)


def test_idempotency_conflicts(messages):
    """invalid_idempotent_request fails with advice; concurrent_idempotent_requests is retried later
    (https://resend.com/docs/api-reference/errors)."""
    outcomes = parse_response(409, {}, body("error-409-invalid-idempotent-request.json"), messages)
    assert [o.status for o in outcomes] == ["failed"] * 4
    assert outcomes[0].reason.startswith("resend 409 invalid_idempotent_request: Same idempotency key")
    assert "check the Resend dashboard" in outcomes[0].reason
    outcomes = parse_response(
        409, {"retry-after": "1"}, body("error-409-concurrent-idempotent-requests.json"), messages
    )
    assert [o.status for o in outcomes] == ["retry"] * 4
    assert outcomes[0].retry_after == 1.0


def test_a_wrong_endpoint_stops_the_run(messages):
    """not_found (404): the DSN's host is not Resend's API (https://resend.com/docs/api-reference/errors)."""
    with pytest.raises(TransportError, match="resend 404 not_found.*resend\\+api://KEY@default"):
        parse_response(404, {}, body("error-404-not-found.json"), messages)


def test_an_error_without_json_is_still_explained(messages):
    outcomes = parse_response(413, {}, b"<html>Request Entity Too Large</html>", messages)
    assert [o.status for o in outcomes] == ["failed"] * 4
    assert outcomes[0].reason == "resend 413: <html>Request Entity Too Large</html>"


# The DSN


@pytest.mark.parametrize(
    ("dsn", "error"),
    [
        ("resend+api://default", r"needs the API key before the @: resend\+api://re_API_KEY@default"),
        ("resend+api://@default", "needs the API key before the @"),
        (f"resend+api://user:{KEY}@default", "takes the API key alone before the @"),
        (f"resend+api://{KEY}@default?region=eu", r"takes no options \(got \?region\)"),
        (f"resend+api://{KEY}@default/v1", "takes no path"),
    ],
)
def test_dsn_errors_say_what_to_write(dsn, error):
    with pytest.raises(NewsletterError, match=error) as raised:
        ResendTransport.from_dsn(Dsn.parse(dsn))
    assert KEY not in str(raised.value)
