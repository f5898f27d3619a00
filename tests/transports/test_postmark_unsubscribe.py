"""Postmark's hosted unsubscribe (`unsubscribe=provider`): the DSN, the payload, preflight() against respx.

Sources of the bodies below:
- the placeholder and where it goes: https://postmarkapp.com/support/article/1208-how-to-add-an-unsubscribe-link
  ("You can add an unsubscribe placeholder in the HTML and Plain Text copy of your message", shown as
  `<a href="{{{ pm:unsubscribe }}}">`);
- the message stream: GET https://api.postmarkapp.com/message-streams/{stream_ID}, the example answer of
  https://postmarkapp.com/support/article/1215-managing-message-streams-with-postmarks-api with the
  SubscriptionManagementConfiguration of https://postmarkapp.com/developer/api/message-streams-api added;
- the batch answer: tests/fixtures/postmark/batch-success.json (the batch-emails page's response).
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
from newsletter.transports import postmark, transport_from_dsn
from newsletter.transports._http import ApiTransport
from newsletter.transports.base import TransportError
from newsletter.transports.postmark import PLACEHOLDER, PostmarkTransport, build_payload

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "postmark"
TOKEN = "f3c1a9e2-5b7d-4e0a-9c61-Secr3tT0ken"
API = "https://api.postmarkapp.com"
BATCH = f"{API}/email/batch"


def transport(options: str = "") -> PostmarkTransport:
    made = transport_from_dsn(f"postmark+api://{TOKEN}@default" + (f"?{options}" if options else ""))
    assert isinstance(made, PostmarkTransport)
    return made


def stream(
    stream_id: str = "broadcast", kind: str = "Broadcasts", handling: str | None = "Postmark"
) -> dict[str, object]:
    """The message stream as GET /message-streams/{ID} answers it (support article 1215, API reference)."""
    answer: dict[str, object] = {
        "ID": stream_id,
        "ServerID": 123456,
        "Name": "Broadcast Stream" if kind == "Broadcasts" else f"{kind} Stream",
        "Description": "This is my stream to send broadcast messages",
        "MessageStreamType": kind,
        "CreatedAt": "2020-07-01T00:00:00-04:00",
        "UpdatedAt": "2020-07-01T00:00:00-04:00",
        "ArchivedAt": None,
        "ExpectedPurgeDate": None,
    }
    if handling is not None:
        answer["SubscriptionManagementConfiguration"] = {"UnsubscribeHandlingType": handling}
    return answer


def run(made: PostmarkTransport, call):
    async def go():
        try:
            return await call(made)
        finally:
            await made.aclose()

    return asyncio.run(go())


def preflight(made: PostmarkTransport) -> None:
    run(made, lambda t: t.preflight())


@pytest.fixture
def hosted_messages(campaign):
    """The example issue's four messages, built for Postmark's hosted unsubscribe on the broadcast stream."""
    hosted = dataclasses.replace(campaign, hosted=transport().hosted_unsubscribe)
    from sample_messages import RECIPIENTS

    return [hosted.build(recipient) for recipient in RECIPIENTS]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch) -> list[float]:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(ApiTransport, "pause", staticmethod(sleep))
    return waited


# The DSN


def test_the_default_stream_uses_postmarks_unsubscribe():
    made = transport()
    assert made.stream == "broadcast"
    assert made.hosted_unsubscribe is not None
    assert made.hosted_unsubscribe.provider == "postmark"
    assert made.hosted_unsubscribe.url == "{{{ pm:unsubscribe }}}"
    assert made.hosted_unsubscribe.fields == {"stream": "broadcast"}
    assert "Postmark's unsubscribe page" in made.hosted_unsubscribe.description
    assert "message stream broadcast" in made.hosted_unsubscribe.description
    assert (
        transport("unsubscribe=provider").hosted_unsubscribe == made.hosted_unsubscribe
    )  # same setting: may send on a campaign
    assert transport("stream=newsletters").hosted_unsubscribe != made.hosted_unsubscribe  # another stream


def test_outbound_and_unsubscribe_own_use_our_links():
    """ "outbound" is the transactional stream Postmark gives every server: our links there by default."""
    assert transport("stream=outbound").hosted_unsubscribe is None
    assert transport("unsubscribe=own").hosted_unsubscribe is None
    assert transport("stream=outbound&unsubscribe=provider").hosted_unsubscribe is not None  # preflight refuses it


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("unsubscribe=postmark", r"\?unsubscribe=postmark: use one of own, provider"),
        ("unsubscribe_url=x", r"unsubscribe_url=…: unknown option; the only ones are stream=.* and unsubscribe="),
    ],
)
def test_dsn_errors(options, message):
    with pytest.raises(NewsletterError, match=message) as error:
        transport(options)
    assert TOKEN not in str(error.value) and "\n" not in str(error.value)


# The payload


@respx.mock
def test_payload_carries_the_placeholder_in_both_parts_and_none_of_our_headers(hosted_messages):
    """Each message's HtmlBody has the placeholder as the footer link's href and TextBody has it as written; no
    List-Unsubscribe or List-Unsubscribe-Post of ours (Postmark adds its own on a stream it manages)."""
    route = respx.post(BATCH).respond(200, content=(FIXTURES / "batch-success.json").read_bytes())
    outcomes = run(transport(), lambda t: t.send_batch(hosted_messages))
    assert [o.status for o in outcomes] == ["sent"] * 4

    sent = json.loads(route.calls.last.request.content)
    assert len(sent) == 4
    for item, message in zip(sent, hosted_messages, strict=True):
        assert f'<a href="{PLACEHOLDER}"' in item["HtmlBody"]
        assert f"Se désabonner : {PLACEHOLDER}" in item["TextBody"]
        assert "/u/" not in item["HtmlBody"] and "/u/" not in item["TextBody"]  # no link of `newsletter serve`
        assert item["Headers"] == [{"Name": "List-Id", "Value": "Le bulletin des Alliances <alliances.crdbsl.org>"}]
        assert not any(h["Name"].lower().startswith("list-unsubscribe") for h in item["Headers"])
        assert item["MessageStream"] == "broadcast"
        assert item["HtmlBody"] == message.html and item["TextBody"] == message.text
    assert b"List-Unsubscribe" not in route.calls.last.request.content


def test_build_payload_never_sends_our_headers_when_hosted(messages):
    """Defence in depth: even a message built with our headers loses them in a hosted payload."""
    assert any(h["Name"] == "List-Unsubscribe" for h in build_payload(messages)[0]["Headers"])
    assert not any(h["Name"].startswith("List-Unsubscribe") for h in build_payload(messages, hosted=True)[0]["Headers"])


@respx.mock
def test_a_message_without_the_placeholder_is_refused_and_nothing_is_sent(messages):
    """Messages built for our own links (the `messages` fixture) through unsubscribe=provider: Postmark would append
    its link beside ours, so send_batch refuses the batch before any request."""
    route = respx.post(BATCH).respond(200, content=(FIXTURES / "batch-success.json").read_bytes())
    with pytest.raises(TransportError, match=r"lacks \{\{\{ pm:unsubscribe \}\}\}.*nothing was sent"):
        run(transport(), lambda t: t.send_batch(messages))
    assert route.call_count == 0


@respx.mock
def test_a_template_without_the_text_link_is_refused(hosted_messages):
    message = hosted_messages[0]
    broken = dataclasses.replace(message, values={**message.values, "unsubscribe_url": ""})
    route = respx.post(BATCH).respond(200, content=b"[]")
    with pytest.raises(TransportError, match=r"its HTML and text part lacks"):
        run(transport(), lambda t: t.send_batch([broken]))
    assert route.call_count == 0


@respx.mock
def test_our_own_mode_still_sends_our_headers(messages):
    route = respx.post(BATCH).respond(200, content=(FIXTURES / "batch-success.json").read_bytes())
    run(transport("unsubscribe=own"), lambda t: t.send_batch(messages))
    names = [h["Name"] for h in json.loads(route.calls.last.request.content)[0]["Headers"]]
    assert names == ["List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"]


# preflight()

STREAM = f"{API}/message-streams/broadcast"


@respx.mock
def test_preflight_reads_the_stream_with_the_server_token():
    route = respx.get(STREAM).respond(200, json=stream())
    preflight(transport())
    request = route.calls.last.request
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"


@respx.mock
@pytest.mark.parametrize(
    ("options", "answer"),
    [
        ("", stream()),  # a Broadcasts stream Postmark manages: its link, ours off
        ("unsubscribe=provider", stream(handling="postmark")),  # the value in another case
        ("unsubscribe=own", stream(handling="Custom")),  # "Manage unsubscribes on your own": ours
        ("unsubscribe=own", stream(handling="None")),
        ("stream=outbound", stream("outbound", "Transactional", "None")),  # transactional: ours
        ("stream=outbound", stream("outbound", "Transactional", None)),  # no configuration: the default, None
        ("", stream(handling=None)),  # no configuration on Broadcasts: the default, Postmark
    ],
)
def test_preflight_accepts(options, answer):
    respx.get(f"{API}/message-streams/{answer['ID']}").respond(200, json=answer)
    preflight(transport(options))


@respx.mock
@pytest.mark.parametrize(
    ("options", "answer", "message"),
    [
        (
            "unsubscribe=own",
            stream(),
            r"unsubscribe=own: Postmark manages unsubscribes on Broadcasts stream 'broadcast' .*two links.*use "
            r"unsubscribe=provider, or ask Postmark support to enable \"Manage unsubscribes on your own\"",
        ),
        ("unsubscribe=own", stream(handling=None), r"Postmark manages unsubscribes"),  # the documented default
        (
            "",
            stream(handling="Custom"),
            r"unsubscribe=provider: stream 'broadcast' manages unsubscribes on your own \(UnsubscribeHandlingType "
            r"Custom\), so Postmark would not replace \{\{\{ pm:unsubscribe \}\}\}; use unsubscribe=own",
        ),
        ("", stream(handling="None"), r"UnsubscribeHandlingType None\)"),
        (
            "stream=outbound&unsubscribe=provider",
            stream("outbound", "Transactional", "None"),
            r"'outbound' is a Transactional stream, and Postmark adds its unsubscribe link and List-Unsubscribe "
            r"headers only on Broadcasts streams",
        ),
        ("stream=inbound&unsubscribe=own", stream("inbound", "Inbound", "None"), r"'inbound' is an Inbound stream"),
    ],
)
def test_preflight_refuses_with_one_line(options, answer, message):
    respx.get(f"{API}/message-streams/{answer['ID']}").respond(200, json=answer)
    with pytest.raises(NewsletterError, match=message) as error:
        preflight(transport(options))
    assert not isinstance(error.value, TransportError)  # the account's setup, not Postmark failing
    assert "\n" not in str(error.value) and TOKEN not in str(error.value)


@respx.mock
def test_preflight_401_stops_without_showing_the_token():
    respx.get(STREAM).respond(401, json={"ErrorCode": 10, "Message": "Bad or missing API token"})
    with pytest.raises(TransportError, match=r"postmark refused the credentials \(401.*message stream 'broadcast'"):
        preflight(transport())


@respx.mock
def test_preflight_for_a_stream_that_does_not_exist():
    """Postmark answers a request it refuses with 422 and one {"ErrorCode", "Message"} (API overview; this
    ErrorCode and wording are invented for the test)."""
    respx.get(f"{API}/message-streams/nope").respond(
        422, json={"ErrorCode": 1226, "Message": "The message stream for the provided 'ID' was not found."}
    )
    with pytest.raises(
        TransportError, match=r"postmark 422 for the message stream 'nope' \(ErrorCode 1226: .*\?stream="
    ):
        preflight(transport("stream=nope"))


@respx.mock
def test_preflight_asks_again_after_5xx_and_a_lost_connection(no_waiting):
    route = respx.get(STREAM).mock(
        side_effect=[
            httpx.Response(503, text="Service Unavailable"),
            httpx.ConnectError("Connection refused"),
            httpx.Response(200, json=stream()),
        ]
    )
    preflight(transport())
    assert route.call_count == 3 and no_waiting == [2.0, 5.0]


@respx.mock
def test_preflight_gives_up_after_its_attempts():
    route = respx.get(STREAM).respond(500, json={"ErrorCode": 500, "Message": "Internal server error"})
    with pytest.raises(TransportError, match=r"could not be read after 4 attempts .*nothing was read, try again"):
        preflight(transport())
    assert route.call_count == postmark.READ_RETRY.attempts


@respx.mock
def test_preflight_an_answer_that_is_no_stream():
    respx.get(STREAM).respond(200, text="<html>maintenance</html>")
    with pytest.raises(TransportError, match=r"did not answer a message stream"):
        preflight(transport())
