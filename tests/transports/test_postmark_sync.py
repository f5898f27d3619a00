"""Postmark's suppression list for `newsletter subscribers sync`: PostmarkTransport.suppressions() against respx.

Answers come from tests/fixtures/postmark/sync/ (copied from Postmark's Suppressions API page, DUMP_PAGE; README.md
there says what was adapted). The dump is one GET per message stream, with no paging: its only query parameters are
filters, and its answer is {"Suppressions": [...]} with no count, offset or cursor.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.transports import postmark, transport_from_dsn
from newsletter.transports._http import ApiTransport
from newsletter.transports.base import DeliveryEvent, TransportError
from newsletter.transports.postmark import PostmarkTransport, parse_suppressions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "postmark" / "sync"
DUMP_PAGE = "https://postmarkapp.com/developer/api/suppressions-api#suppression-dump"
TOKEN = "f3c1a9e2-5b7d-4e0a-9c61-Secr3tT0ken"
DSN = f"postmark+api://{TOKEN}@default"  # stream defaults to "broadcast"
URL = "https://api.postmarkapp.com/message-streams/broadcast/suppressions/dump"


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def transport(dsn: str = DSN) -> PostmarkTransport:
    made = transport_from_dsn(dsn)
    assert isinstance(made, PostmarkTransport)
    return made


def sync(dsn: str = DSN) -> list[DeliveryEvent]:
    """Every event suppressions() yields, through one transport."""

    async def run() -> list[DeliveryEvent]:
        source = transport(dsn)
        try:
            return [event async for event in source.suppressions()]
        finally:
            await source.aclose()

    return asyncio.run(run())


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The seconds suppressions() would sleep, recorded instead of slept."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(ApiTransport, "pause", staticmethod(sleep))
    return slept


def by_email(events: list[DeliveryEvent]) -> dict[str, DeliveryEvent]:
    return {event.email: event for event in events}


# The request


@respx.mock
def test_request_is_the_documented_dump_call():
    """GET /message-streams/{stream_id}/suppressions/dump, Accept and X-Postmark-Server-Token (DUMP_PAGE)."""
    route = respx.get(URL).mock(return_value=httpx.Response(200, content=body("suppressions-dump.json")))

    events = sync()

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "GET"
    assert str(request.url) == URL  # no filter: the whole list
    assert request.url.query == b""
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"
    assert "Authorization" not in request.headers
    assert len(events) == 3


@respx.mock
def test_the_stream_comes_from_the_dsn():
    route = respx.get("https://api.postmarkapp.com/message-streams/newsletters-fr/suppressions/dump").mock(
        return_value=httpx.Response(200, content=body("suppressions-dump.json"))
    )

    assert len(sync(f"{DSN}?stream=newsletters-fr")) == 3
    assert route.call_count == 1


@respx.mock
def test_a_local_host_is_asked_over_http():
    route = respx.get("http://127.0.0.1:8025/message-streams/broadcast/suppressions/dump").mock(
        return_value=httpx.Response(200, content=body("suppressions-dump.json"))
    )

    assert len(sync(f"postmark+api://{TOKEN}@127.0.0.1:8025")) == 3
    assert route.call_count == 1


# Paging: the dump has none


@respx.mock
def test_the_dump_is_one_answer_and_nothing_more_is_asked():
    """No count, offset or cursor in DUMP_PAGE's parameters or answer: one request reads the whole list."""
    route = respx.get(URL).mock(return_value=httpx.Response(200, content=body("suppressions-dump.json")))

    events = sync()

    assert route.call_count == 1
    assert [event.email for event in events] == [
        "address@wildbit.com",
        "bounce.address@wildbit.com",
        "spam.complaint.address@wildbit.com",
    ]
    assert parse_suppressions(body("suppressions-dump.json"))[1] is None


@respx.mock
def test_an_empty_list_gives_no_event():
    route = respx.get(URL).mock(return_value=httpx.Response(200, content=body("suppressions-dump-empty.json")))

    assert sync() == []
    assert route.call_count == 1


# The mapping


def test_each_documented_reason_maps_to_its_kind():
    """DUMP_PAGE's example answer: one ManualSuppression, one HardBounce, one SpamComplaint, all Origin Recipient."""
    events, cursor = parse_suppressions(body("suppressions-dump.json"))

    assert cursor is None
    found = by_email(events)
    assert found["bounce.address@wildbit.com"].kind == "bounced"
    assert found["spam.complaint.address@wildbit.com"].kind == "complained"
    assert found["address@wildbit.com"].kind == "unsubscribed"
    when = datetime(2019, 12, 17, 8, 58, 33, tzinfo=timezone(timedelta(hours=-5)))
    for event in events:
        assert event.at == when
        assert event.key is None
        assert event.provider_id is None
    assert (
        found["bounce.address@wildbit.com"].detail == "suppressed: HardBounce by Recipient at 2019-12-17T08:58:33-05:00"
    )
    assert found["address@wildbit.com"].detail.startswith("suppressed: ManualSuppression by Recipient")


