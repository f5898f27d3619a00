"""The Amazon SES v2 suppression list (`newsletter subscribers sync`) against respx: ListSuppressedDestinations as
the API reference documents it, SigV4 on a GET with a query string, pages followed to the end, and each answer.

https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_ListSuppressedDestinations.html. Bodies come from
tests/fixtures/ses/sync/ (README.md there gives each source and what was written for the test).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.transports import transport_from_dsn
from newsletter.transports.base import DeliveryEvent, TransportError
from newsletter.transports.ses import READ_RETRY, SesTransport, parse_suppressions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ses"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
QUOTED_SECRET = SECRET.replace("/", "%2F").replace("+", "%2B")
DSN = f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default?region=ca-central-1"
HOST = "email.ca-central-1.amazonaws.com"
URL = f"https://{HOST}/v2/email/suppression/addresses"
NOW = datetime(2026, 4, 15, 12, 0, 0, tzinfo=UTC)
TOKEN = "AYADeOiYtjuUo4/Wv1nQx+ExampleTokenWrittenForTheTest=="  # page-1.json's NextToken


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def make(dsn: str = DSN) -> tuple[SesTransport, list[float]]:
    """A transport at a fixed time whose waits are recorded instead of slept."""
    transport = transport_from_dsn(dsn)
    assert isinstance(transport, SesTransport)
    transport.clock = lambda: NOW
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    transport.pause = sleep  # waits recorded, not slept
    return transport, waits


def collect(transport: SesTransport) -> list[DeliveryEvent]:
    async def run() -> list[DeliveryEvent]:
        try:
            return [event async for event in transport.suppressions()]
        finally:
            await transport.aclose()

    return asyncio.run(run())


def expected_authorization(canonical_query: str, amz_date: str = "20260415T120000Z") -> str:
    """SigV4 for GET /v2/email/suppression/addresses, written out step by step from the IAM guide
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html), independently of
    newsletter's sigv4(): the canonical query string is given literally."""
    canonical_request = "\n".join(
        [
            "GET",
            "/v2/email/suppression/addresses",
            canonical_query,
            f"host:{HOST}\nx-amz-date:{amz_date}\n",
            "host;x-amz-date",
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/ca-central-1/ses/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    key = ("AWS4" + SECRET).encode()
    for part in (amz_date[:8], "ca-central-1", "ses", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders=host;x-amz-date, Signature={signature}"


# The request


@respx.mock
def test_the_request_is_the_documented_list_call_signed_with_its_query_string():
    """GET /v2/email/suppression/addresses?PageSize=…, then the same with NextToken; no body, no Reason filter
    (both BOUNCE and COMPLAINT wanted). The token holds / + and =, which SigV4's canonical query string encodes as
    %2F %2B %3D; the URL sent carries that same string, so what SES decodes is what was signed."""
    route = respx.get(URL).mock(
        side_effect=[
            httpx.Response(200, content=fixture("sync/page-1.json")),
            httpx.Response(200, content=fixture("sync/page-2.json")),
        ]
    )
    transport, _ = make()

    collect(transport)

    assert route.call_count == 2
    first, second = (call.request for call in route.calls)
    assert first.method == second.method == "GET"
    assert first.content == second.content == b""
    assert str(first.url) == f"{URL}?PageSize=1000"
    quoted_token = "AYADeOiYtjuUo4%2FWv1nQx%2BExampleTokenWrittenForTheTest%3D%3D"
    assert str(second.url) == f"{URL}?NextToken={quoted_token}&PageSize=1000"
    assert httpx.URL(str(second.url)).params["NextToken"] == TOKEN  # decoded, the token is intact
    for request in (first, second):
        assert request.headers["Host"] == HOST
        assert request.headers["X-Amz-Date"] == "20260415T120000Z"
        assert "Reason" not in request.url.params
        assert SECRET not in str(request.headers) and QUOTED_SECRET not in str(request.url)
    assert first.headers["Authorization"] == expected_authorization("PageSize=1000")
    assert second.headers["Authorization"] == expected_authorization(f"NextToken={quoted_token}&PageSize=1000")


def test_the_answers_have_only_documented_fields():
    """page-1.json and page-2.json use the fields of "Response Syntax" and nothing else."""
    syntax = json.loads(fixture("sync/list-suppressed-destinations-response-syntax.json"))
    summary_fields = set(syntax["SuppressedDestinationSummaries"][0])
    for name in ("sync/page-1.json", "sync/page-2.json"):
        page = json.loads(fixture(name))
        assert set(page) <= set(syntax)
        assert all(set(summary) == summary_fields for summary in page["SuppressedDestinationSummaries"])


# Pages and mapping


@respx.mock
def test_two_pages_are_followed_to_the_end():
    respx.get(URL, params={"PageSize": "1000"}).mock(
        side_effect=lambda request: httpx.Response(
            200, content=fixture("sync/page-2.json" if "NextToken" in request.url.params else "sync/page-1.json")
        )
    )
    transport, waits = make()

    events = collect(transport)

    assert [(event.kind, event.email) for event in events] == [
        ("bounced", "francoise@example.org"),
        ("complained", "audrey@example.org"),
        ("bounced", "zoe@example.net"),
        ("complained", "jean@bücher.example"),  # Punycode back to Unicode, as subscribers are stored
    ]
    assert waits == []


def test_each_reason_is_mapped_with_its_date():
    events, token = parse_suppressions(fixture("sync/page-1.json"))

    assert token == TOKEN
    assert events == [
        DeliveryEvent(
            "bounced",
            "francoise@example.org",
            None,
            datetime(2022, 2, 9, 13, 36, 5, 844000, tzinfo=UTC),
            "on the SES suppression list: BOUNCE (hard bounce), since 2022-02-09T13:36:05.844000+00:00",
        ),
        DeliveryEvent(
            "complained",
            "audrey@example.org",
            None,
            datetime(2024, 8, 22, 9, 31, 32, tzinfo=UTC),
            "on the SES suppression list: COMPLAINT (spam complaint), since 2024-08-22T09:31:32+00:00",
        ),
    ]
    assert all(event.key is None for event in events)


def test_the_last_page_has_no_token_and_an_empty_token_ends_too():
    assert parse_suppressions(fixture("sync/page-2.json"))[1] is None
    assert parse_suppressions(b'{"SuppressedDestinationSummaries": [], "NextToken": ""}') == ([], None)
    assert parse_suppressions(b"{}") == ([], None)  # an empty list may come without the key


def test_an_unknown_reason_is_skipped_and_an_unreadable_time_is_left_out():
    body = json.dumps(
        {
            "SuppressedDestinationSummaries": [
                {"EmailAddress": "a@example.org", "Reason": "UNSUBSCRIBE", "LastUpdateTime": 1724319092},
                {"EmailAddress": "b@example.org", "Reason": "BOUNCE", "LastUpdateTime": "soon"},
            ]
        }
    ).encode()

    events, _ = parse_suppressions(body)

    assert [(event.kind, event.email, event.at) for event in events] == [("bounced", "b@example.org", None)]
    assert events[0].detail == "on the SES suppression list: BOUNCE (hard bounce)"


# Errors


@respx.mock
def test_403_refused_credentials_stop_without_showing_the_secret():
    """UnrecognizedClientException, 403 (https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html;
    fixture ../error-403-unrecognized-client.json)."""
    respx.get(URL).mock(
        return_value=httpx.Response(
            403,
            headers={"x-amzn-ErrorType": "UnrecognizedClientException:"},
            content=fixture("error-403-unrecognized-client.json"),
        )
    )
    transport, waits = make()

    with pytest.raises(TransportError) as caught:
        collect(transport)

    message = str(caught.value)
    assert "SES does not know this access key ID" in message
    assert "security token included in the request is invalid" in message
    assert SECRET not in message and QUOTED_SECRET not in message and waits == []


@respx.mock
def test_401_stops_the_sync():
    route = respx.get(URL).mock(return_value=httpx.Response(401, json={"message": "Unauthorized"}))
    transport, _ = make()

    with pytest.raises(TransportError, match="SES refused the credentials"):
        collect(transport)
    assert route.call_count == 1


@respx.mock
def test_access_denied_names_the_permission_to_grant():
    respx.get(URL).mock(
        return_value=httpx.Response(
            403, headers={"x-amzn-ErrorType": "AccessDeniedException"}, json={"message": "not authorized"}
        )
    )
    transport, _ = make()

    with pytest.raises(TransportError, match="ses:ListSuppressedDestinations"):
        collect(transport)


@respx.mock
def test_429_is_retried_on_the_same_page_then_the_sync_goes_on():
    """TooManyRequestsException, 429 (botocore's model; fixture sync/error-429-too-many-requests.json). SES sends
    no Retry-After, so the wait is a short backoff; the page is asked for again, then the next one."""
    throttled = httpx.Response(
        429,
        headers={"x-amzn-ErrorType": "TooManyRequestsException"},
        content=fixture("sync/error-429-too-many-requests.json"),
    )
    route = respx.get(URL).mock(
        side_effect=[
            throttled,
            httpx.Response(200, content=fixture("sync/page-1.json")),
            throttled,
            throttled,
            httpx.Response(200, content=fixture("sync/page-2.json")),
        ]
    )
    transport, waits = make()

    events = collect(transport)

    assert len(events) == 4
    assert waits == [1.0, 1.0, 2.0]
    urls = [str(call.request.url) for call in route.calls]
    assert urls[0] == urls[1] and urls[2] == urls[3] == urls[4] and "NextToken" in urls[2]


@respx.mock
def test_retry_after_is_honoured_when_given():
    respx.get(URL).mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "7"}, json={"message": "Service Unavailable"}),
            httpx.Response(200, content=fixture("sync/page-2.json")),
        ]
    )
    transport, waits = make()

    assert len(collect(transport)) == 2
    assert waits == [7.0]


