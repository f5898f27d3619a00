"""SendGrid's suppression lists for `newsletter subscribers sync`: suppressions() against respx, parse_suppressions.

Bodies come from tests/fixtures/sendgrid/sync/ (the API reference's examples; README.md there gives each source).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.transports import sendgrid, transport_from_dsn
from newsletter.transports._http import ApiTransport
from newsletter.transports.base import DeliveryEvent, TransportError
from newsletter.transports.sendgrid import (
    READ_RETRY,
    SUPPRESSION_PAGE_SIZE,
    SendgridTransport,
    parse_suppressions,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid" / "sync"
KEY = "SG.Secr3tKeyForTests.abc_DEF-123"
DSN = f"sendgrid+api://{KEY}@default"
API = "https://api.sendgrid.com/v3/suppression"
BOUNCES = f"{API}/bounces"
INVALID = f"{API}/invalid_emails"
SPAM = f"{API}/spam_reports"
UNSUBSCRIBES = f"{API}/unsubscribes"
EMPTY = b"[]"
TOO_MANY = (FIXTURES.parent / "error-429-too-many-requests.json").read_bytes()  # the rate-limits page's 429 body


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sync(dsn: str = DSN) -> list[DeliveryEvent]:
    """Every event suppressions() yields, through one fresh transport (its client closed afterwards)."""

    async def run() -> list[DeliveryEvent]:
        transport = transport_from_dsn(dsn)
        try:
            return [event async for event in transport.suppressions()]
        finally:
            await transport.aclose()

    return asyncio.run(run())


def lists(bounces=EMPTY, invalid=EMPTY, spam=EMPTY, unsubscribes=EMPTY) -> dict[str, respx.Route]:
    """One page for each list read (respx refuses any other request: blocks or groups would fail the test)."""
    return {
        "bounces": respx.get(BOUNCES).respond(200, content=bounces),
        "invalid": respx.get(INVALID).respond(200, content=invalid),
        "spam": respx.get(SPAM).respond(200, content=spam),
        "unsubscribes": respx.get(UNSUBSCRIBES).respond(200, content=unsubscribes),
    }


def lists_without_bounces() -> None:
    """The other lists, empty, for the tests that give the bounce list answers of their own."""
    respx.get(INVALID).respond(200, content=EMPTY)
    respx.get(SPAM).respond(200, content=EMPTY)
    respx.get(UNSUBSCRIBES).respond(200, content=EMPTY)


@pytest.fixture(autouse=True)
def pauses(monkeypatch) -> list[float]:
    """The waits suppressions() asks for, recorded instead of slept."""
    waited: list[float] = []

    async def pause(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(ApiTransport, "pause", staticmethod(pause))
    return waited


# The request


@respx.mock
def test_the_requests_are_the_documented_calls():
    """GET each list with the key as a Bearer token, Accept: application/json (the bounces endpoint requires it),
    limit at the documented maximum (500) and offset 0; blocks and unsubscribe groups are never asked for."""
    routes = lists()
    assert sync() == []
    for route in routes.values():
        assert route.call_count == 1
        request = route.calls.last.request
        assert request.method == "GET"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["Accept"] == "application/json"
        assert dict(request.url.params) == {"limit": "500", "offset": "0"}
        assert request.content == b""
    assert SUPPRESSION_PAGE_SIZE == 500
    assert [str(route.calls.last.request.url).split("?")[0] for route in routes.values()] == [
        BOUNCES,
        INVALID,
        SPAM,
        UNSUBSCRIBES,
    ]


@respx.mock
def test_region_eu_reads_the_eu_host():
    api = "https://api.eu.sendgrid.com/v3/suppression"
    routes = [respx.get(f"{api}/{name}").respond(200, content=EMPTY) for name in sendgrid.SUPPRESSION_LISTS]
    assert sync(f"{DSN}?region=eu") == []
    assert all(route.call_count == 1 for route in routes)


# Pagination


@respx.mock
def test_two_pages_are_followed_to_the_end(monkeypatch):
    """With a page size of 2, the two-entry spam report example is a full page: the next is asked for at offset 2,
    and the one-entry example after it is shorter than the page, so the list ends there."""
    monkeypatch.setattr(SendgridTransport, "suppression_page_size", 2)
    first = respx.get(SPAM, params={"offset": "0"}).respond(200, content=fixture("spam-reports.json"))
    second = respx.get(SPAM, params={"offset": "2"}).respond(200, content=fixture("spam-report-one.json"))
    lists()  # after: respx takes the first route that matches
    events = sync()
    assert [(e.kind, e.email) for e in events] == [
        ("complained", "user1@example.com"),
        ("complained", "user2@example.com"),
        ("complained", "test1@example.com"),
    ]
    assert dict(first.calls.last.request.url.params) == {"limit": "2", "offset": "0"}
    assert dict(second.calls.last.request.url.params) == {"limit": "2", "offset": "2"}
    assert first.call_count == second.call_count == 1


@respx.mock
def test_a_list_of_exactly_full_pages_ends_on_an_empty_page(monkeypatch):
    monkeypatch.setattr(SendgridTransport, "suppression_page_size", 2)
    respx.get(UNSUBSCRIBES, params={"offset": "0"}).respond(200, content=fixture("unsubscribes.json"))
    last = respx.get(UNSUBSCRIBES, params={"offset": "2"}).respond(200, content=EMPTY)
    lists()
    assert [e.email for e in sync()] == ["user1@example.com", "user2@example.com"]
    assert last.call_count == 1


@respx.mock
def test_a_page_answered_again_stops_the_sync(monkeypatch):
    """A server that ignores offset would send the same full page forever: the sync stops instead."""
    monkeypatch.setattr(SendgridTransport, "suppression_page_size", 2)
    lists(spam=fixture("spam-reports.json"))
    with pytest.raises(TransportError, match="pagination did not move on"):
        sync()


def test_parse_suppressions_gives_the_next_offset_only_after_a_full_page():
    body = fixture("spam-reports.json")
    assert parse_suppressions(body, "spam_reports", offset=0, limit=2)[1] == 2
    assert parse_suppressions(body, "spam_reports", offset=4, limit=2)[1] == 6
    assert parse_suppressions(body, "spam_reports", offset=4, limit=3)[1] is None
    assert parse_suppressions(body, "spam_reports")[1] is None  # 2 of 500
    assert parse_suppressions(EMPTY, "spam_reports") == ([], None)


# Each kind


def test_the_bounce_list_is_bounced_with_status_reason_and_date():
    events, _ = parse_suppressions(fixture("bounces.json"), "bounces")
    assert [(e.kind, e.email, e.key, e.provider_id) for e in events] == [
        ("bounced", "example@example.com", None, None)
    ] * 2
    assert events[0].at == datetime(2009, 8, 15, 12, 0, tzinfo=UTC)  # created 1250337600
    assert events[0].detail.startswith(
        "hard bounce (5.1.1) on SendGrid's bounce list since 2009-08-15 12:00:00 UTC: 550 5.1.1 The email account "
        "that you tried to reach does not exist."
    )
    assert events[1].detail == (
        "hard bounce (5.1.1) on SendGrid's bounce list since 2009-08-15 12:00:00 UTC: 550 5.1.1 "
        "<testemail2@testing.com>: Recipient address rejected: User unknown in virtual alias table"
    )


def test_a_soft_bounce_on_the_bounce_list_is_bounced_and_said_soft():
    """SendGrid drops every later message to an address on its bounce list, soft bounces included (status 4.x.x;
    the blocks example stands for one, see the fixtures' README)."""
    events, _ = parse_suppressions(fixture("blocks.json"), "bounces")
    assert [e.kind for e in events] == ["bounced", "bounced"]
    assert events[1].detail == (
        "soft bounce (4.0.0) on SendGrid's bounce list since 2015-09-30 22:12:35 UTC: unable to resolve MX record "
        "for example.com: servfail"
    )


def test_an_invalid_address_is_bounced():
    events, _ = parse_suppressions(fixture("invalid-emails.json"), "invalid_emails")
    assert [(e.kind, e.email) for e in events] == [("bounced", "user1@example.com"), ("bounced", "user2@example.com")]
    assert events[0].at == datetime.fromtimestamp(1449953655, tz=UTC)
    assert events[0].detail == (
        "invalid address on SendGrid's invalid email list since 2015-12-12 20:54:15 UTC: "
        "Mail domain mentioned in email address is unknown"
    )


def test_a_spam_report_is_complained():
    events, _ = parse_suppressions(fixture("spam-reports.json"), "spam_reports")
    assert [(e.kind, e.email) for e in events] == [
        ("complained", "user1@example.com"),
        ("complained", "user2@example.com"),
    ]
    assert events[0].at == datetime.fromtimestamp(1443651141, tz=UTC)
    assert events[0].detail == "spam report on SendGrid's spam report list since 2015-09-30 22:12:21 UTC"
    assert "10.63.202.100" not in events[0].detail  # the sending IP says nothing about the recipient


def test_a_global_unsubscribe_is_unsubscribed():
    events, _ = parse_suppressions(fixture("unsubscribes.json"), "unsubscribes")
    assert [(e.kind, e.email) for e in events] == [
        ("unsubscribed", "user1@example.com"),
        ("unsubscribed", "user2@example.com"),
    ]
    assert events[1].at == datetime.fromtimestamp(1443651154, tz=UTC)
    assert events[1].detail == "global unsubscribe on SendGrid's unsubscribe list since 2015-09-30 22:12:34 UTC"


def test_an_entry_without_a_date_has_none():
    [event], _ = parse_suppressions(b'[{"email": " a@example.org "}]', "unsubscribes")
    assert event == DeliveryEvent(
        kind="unsubscribed", email="a@example.org", detail="global unsubscribe on SendGrid's unsubscribe list"
    )


@respx.mock
def test_every_list_is_read_and_an_address_comes_once_per_kind():
    """The bounces example names example@example.com twice; user1@ is both invalid and a spam reporter."""
    lists(
        bounces=fixture("bounces.json"),
        invalid=fixture("invalid-emails.json"),
        spam=fixture("spam-reports.json"),
        unsubscribes=fixture("unsubscribes.json"),
    )
    assert [(e.kind, e.email) for e in sync()] == [
        ("bounced", "example@example.com"),
        ("bounced", "user1@example.com"),
        ("bounced", "user2@example.com"),
        ("complained", "user1@example.com"),
        ("complained", "user2@example.com"),
        ("unsubscribed", "user1@example.com"),
        ("unsubscribed", "user2@example.com"),
    ]


# Errors


@respx.mock
def test_a_401_stops_the_sync_without_showing_the_key():
    respx.get(BOUNCES).respond(401, content=fixture("error-401-authorization-required.json"))
    with pytest.raises(TransportError) as info:
        sync()
    message = str(info.value)
    assert "SendGrid refused the credentials (401: authorization required)" in message
    assert "suppression.bounces.read" in message and "check the key" in message
    assert KEY not in message


@respx.mock
def test_a_403_says_the_key_may_lack_the_permission():
    """A key with Mail Send alone: the sync needs read access to the suppression lists."""
    lists()
    respx.get(SPAM).respond(403, json={"errors": [{"field": None, "message": "access forbidden"}]})
    with pytest.raises(TransportError, match=r"\(403: access forbidden\).*may lack the permission"):
        sync()


@respx.mock
def test_a_429_then_success_waits_retry_after(pauses):
    route = respx.get(BOUNCES)
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "30"}, content=TOO_MANY),
        httpx.Response(200, content=fixture("bounce-one.json")),
    ]
    lists_without_bounces()
    assert [e.email for e in sync()] == ["bounce1@test.com"]
    assert route.call_count == 2
    assert pauses == [30.0]
    assert route.calls[0].request.url == route.calls[1].request.url  # the same page again


