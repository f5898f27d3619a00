"""The SendGrid transport against respx: the request as SendGrid documents it, and each kind of answer.

Bodies come from tests/fixtures/sendgrid/ (copied from SendGrid's documentation; README.md there gives each source).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Recipient
from newsletter.render import RenderedIssue
from newsletter.transports import transport_from_dsn
from newsletter.transports.base import Dsn, Outcome
from newsletter.transports.sendgrid import (
    SUBSTITUTIONS_LIMIT,
    SendgridTransport,
    build_payload,
    content_for,
    parse_response,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid"
KEY = "SG.Secr3tKeyForTests.abc_DEF-123"
DSN = f"sendgrid+api://{KEY}@default"
URL = "https://api.sendgrid.com/v3/mail/send"
ACCEPTED = json.loads((FIXTURES / "accepted-202-headers.json").read_text())


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def send(messages, dsn: str = DSN, times: int = 1) -> list[list[Outcome]]:
    """Send the batch `times` times through one fresh transport (its client closed afterwards)."""

    async def run() -> list[list[Outcome]]:
        transport = transport_from_dsn(dsn)
        try:
            return [await transport.send_batch(messages) for _ in range(times)]
        finally:
            await transport.aclose()

    return asyncio.run(run())


def sent_json(route: respx.Route) -> dict:
    return json.loads(route.calls.last.request.content)


def replay(content: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with a personalization's substitutions: plain string replacement in the content."""
    for key, value in substitutions.items():
        content = content.replace(key, value)
    return content


@pytest.fixture
def personal(campaign):
    """A campaign whose HTML and text use %%name%% with and without a fallback, and values that need escaping."""
    html = (
        '<p>Bonjour %%name|chère&nbsp;lectrice%%,</p><p title="%%name%%">%%name%% &lt;%%email%%&gt;</p>'
        '<a href="%%unsubscribe_url%%">Se désabonner</a> <a href="%%view_online_url%%">En ligne</a> 100%% '
    )
    text = "Bonjour %%name|chère lectrice%%,\n%%name%% <%%email%%>\nSe désabonner : %%unsubscribe_url%%\n"
    rendered = RenderedIssue("2026-04", "fr", "L’infolettre d’avril", "", html, text, {})
    return dataclasses.replace(campaign, rendered=rendered)


@pytest.fixture
def personal_messages(personal):
    return [
        personal.build(Recipient(1, "zoe@example.net", 'Zoé "Zo" <Côté> & Bœuf')),
        personal.build(Recipient(2, "jean@example.com", None)),
        personal.build(Recipient(3, "francoise@example.org", "Françoise Légaré-Pelletier")),
    ]


# The request