@respx.mock
def test_a_long_retry_after_stops_with_the_wait():
    respx.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}, json={"message": "later"}))
    transport, waits = make()

    with pytest.raises(TransportError, match="wait 3600 s"):
        collect(transport)
    assert waits == []


@respx.mock
def test_throttling_that_lasts_gives_up_after_a_few_tries():
    route = respx.get(URL).mock(
        return_value=httpx.Response(
            429,
            headers={"x-amzn-ErrorType": "TooManyRequestsException"},
            content=fixture("sync/error-429-too-many-requests.json"),
        )
    )
    transport, waits = make()

    with pytest.raises(TransportError) as caught:
        collect(transport)

    assert route.call_count == READ_RETRY.attempts == 4
    assert waits == [1.0, 2.0, 4.0]
    message = str(caught.value)
    assert "failed 4 times" in message and "TooManyRequestsException" in message and "run the sync again" in message


@respx.mock
def test_a_connection_error_is_retried():
    respx.get(URL).mock(
        side_effect=[httpx.ConnectError("connection refused"), httpx.Response(200, content=fixture("sync/page-2.json"))]
    )
    transport, waits = make()

    assert len(collect(transport)) == 2
    assert waits == [1.0]


@respx.mock
def test_an_expired_next_token_stops_the_sync():
    """InvalidNextTokenException, 400 (fixture sync/error-400-invalid-next-token.json)."""
    respx.get(URL).mock(
        side_effect=[
            httpx.Response(200, content=fixture("sync/page-1.json")),
            httpx.Response(
                400,
                headers={"x-amzn-ErrorType": "InvalidNextTokenException"},
                content=fixture("sync/error-400-invalid-next-token.json"),
            ),
        ]
    )
    transport, _ = make()

    with pytest.raises(TransportError, match="NextToken is invalid or expired"):
        collect(transport)


