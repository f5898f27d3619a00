"""Mailgun's suppression lists (bounces, complaints, unsubscribes) read page by page for `subscribers sync`.

respx stands in for Mailgun; the bodies are in tests/fixtures/mailgun/sync (its README says what was adapted).
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.transports import transport_from_dsn
from newsletter.transports._http import ApiTransport
from newsletter.transports.base import DeliveryEvent, TransportError
from newsletter.transports.mailgun import MailgunTransport, parse_suppressions

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mailgun" / "sync"
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DSN = f"mailgun+api://{KEY}:mg.crdbsl.org@default?region=eu"
EU = "https://api.eu.mailgun.net/v3/mg.crdbsl.org"
FIRST = {name: f"{EU}/{name}?limit=1000" for name in ("bounces", "complaints", "unsubscribes")}
EMPTY = {"items": [], "paging": {}}


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def page(name: str) -> httpx.Response:
    return httpx.Response(200, content=body(name), headers={"Content-Type": "application/json"})


class Mailgun:
    """Answers by full URL, in turn for a URL given a list; records every request made."""

    def __init__(self, answers: dict[str, httpx.Response | list[httpx.Response]]):
        self.answers = {url: list(a) if isinstance(a, list) else [a] for url, a in answers.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.answers.get(str(request.url))
        if not queue:
            raise AssertionError(f"unexpected request {request.url}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    @property
    def urls(self) -> list[str]:
        return [str(request.url) for request in self.requests]


def serve(answers: dict[str, httpx.Response | list[httpx.Response]]) -> Mailgun:
    """Mailgun at the EU host; the lists not given answer an empty page."""
    stub = Mailgun({url: httpx.Response(200, json=EMPTY) for url in FIRST.values()} | answers)
    respx.route(host="api.eu.mailgun.net").mock(side_effect=stub)
    return stub


def read_all(dsn: str = DSN) -> list[DeliveryEvent]:
    async def run():
        transport = transport_from_dsn(dsn)
        assert isinstance(transport, MailgunTransport)
        try:
            return [event async for event in transport.suppressions()]
        finally:
            await transport.aclose()

    return asyncio.run(run())


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The waits before each retry, recorded instead of slept."""
    waited: list[float] = []

    async def pause(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(ApiTransport, "pause", staticmethod(pause))
    return waited


@respx.mock
def test_the_documented_requests():
    """GET /v3/{domain}/bounces, /complaints, /unsubscribes on the region's host, HTTP Basic api:KEY, limit 1000
    ("optional, default: 100, max: 1000"): the List all bounces / complaints reference pages."""
    stub = serve({})
    assert read_all() == []
    assert stub.urls == [FIRST["bounces"], FIRST["complaints"], FIRST["unsubscribes"]]
    for request in stub.requests:
        assert request.method == "GET"
        assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
        assert request.headers["Accept"] == "application/json"
        assert request.url.params["limit"] == "1000"


@respx.mock
def test_the_us_region_is_the_default_host():
    route = respx.get(host="api.mailgun.net").mock(return_value=httpx.Response(200, json=EMPTY))
    assert read_all(f"mailgun+api://{KEY}:mg.crdbsl.org@default") == []
    assert [str(call.request.url) for call in route.calls] == [
        f"https://api.mailgun.net/v3/mg.crdbsl.org/{name}?limit=1000"
        for name in ("bounces", "complaints", "unsubscribes")
    ]


@respx.mock
def test_paging_next_is_followed_until_a_page_has_no_items():
    page_1, page_2 = json.loads(body("bounces-page-1.json")), json.loads(body("bounces-page-2.json"))
    stub = serve(
        {
            FIRST["bounces"]: page("bounces-page-1.json"),
            page_1["paging"]["next"]: page("bounces-page-2.json"),
            page_2["paging"]["next"]: page("bounces-page-3-empty.json"),
            FIRST["unsubscribes"]: page("unsubscribes-import-examples.json"),
            f"{EU}/unsubscribes?page=next&address=carol%40example.com&limit=1000": httpx.Response(200, json=EMPTY),
        }
    )
    events = read_all()
    assert [(e.kind, e.email) for e in events] == [
        ("bounced", "foo@bar.com"),
        ("bounced", "void@example.net"),
        ("unsubscribed", "alice@example.com"),
        ("unsubscribed", "bob@example.com"),
        ("unsubscribed", "carol@example.com"),
    ]
    assert stub.urls == [
        FIRST["bounces"],
        f"{EU}/bounces?page=next&address=foo%40bar.com&limit=1000",
        f"{EU}/bounces?page=next&address=void%40example.net&limit=1000",
        FIRST["complaints"],
        FIRST["unsubscribes"],
        f"{EU}/unsubscribes?page=next&address=carol%40example.com&limit=1000",
    ]
    assert events[1].detail == (
        "hard bounce on Mailgun's bounces list: 550 5.1.1 <void@example.net>: Recipient address rejected: User "
        "unknown in virtual mailbox table (listed Sun, 05 Feb 2012 21:36:26 GMT)"
    )
    assert events[1].at == datetime(2012, 2, 5, 21, 36, 26, tzinfo=UTC)


def test_a_bounce_is_bounced_with_mailgun_code_error_and_date():
    """Every entry of the bounces list is a hard bounce: "Bounce list stores events of delivery failures due to
    permanent recipient mailbox errors … Soft bounces … are not added to the list" (tag/Bounces)."""
    events, following = parse_suppressions(body("bounces-reference.json"), "bounces")
    assert events == [
        DeliveryEvent(
            kind="bounced",
            email="foo@bar.com",
            at=datetime(2024, 10, 18, 18, 28, 14, tzinfo=UTC),
            detail="hard bounce on Mailgun's bounces list: 550 No such mailbox (listed Fri, 18 Oct 2024 18:28:14 UTC)",
        )
    ]
    assert events[0].key is None and events[0].provider_id is None
    assert following == "<next page url>"  # as written: suppressions() checks it before following


def test_a_complaint_is_complained():
    events, _ = parse_suppressions(body("complaints-reference.json"), "complaints")
    assert events == [
        DeliveryEvent(
            kind="complained",
            email="alice@example.com",
            at=datetime(2025, 12, 11, 1, 49, 40, tzinfo=UTC),
            detail="spam complaint on Mailgun's complaints list (listed Thu, 11 Dec 2025 01:49:40 UTC)",
        )
    ]


def test_an_unsubscribe_is_unsubscribed_and_says_which_tags():
    """tags: "use * to unsubscribe an address from all domain's correspondence" (tag/Unsubscribe)."""
    events, _ = parse_suppressions(body("unsubscribes-reference.json"), "unsubscribes")
    assert [(e.kind, e.email, e.at) for e in events] == [
        ("unsubscribed", "alice@example.com", datetime(2025, 1, 7, 19, 25, 45, tzinfo=UTC))
    ]
    assert events[0].detail == (
        "unsubscribed from Mailgun tag 'some tag' only on Mailgun's unsubscribes list "
        "(listed Tue, 07 Jan 2025 19:25:45 UTC)"
    )
    events, following = parse_suppressions(body("unsubscribes-import-examples.json"), "unsubscribes")
    assert [e.kind for e in events] == ["unsubscribed"] * 3
    assert events[1].detail.startswith("unsubscribed from all mail of the domain (tags *) on Mailgun's")
    assert events[2].detail.startswith("unsubscribed (no tag given; Mailgun's default is *, all mail of the domain)")
    # The import default date is no date: the parser would read year 0001 as 2001.
    assert [e.at for e in events[1:]] == [None, None]
    assert following == f"{EU}/unsubscribes?page=next&address=carol%40example.com&limit=1000"


def test_the_earlier_one_tag_form_and_a_number_code_are_read():
    """The earlier API wrote "tag": "*" and "code": 550 (documentation.mailgun.com/en/latest/api-bounces.html)."""
    events, _ = parse_suppressions(json.dumps({"items": [{"address": "a@x.org", "tag": "*"}]}).encode(), "unsubscribes")
    assert events[0].detail == "unsubscribed from all mail of the domain (tags *) on Mailgun's unsubscribes list"
    events, _ = parse_suppressions(json.dumps({"items": [{"address": "b@x.org", "code": 550}]}).encode(), "bounces")
    assert events[0].detail == "hard bounce on Mailgun's bounces list: 550"
    assert events[0].at is None


def test_an_empty_page_or_no_next_is_the_end():
    assert parse_suppressions(body("bounces-page-3-empty.json"), "bounces") == ([], None)
    events, following = parse_suppressions(b'{"items": [{"address": "a@x.org"}]}', "complaints")
    assert len(events) == 1 and following is None


@respx.mock
def test_401_stops_the_sync_without_showing_the_key():
    stub = serve({FIRST["bounces"]: httpx.Response(401, text="Forbidden")})
    with pytest.raises(TransportError) as raised:
        read_all()
    message = str(raised.value)
    assert message.startswith("Mailgun refused the credentials reading the bounces list (401: Forbidden)")
    assert "Domain Sending Key" in message
    assert KEY not in message
    assert stub.urls == [FIRST["bounces"]]


@respx.mock
def test_403_stops_the_sync_too():
    serve({FIRST["complaints"]: httpx.Response(403, json={"message": "Forbidden"})})
    with pytest.raises(TransportError, match=r"complaints list \(403: Forbidden\)"):
        read_all()


@respx.mock
def test_404_names_the_domain_and_region():
    serve({FIRST["bounces"]: httpx.Response(404, json={"message": "Domain not found: mg.crdbsl.org"})})
    with pytest.raises(TransportError, match=r"404 .*Domain not found.*\?region=eu"):
        read_all()


@respx.mock
def test_429_then_success_retries_the_same_page_after_retry_after(pauses):
    stub = serve(
        {
            FIRST["bounces"]: [
                httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "Too many requests"}),
                httpx.Response(200, json={"items": [{"address": "foo@bar.com"}]}),
            ]
        }
    )
    events = read_all()
    assert [(e.kind, e.email) for e in events] == [("bounced", "foo@bar.com")]
    assert pauses == [7.0]
    assert stub.urls[:2] == [FIRST["bounces"], FIRST["bounces"]]