@respx.mock
def test_the_request_is_the_documented_mail_send_call(messages):
    """POST /v3/mail/send with Bearer auth and a UTF-8 JSON body: one content, a personalization per recipient.

    The shape is that of https://sendgrid.com/docs/Classroom/Build/Add_Content/substitution_and_section_tags.html
    (fixture mail-send-substitutions-request.json): from, reply_to, subject, content [text/plain, text/html],
    personalizations [{to, substitutions}].
    """
    route = respx.post(URL).respond(202, headers=ACCEPTED)
    send(messages)
    request = route.calls.last.request
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    # UTF-8 JSON, not \u escapes: French names arrive as they are.
    assert "Françoise Légaré-Pelletier".encode() in request.content
    assert "Zoé Côté-Bœuf".encode() in request.content
    payload = json.loads(request.content)

    documented = json.loads(fixture("mail-send-substitutions-request.json"))
    assert set(documented) <= set(payload)
    assert [part["type"] for part in payload["content"]] == [part["type"] for part in documented["content"]]
    for personalization in payload["personalizations"]:
        assert {"to", "substitutions"} <= set(personalization)
        assert all(isinstance(value, str) for value in personalization["substitutions"].values())
    assert payload["from"] == {"email": "alliancesolidarite@crdbsl.org", "name": "Le bulletin des Alliances"}
    assert payload["reply_to"] == {"email": "alliancesolidarite@crdbsl.org"}
    assert payload["subject"] == messages[0].subject

    assert len(payload["personalizations"]) == 4
    assert [p["to"] for p in payload["personalizations"]] == [
        [{"email": "francoise@example.org", "name": "Françoise Légaré-Pelletier"}],
        [{"email": "audrey@example.org", "name": "Audrey Charest"}],
        [{"email": "zoe@example.net", "name": "Zoé Côté-Bœuf"}],
        [{"email": "jean@example.com"}],  # no name: no "name" key
    ]
    for personalization, message in zip(payload["personalizations"], messages, strict=True):
        assert personalization["headers"] == {
            "List-Id": "Le bulletin des Alliances <alliances.crdbsl.org>",
            "List-Unsubscribe": message.headers["List-Unsubscribe"],
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        assert "subject" not in personalization  # one subject for the campaign, at the top level


@respx.mock
def test_tracking_is_off_and_no_unsubscribe_group(messages):
    """Click, open and subscription tracking off, and no `asm`: SendGrid adds no link, pixel or List-Unsubscribe.

    The settings' names are those of the MailSendNoTemplate example in
    https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send (fixture mail-send-settings-request.json).
    """
    route = respx.post(URL).respond(202, headers=ACCEPTED)
    send(messages)
    payload = sent_json(route)
    documented = json.loads(fixture("mail-send-settings-request.json"))
    tracking = payload["tracking_settings"]
    assert set(documented["tracking_settings"]) <= set(tracking)
    assert all(setting["enable"] is False for setting in tracking.values())
    assert tracking["click_tracking"]["enable_text"] is False
    assert payload["mail_settings"] == {"footer": {"enable": False}}
    assert set(payload["mail_settings"]) <= set(documented["mail_settings"])
    assert "asm" not in payload


def test_each_personalization_carries_its_ledger_key_and_nothing_personal(messages):
    """custom_args {"newsletter_key": key}: SendGrid echoes custom args in each Event Webhook event.

    "custom_args" per personalization, as in https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
    ("Custom Arguments"); the page warns they are kept as "Not PII", so only the key (campaign and subscriber
    numbers) goes there: no address, no name.
    """
    payload = build_payload(messages)
    assert [p["custom_args"] for p in payload["personalizations"]] == [{"newsletter_key": m.key} for m in messages]
    assert [m.key for m in messages] == ["12-1", "12-2", "12-3", "12-4"]
    for personalization, message in zip(payload["personalizations"], messages, strict=True):
        assert all(isinstance(value, str) for value in personalization["custom_args"].values())
        assert message.recipient.address not in json.dumps(personalization["custom_args"])


def test_one_content_for_the_batch_with_the_issue_placeholders_as_keys(messages):
    """The content is the issue rendered once; only the placeholders differ, rewritten as substitution keys."""
    payload = build_payload(messages)
    content = content_for(messages[0].body)
    rendered = messages[0].body.rendered
    assert payload["content"] == [
        {"type": "text/plain", "value": content.text},
        {"type": "text/html", "value": content.html},
    ]
    assert "%%unsubscribe_url%%" in rendered.html and "%%unsubscribe_url%%" not in content.html
    assert len(content.html) < len(rendered.html) + 200  # the issue's HTML, not one per recipient
    # The HTML and text parts never share a key: a substitution applies to every part.
    assert not set(content.html_keys.values()) & set(content.text_keys.values())
    for key in content.html_keys.values():
        assert key in content.html and key not in content.text
    for key in content.text_keys.values():
        assert key in content.text and key not in content.html


def test_each_recipient_gets_exactly_its_own_message(personal_messages):
    """Replaying each personalization's substitutions on the one content gives that message's .html and .text.

    That covers HTML-escaped values in the HTML part and raw values in the text part (a name with <, & and "),
    the fallback of %%name|chère lectrice%% for a recipient without a name, and %%name%% without fallback.
    """
    payload = build_payload(personal_messages)
    text, html = (part["value"] for part in payload["content"])
    for personalization, message in zip(payload["personalizations"], personal_messages, strict=True):
        assert replay(html, personalization["substitutions"]) == message.html
        assert replay(text, personalization["substitutions"]) == message.text
    zoe, jean, _ = (replay(html, p["substitutions"]) for p in payload["personalizations"])
    assert "Zoé &quot;Zo&quot; &lt;Côté&gt; &amp; Bœuf" in zoe
    assert "Bonjour chère&nbsp;lectrice," in jean
    assert 'Bonjour Zoé "Zo" <Côté> & Bœuf,' in replay(text, payload["personalizations"][0]["substitutions"])
    assert "Bonjour chère lectrice," in replay(text, payload["personalizations"][1]["substitutions"])


def test_keys_hold_no_space_and_occur_only_where_placed(personal_messages):
    """SendGrid's tags must hold no space ("Do not use spaces inside your substitution tags",
    https://www.twilio.com/docs/sendgrid/for-developers/sending-email/substitution-tags): the fallback stays out
    of the key; each (name, fallback) pair gets a key of its own, and each key appears once per use.
    """
    content = content_for(personal_messages[0].body)
    assert set(content.html_keys) == {
        ("name", "chère&nbsp;lectrice"),
        ("name", ""),
        ("email", ""),
        ("unsubscribe_url", ""),
        ("view_online_url", ""),
    }
    for key in [*content.html_keys.values(), *content.text_keys.values()]:
        assert " " not in key and "|" not in key and not set(key) & set("<>&")
    assert content.html.count(content.html_keys[("name", "")]) == 2
    assert content.text.count(content.text_keys[("name", "chère lectrice")]) == 1
    assert "100%% " in content.html  # a literal %% that is no placeholder stays as it is


def test_a_value_holding_a_tag_is_not_expanded(personal):
    """SendGrid expands tags found in values: a subscriber who writes a key-like name gets it back literally."""
    key_like = "%%name%% %%unsubscribe_url%%"
    message = personal.build(Recipient(9, "malin@example.org", key_like))
    personalization = build_payload([message])["personalizations"][0]
    for value in personalization["substitutions"].values():
        assert not any(key in value for key in personalization["substitutions"])
    assert replay(build_payload([message])["content"][0]["value"], personalization["substitutions"]) == message.text


def test_a_batch_must_come_from_one_campaign(messages, personal_messages):
    """Every message of a SendGrid batch gets the same content: messages of two campaigns cannot share a request."""
    with pytest.raises(ValueError, match="one campaign"):
        build_payload([messages[0], personal_messages[0]])
    other_sender = dataclasses.replace(messages[1], sender=Mailbox("Autre", "autre@crdbsl.org"))
    with pytest.raises(ValueError, match="one sender"):
        build_payload([messages[0], other_sender])


def test_names_lose_commas_and_semicolons(campaign):
    """ "The to.name … personalizations cannot include either the ; or , characters"
    (https://docs.sendgrid.com/api-reference/mail-send/limitations)."""
    message = campaign.build(Recipient(5, "legare@example.org", "Légaré, Françoise; CRDBSL"))
    assert build_payload([message])["personalizations"][0]["to"] == [
        {"email": "legare@example.org", "name": "Légaré Françoise CRDBSL"}
    ]


def test_a_non_ascii_list_id_is_encoded_as_message_py_writes_it(campaign):
    accented = dataclasses.replace(campaign, list_name="L’infolettre québécoise")
    headers = build_payload([accented.build(Recipient(6, "a@example.org", "A"))])["personalizations"][0]["headers"]
    assert headers["List-Id"].startswith("=?utf-8?")
    assert headers["List-Unsubscribe"].startswith("<https://")  # ASCII: never encoded


# The answers


def test_parse_response_reads_the_documented_header(messages):
    """parse_response alone, with the 202's X-Message-Id as https://www.twilio.com/docs/sendgrid/glossary/x-message-id
    shows it (fixture accepted-202-headers.json); a 202 without it still means every message was queued."""
    assert parse_response(202, ACCEPTED, b"", messages) == [Outcome.sent("Ua9z9lSTSaqYBWJe_Xfc-Q")] * 4
    assert parse_response(202, {}, b"", messages) == [Outcome.sent(None)] * 4


def test_a_rejected_address_fails_alone_and_bounces(messages):
    """A 400 naming personalizations.2.to.0.email (body from sendgrid/sendgrid-php#277, in the format of
    https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors): the third message fails as a bounce;
    nothing was sent, so the others are retried without it."""
    outcomes = parse_response(400, {}, fixture("error-400-invalid-address.json"), messages)
    assert [o.status for o in outcomes] == ["retry", "retry", "failed", "retry"]
    assert outcomes[2].bounce
    assert outcomes[2].reason.startswith("sendgrid 400: invalid recipient address: Does not contain a valid address.")
    assert "another recipient" in outcomes[0].reason
    assert not any(o.bounce for o in outcomes[:2] + outcomes[3:])


@respx.mock
def test_a_partial_failure_then_the_rest_goes_out(messages):
    """The retried messages go out in the next request, without the failed one."""
    route = respx.post(URL)
    route.side_effect = [
        httpx.Response(400, content=fixture("error-400-invalid-address.json")),
        httpx.Response(202, headers=ACCEPTED),
    ]
    [first] = send(messages)
    rest = [m for m, o in zip(messages, first, strict=True) if o.status == "retry"]
    [second] = send(rest)
    assert [p["to"][0]["email"] for p in sent_json(route)["personalizations"]] == [
        "francoise@example.org",
        "audrey@example.org",
        "jean@example.com",
    ]
    assert second == [Outcome.sent("Ua9z9lSTSaqYBWJe_Xfc-Q")] * 3


def test_an_invalid_type_is_not_a_bounce(messages):
    """ "Invalid type" on an address field is a malformed request, not an undeliverable address."""
    body = json.dumps(
        {
            "errors": [
                {"message": "Invalid type. Expected: string, given: array.", "field": "personalizations.1.to.0.email"}
            ]
        }
    ).encode()
    outcomes = parse_response(400, {}, body, messages)
    assert outcomes[1].status == "failed" and not outcomes[1].bounce


@respx.mock
def test_a_whole_request_error_fails_every_message(messages):
    """A 400 about the request itself (the subject error of
    https://support.sendgrid.com/hc/en-us/articles/34677918767131): every message fails with SendGrid's words."""
    respx.post(URL).respond(400, content=fixture("error-400-subject-required.json"))
    [outcomes] = send(messages)
    assert all(o.status == "failed" and not o.bounce for o in outcomes)
    assert outcomes[0].reason.startswith("sendgrid 400: The subject is required.")
    assert outcomes[0].reason.endswith("(subject)")


def test_a_413_fails_the_batch_and_says_why(messages):
    """413 with the PostMailSend413 example of the API reference (twilio/sendgrid-oai tsg_mail_v3.json)."""
    outcomes = parse_response(413, {}, fixture("error-413-content-too-large.json"), messages)
    assert all(o.status == "failed" for o in outcomes)
    assert outcomes[0].reason == "sendgrid 413: content too large (SendGrid takes requests under 30 MB)"


def test_an_unreadable_error_body_is_quoted(messages):
    """A 404 from a proxy, say, with an HTML body: every message fails and the reason quotes the body."""
    outcomes = parse_response(404, {}, b"<h1>Not Found</h1>", messages)
    assert outcomes == [Outcome.failed("sendgrid 404: <h1>Not Found</h1>")] * 4


@respx.mock
def test_a_message_left_out_of_the_request_is_not_counted_as_sent(campaign, messages):
    """SendGrid refuses an address twice in one request ("Each unique email address in the personalizations
    array should only be included once", https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors):
    the second stays out of the request, and the 202 does not name it, so it is retried."""
    twin = campaign.build(Recipient(7, "Audrey@Example.org", "Audrey (bis)"))
    route = respx.post(URL).respond(202, headers=ACCEPTED)
    [outcomes] = send([*messages, twin])
    assert [p["to"][0]["email"] for p in sent_json(route)["personalizations"]] == [
        m.recipient.address for m in messages
    ]
    assert outcomes[:4] == [Outcome.sent("Ua9z9lSTSaqYBWJe_Xfc-Q")] * 4
    assert outcomes[4].status == "retry" and "later batch" in outcomes[4].reason


def test_a_valid_but_unqueued_answer_sends_nothing(messages):
    """200: "Your message is valid, but it is not queued to be delivered" (sandbox mode,
    https://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html)."""
    assert all(o.status == "retry" for o in parse_response(200, {}, b"", messages))


@respx.mock
def test_values_over_the_substitution_limit_fail_that_message_alone(campaign, messages):
    """ "The total collective size of your substitutions may not exceed 10,000 bytes per personalization object"
    (the API reference, tsg_mail_v3.json): that message fails unsent; the others go out."""
    huge = dataclasses.replace(messages[1], values={**messages[1].values, "unsubscribe_url": "x" * SUBSTITUTIONS_LIMIT})
    route = respx.post(URL).respond(202, headers=ACCEPTED)
    [outcomes] = send([messages[0], huge, messages[2]])
    assert len(sent_json(route)["personalizations"]) == 2
    assert [o.status for o in outcomes] == ["sent", "failed", "sent"]
    assert "10000" in outcomes[1].reason and not outcomes[1].bounce

    route.reset()
    [alone] = send([huge])
    assert route.call_count == 0  # nothing to send: no request
    assert alone[0].status == "failed"


# The DSN


def test_region_eu_is_the_eu_host():
    assert transport_from_dsn(f"sendgrid+api://{KEY}@default?region=eu").base_url == "https://api.eu.sendgrid.com"
    assert transport_from_dsn(f"sendgrid+api://{KEY}@default?region=global").base_url == "https://api.sendgrid.com"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("sendgrid+api://default", "needs the API key alone before the @"),
        (f"sendgrid+api://apikey:{KEY}@default", "needs the API key alone before the @"),
        (f"sendgrid+api://{KEY}@default?region=us", "region=us: use one of global, eu"),
        (f"sendgrid+api://{KEY}@default?regoin=eu", "regoin=…: unknown option; the only one is region=eu"),
    ],
)
def test_a_wrong_dsn_says_what_to_write(dsn, message):
    with pytest.raises(NewsletterError, match="sendgrid") as info:
        SendgridTransport.from_dsn(Dsn.parse(dsn))
    assert message in str(info.value)
    assert KEY not in str(info.value)