@respx.mock
def test_the_same_token_twice_stops_rather_than_loops():
    route = respx.get(URL).mock(return_value=httpx.Response(200, content=fixture("sync/page-1.json")))
    transport, _ = make()

    with pytest.raises(TransportError, match="same NextToken twice"):
        collect(transport)
    assert route.call_count == 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Service Unavailable</html>",
        b"[]",
        b'{"SuppressedDestinationSummaries": {"EmailAddress": "a@example.org"}}',
        b'{"SuppressedDestinationSummaries": ["a@example.org"]}',
        b'{"SuppressedDestinationSummaries": [{"Reason": "BOUNCE", "LastUpdateTime": 1724319092}]}',
        b'{"SuppressedDestinationSummaries": [{"EmailAddress": "nobody", "Reason": "BOUNCE"}]}',
        b'{"SuppressedDestinationSummaries": [], "NextToken": 42}',
    ],
)
def test_a_malformed_answer_is_refused(body):
    with pytest.raises(ValueError):
        parse_suppressions(body)


@respx.mock
def test_a_malformed_answer_stops_the_sync():
    respx.get(URL).mock(return_value=httpx.Response(200, content=b'{"SuppressedDestinationSummaries": "none"}'))
    transport, _ = make()

    with pytest.raises(TransportError, match="an answer this transport cannot read"):
        collect(transport)