@respx.mock
def test_a_429_without_retry_after_waits_for_the_rate_limit_reset(pauses, monkeypatch):
    """The rate-limits page documents X-RateLimit-Reset, a Unix time, on the 429."""
    monkeypatch.setattr(sendgrid.sync.time, "time", lambda: 1392815250.0)
    route = respx.get(BOUNCES)
    route.side_effect = [
        httpx.Response(
            429,
            headers={"X-RateLimit-Limit": "150", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1392815263"},
            content=TOO_MANY,
        ),
        httpx.Response(200, content=EMPTY),
    ]
    lists_without_bounces()
    assert sync() == []
    assert pauses == [13.0]


@respx.mock
def test_5xx_every_time_gives_up_after_a_few_tries(pauses):
    route = respx.get(BOUNCES).respond(500, json={"errors": [{"field": None, "message": "internal server error"}]})
    with pytest.raises(TransportError) as info:
        sync()
    assert route.call_count == READ_RETRY.attempts
    assert pauses == [2.0, 4.0, 8.0, 16.0]
    assert str(info.value) == (
        f"SendGrid still answered 500: internal server error after {READ_RETRY.attempts} tries of "
        "GET /v3/suppression/bounces?limit=500&offset=0; run the sync again later"
    )


@respx.mock
def test_a_dropped_connection_is_retried(pauses):
    route = respx.get(BOUNCES)
    route.side_effect = [httpx.ConnectError("connection refused"), httpx.Response(200, content=EMPTY)]
    lists_without_bounces()
    assert sync() == []
    assert pauses == [2.0]


@respx.mock
def test_a_wait_too_long_stops_the_sync_at_once(pauses):
    route = respx.get(BOUNCES).respond(
        429, headers={"Retry-After": str(int(READ_RETRY.max_wait) + 1)}, content=TOO_MANY
    )
    with pytest.raises(TransportError, match=r"asks to wait 121 s; run the sync again later"):
        sync()
    assert route.call_count == 1
    assert pauses == []


@respx.mock
def test_another_error_status_stops_the_sync_with_sendgrid_s_message():
    respx.get(BOUNCES).respond(406, json={"errors": [{"field": None, "message": "missing Accept header"}]})
    with pytest.raises(TransportError, match=r"SendGrid answered 406 to GET /v3/suppression/bounces\?limit=500"):
        sync()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Bad gateway</html>", "not JSON"),
        (b'{"result": []}', "expected a JSON array, got dict"),
        (b'["user1@example.com"]', "entry 0 is str, not an object"),
        (b'[{"created": 1443651141}]', "entry 0 without an email address"),
        (b'[{"created": 1443651141, "email": "nobody"}]', "entry 0 without an email address"),
    ],
)
def test_a_malformed_page_is_a_value_error(body, message):
    with pytest.raises(ValueError, match=message):
        parse_suppressions(body, "spam_reports")


@respx.mock
def test_a_malformed_answer_stops_the_sync():
    lists(invalid=b'{"errors": []}')
    with pytest.raises(TransportError, match=r"could not be read: sendgrid /v3/suppression/invalid_emails: expected"):
        sync()