@respx.mock
def test_5xx_and_connection_errors_back_off_then_give_up(pauses):
    answers = [httpx.Response(503, text="Service Unavailable")] * 3 + [httpx.Response(500, text="oops")]
    stub = serve({FIRST["bounces"]: answers})
    with pytest.raises(TransportError) as raised:
        read_all()
    assert str(raised.value).startswith("Mailgun kept failing on the bounces list (4 attempts, the last 500: oops)")
    assert pauses == [1.0, 2.0, 4.0]
    assert stub.urls == [FIRST["bounces"]] * 4


@respx.mock
def test_a_connection_error_is_retried(pauses):
    calls = iter([httpx.ConnectError("Connection refused"), httpx.Response(200, json=EMPTY)])

    def answer(request):
        outcome = next(calls, httpx.Response(200, json=EMPTY))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    respx.route(host="api.eu.mailgun.net").mock(side_effect=answer)
    assert read_all() == []
    assert pauses == [1.0]


@respx.mock
def test_a_retry_after_too_long_stops_the_sync(pauses):
    serve({FIRST["bounces"]: httpx.Response(429, headers={"Retry-After": "3600"}, text="slow down")})
    with pytest.raises(TransportError, match=r"asks to wait 3600 s .*run `newsletter subscribers sync` again later"):
        read_all()
    assert pauses == []


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>Mailgun Magnificent API</html>",
        b"[]",
        b'{"message": "ok"}',
        b'{"items": {"address": "a@x.org"}}',
        b'{"items": ["a@x.org"]}',
        b'{"items": [{"created_at": "Fri, 18 Oct 2024 18:28:14 UTC"}]}',
        b'{"items": [{"address": "a@x.org"}], "paging": {"next": 42}}',
    ],
)
def test_a_malformed_body_is_a_value_error(answer):
    with pytest.raises(ValueError):
        parse_suppressions(answer, "bounces")