def test_a_suppression_made_by_hand_is_an_unsubscribe_and_an_unknown_reason_is_skipped():
    events, _ = parse_suppressions(body("suppressions-dump-customer-and-unknown.json"))

    assert [(event.kind, event.email) for event in events] == [("unsubscribed", "manual.address@wildbit.com")]
    assert "by Customer" in events[0].detail
    assert events[0].at == datetime(2020, 3, 9, 11, 2, 17, tzinfo=timezone(timedelta(hours=-4)))


def test_an_unreadable_date_leaves_at_empty():
    events, _ = parse_suppressions(
        b'{"Suppressions": [{"EmailAddress": "a@example.org", "SuppressionReason": "HardBounce", "CreatedAt": "soon"}]}'
    )

    assert events == [DeliveryEvent(kind="bounced", email="a@example.org", detail="suppressed: HardBounce at soon")]


# Refusals and retries


@pytest.mark.parametrize("status", [401, 403])
@respx.mock
def test_refused_credentials_stop_the_sync(status):
    route = respx.get(URL).mock(return_value=httpx.Response(status, content=body("error-401-invalid-token.json")))

    with pytest.raises(TransportError) as caught:
        sync()

    assert route.call_count == 1  # never asked again
    message = str(caught.value)
    assert f"refused the credentials ({status}" in message
    assert "Request does not contain a valid Server token." in message
    assert TOKEN not in message


@respx.mock
def test_a_429_waits_for_retry_after_then_asks_again(waits):
    route = respx.get(URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}, content=body("error-429-rate-limit.json")),
            httpx.Response(200, content=body("suppressions-dump.json")),
        ]
    )

    events = sync()

    assert route.call_count == 2
    assert waits == [3.0]
    assert len(events) == 3


@respx.mock
def test_a_5xx_without_retry_after_waits_a_short_backoff(waits):
    route = respx.get(URL).mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(500),
            httpx.Response(200, content=body("suppressions-dump.json")),
        ]
    )

    assert len(sync()) == 3
    assert route.call_count == 3
    assert waits == [postmark.READ_RETRY.backoff[0], postmark.READ_RETRY.backoff[1]]


@respx.mock
def test_a_lost_connection_is_asked_again(waits):
    route = respx.get(URL).mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.Response(200, content=body("suppressions-dump.json")),
        ]
    )

    assert len(sync()) == 3
    assert route.call_count == 2
    assert waits == [postmark.READ_RETRY.backoff[0]]


@respx.mock
def test_a_long_retry_after_is_capped(waits):
    respx.get(URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "86400"}),
            httpx.Response(200, content=body("suppressions-dump.json")),
        ]
    )

    sync()

    assert waits == [postmark.READ_RETRY.max_wait]


@respx.mock
def test_a_429_that_lasts_stops_the_sync_and_says_so(waits):
    route = respx.get(URL).mock(return_value=httpx.Response(429, content=body("error-429-rate-limit.json")))

    with pytest.raises(TransportError) as caught:
        sync()

    assert route.call_count == postmark.READ_RETRY.attempts
    assert waits == list(postmark.READ_RETRY.backoff)  # no sleep after the last attempt
    message = str(caught.value)
    assert f"after {postmark.READ_RETRY.attempts} attempts" in message
    assert "429" in message and "Rate Limit Exceeded" in message
    assert TOKEN not in message


@respx.mock
def test_an_unknown_stream_stops_the_sync_with_a_hint():
    """404: "Entity doesn't exist" (https://postmarkapp.com/developer/api/overview#response-codes; no example body)."""
    route = respx.get("https://api.postmarkapp.com/message-streams/nope/suppressions/dump").mock(
        return_value=httpx.Response(404)
    )

    with pytest.raises(TransportError) as caught:
        sync(f"{DSN}?stream=nope")

    assert route.call_count == 1
    message = str(caught.value)
    assert "postmark 404" in message and "'nope'" in message and "?stream=" in message


@respx.mock
def test_a_422_stops_the_sync_with_postmarks_words():
    """422 carries {"ErrorCode", "Message"} (overview page); the code and message here are only an illustration."""
    respx.get(URL).mock(return_value=httpx.Response(422, json={"ErrorCode": 300, "Message": "Invalid request."}))

    with pytest.raises(TransportError, match=r"postmark 422 .*ErrorCode 300: Invalid request\."):
        sync()


# Malformed answers


MALFORMED = {
    "not JSON": b"<html>502 Bad Gateway</html>",
    "a list": b"[]",
    "no Suppressions": b"{}",
    "Suppressions not a list": b'{"Suppressions": {"EmailAddress": "a@example.org"}}',
    "an entry not an object": b'{"Suppressions": ["a@example.org"]}',
    "an entry without an address": b'{"Suppressions": [{"SuppressionReason": "HardBounce", "Origin": "Recipient"}]}',
    "an address that is not one": b'{"Suppressions": [{"EmailAddress": "nobody", "SuppressionReason": "HardBounce"}]}',
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_refuses_a_malformed_answer(answer):
    with pytest.raises(ValueError, match="postmark suppressions"):
        parse_suppressions(answer)


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
@respx.mock
def test_a_malformed_answer_stops_the_sync(answer):
    respx.get(URL).mock(return_value=httpx.Response(200, content=answer))

    with pytest.raises(TransportError, match="nothing was synced"):
        sync()