@respx.mock
def test_a_malformed_answer_stops_the_sync():
    serve({FIRST["complaints"]: httpx.Response(200, text="Mailgun Magnificent API")})
    with pytest.raises(TransportError, match=r"complaints list: the answer is not what Mailgun documents \(not JSON"):
        read_all()


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://evil.example/v3/mg.crdbsl.org/bounces?page=next&address=foo%40bar.com&limit=1000",
        "http://api.eu.mailgun.net/v3/mg.crdbsl.org/bounces?page=next&address=foo%40bar.com&limit=1000",
        "https://api.eu.mailgun.net:8443/v3/mg.crdbsl.org/bounces?page=next",
        "https://api:key@api.eu.mailgun.net/v3/mg.crdbsl.org/bounces?page=next",
        "https://api.eu.mailgun.net/v3/other.example/bounces?page=next",
        "//evil.example/v3/mg.crdbsl.org/bounces",
        "<next page url>",
    ],
)
@respx.mock
def test_a_next_page_elsewhere_is_refused_never_followed(elsewhere):
    """The API key goes with every request: a next URL on another host (or scheme, port, path) is not asked."""
    first = {"items": [{"address": "foo@bar.com"}], "paging": {"next": elsewhere}}
    stub = serve({FIRST["bounces"]: httpx.Response(200, json=first)})
    evil = respx.route(host="evil.example").mock(return_value=httpx.Response(200, json=EMPTY))
    with pytest.raises(TransportError, match=r"bounces list gave its next page at .*: refused"):
        read_all()
    assert stub.urls == [FIRST["bounces"]]
    assert not evil.called


@respx.mock
def test_a_next_page_already_read_ends_the_list():
    looping = {"items": [{"address": "foo@bar.com"}], "paging": {"next": FIRST["bounces"]}}
    stub = serve({FIRST["bounces"]: httpx.Response(200, json=looping)})
    assert [e.email for e in read_all()] == ["foo@bar.com"]
    assert stub.urls == [FIRST["bounces"], FIRST["complaints"], FIRST["unsubscribes"]]


@respx.mock
def test_a_local_fake_is_followed_on_its_own_host_and_port():
    """A DSN aimed at a local fake (http, a port): next pages there are followed, like Mailgun's own host."""
    base = "http://127.0.0.1:8025/v3/mg.crdbsl.org"
    following = f"{base}/bounces?page=next&address=foo%40bar.com&limit=1000"
    first = {"items": [{"address": "foo@bar.com"}], "paging": {"next": following}}
    stub = Mailgun({f"{base}/{name}?limit=1000": httpx.Response(200, json=EMPTY) for name in FIRST})
    stub.answers[f"{base}/bounces?limit=1000"] = [httpx.Response(200, json=first)]
    stub.answers[following] = [httpx.Response(200, json=EMPTY)]
    respx.route(host="127.0.0.1").mock(side_effect=stub)
    events = read_all(f"mailgun+api://{KEY}:mg.crdbsl.org@127.0.0.1:8025")
    assert [e.email for e in events] == ["foo@bar.com"]
    assert stub.urls[:2] == [f"{base}/bounces?limit=1000", following]
