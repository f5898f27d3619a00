"""What every transport promises: one outcome per message, in order; the message intact; no secret shown."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import email.utils
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import respx
from sample_messages import RECIPIENTS, bilingual_campaign
from smtp_server import RunningSmtp, SmtpSink

from newsletter.message import Recipient
from newsletter.transports import PROVIDERS, transport_from_dsn
from newsletter.transports._http import ApiTransport
from newsletter.transports.base import Dsn, Outcome, TransportError, redact


def deliver(dsn: str, messages, **context):
    async def go():
        transport = transport_from_dsn(dsn, **context)
        try:
            return await transport.send_batch(messages), str(transport)
        finally:
            await transport.aclose()

    return asyncio.run(go())


def read_outbox(folder):
    return [path.read_bytes() for path in sorted(folder.glob("*.eml"))]


@pytest.mark.parametrize("kind", ["outbox", "smtp"])
def test_contract(kind, messages, tmp_path):
    if kind == "outbox":
        outcomes, shown = deliver("outbox://out", messages, root=tmp_path)
        delivered = read_outbox(tmp_path / "out")
        assert [p.name for p in sorted((tmp_path / "out").glob("*"))] == [f"{m.key}.eml" for m in messages]
    else:
        with RunningSmtp(SmtpSink(), user="u", password="p@ss/word") as server:
            outcomes, shown = deliver(server.dsn("u:p%40ss%2Fword"), messages)
        delivered = [r.data for r in server.sink.received]
        assert "p@ss" not in shown and "word" not in shown
    assert [o.status for o in outcomes] == ["sent"] * len(messages)
    assert len(delivered) == len(messages)
    for raw, outgoing in zip(delivered, messages, strict=True):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["To"].addresses[0].addr_spec == outgoing.recipient.address
        assert parsed["To"].addresses[0].display_name == outgoing.recipient.name
        assert parsed["List-Unsubscribe"] == outgoing.headers["List-Unsubscribe"]
        assert b"List-Unsubscribe: <https://" in raw  # written whole, not RFC 2047-encoded


def test_outbox_rerun_overwrites_instead_of_duplicating(messages, tmp_path):
    deliver("outbox://out", messages, root=tmp_path)
    deliver("outbox://out", messages, root=tmp_path)
    assert len(list((tmp_path / "out").iterdir())) == len(messages)  # no temporary files left either


def test_null_discards_but_builds(messages):
    outcomes, shown = deliver("null://", messages)
    assert shown == "null://" and [o.status for o in outcomes] == ["sent"] * 4


@pytest.mark.parametrize(
    ("dsn", "scheme", "shown"),
    [
        ("outbox://build/outbox", "outbox", None),
        ("smtp://user:secret@mail.example.org:587", "smtp", "smtp://mail.example.org:587"),
        ("postmark+api://TOKEN-SECRET@default?stream=broadcast", "postmark+api", None),
        ("sendgrid+api://SG.SECRET@default", "sendgrid+api", None),
        ("mailgun+api://KEY-SECRET:mg.example.org@default?region=eu", "mailgun+api", None),
        ("ses+api://AKIDEXAMPLE:SECRET%2Fkey@default?region=ca-central-1", "ses+api", None),
        ("resend+api://re_SECRET@default", "resend+api", None),
    ],
)
def test_every_scheme_makes_its_transport_and_never_shows_a_secret(dsn, scheme, shown, tmp_path):
    transport = transport_from_dsn(dsn, root=tmp_path)
    assert transport.scheme == scheme and scheme in PROVIDERS
    assert "SECRET" not in str(transport) and "secret" not in str(transport)
    assert "SECRET" not in repr(Dsn.parse(dsn)) and "secret" not in redact(dsn).split("@")[0].replace("user:", "")
    if shown:
        assert str(transport) == shown
    asyncio.run(transport.aclose())


# One batch, four addresses: plain, an international domain, a local part that is not ASCII, and a domain with no
# ASCII form (never stored by the tool, but a row can hold anything): each gets its own outcome, the batch goes.
INTERNATIONAL = [
    ("marie@example.org", "Marie Côté"),
    ("hana@münchen.example", "Hana Müller"),
    ("zoé@exämple.org", "Zoé"),
    ("neige@☃.example", "Neige"),
]
A_LABELS = ["marie@example.org", "hana@xn--mnchen-3ya.example", "zoé@xn--exmple-cua.org"]


def international(campaign):
    return [campaign.build(Recipient(i + 1, address, name)) for i, (address, name) in enumerate(INTERNATIONAL)]


def to_address(raw: bytes) -> str:
    # The email package's Address gives an RFC 6532 local part back as surrogates; the header's text is right.
    return email.utils.parseaddr(str(email.message_from_bytes(raw, policy=email.policy.default)["To"]))[1]


def api_fake(scheme: str, seen: list[str]):
    """A respx answer that accepts what the provider's request carries (the address of each, kept in `seen`), as
    the provider would; Postmark refuses a local part that is not ASCII in that message's own result, as it does
    (Stranger6667/postmarker#178: "[300] Error parsing 'To': Illegal email mailbox")."""

    def answer(request: httpx.Request) -> httpx.Response:
        if scheme == "mailgun+api":
            text = request.content.decode("utf-8")
            found = re.findall(r'name="to"\r\n\r\n(?:[^<\r]*<([^>\r]+)>|([^\r]+))\r\n', text)
            seen.extend(named or bare for named, bare in found)  # "Name <address>", or the bare address
            return httpx.Response(200, json={"id": "<batch@mg.crdbsl.org>", "message": "Queued. Thank you."})
        body = json.loads(request.content)
        if scheme == "postmark+api":
            tos = [email.utils.parseaddr(item["To"])[1] or item["To"].split("<")[-1].rstrip(">") for item in body]
            seen.extend(tos)
            return httpx.Response(
                200,
                json=[
                    {"ErrorCode": 300, "Message": f"Error parsing 'To': Illegal email mailbox '{to.split('@')[0]}'"}
                    if not to.isascii()
                    else {"ErrorCode": 0, "Message": "OK", "MessageID": f"id-{i}", "To": to}
                    for i, to in enumerate(tos)
                ],
            )
        if scheme == "sendgrid+api":
            seen.extend(p["to"][0]["email"] for p in body["personalizations"])
            return httpx.Response(202, headers={"X-Message-Id": "sg-batch"})
        if scheme == "resend+api":
            seen.extend(email.utils.parseaddr(item["to"][0])[1] or item["to"][0] for item in body)
            return httpx.Response(200, json={"data": [{"id": f"re-{i}"} for i in range(len(body))]})
        seen.extend(e["Destination"]["ToAddresses"][0].split("<")[-1].rstrip(">") for e in body["BulkEmailEntries"])
        results = [{"Status": "SUCCESS", "MessageId": f"ses-{i}"} for i in range(len(body["BulkEmailEntries"]))]
        return httpx.Response(200, json={"BulkEmailEntryResults": results})

    return answer


API_DSNS = {
    "postmark+api": "postmark+api://TOKEN@default?stream=outbound",
    "sendgrid+api": "sendgrid+api://SG.KEY@default",
    "mailgun+api": "mailgun+api://KEY:mg.crdbsl.org@default?region=eu",
    "resend+api": "resend+api://re_KEY@default",
    "ses+api": "ses+api://AKIDEXAMPLE:SECRET@default?region=ca-central-1",
}
TAKES_A_NON_ASCII_LOCAL_PART = {"outbox", "null", "smtp+SMTPUTF8", "sendgrid+api", "resend+api"}


@pytest.mark.parametrize("kind", ["outbox", "null", "smtp", "smtp+SMTPUTF8", *API_DSNS])
def test_an_address_a_transport_cannot_take_fails_alone_and_idn_domains_go_in_a_labels(kind, campaign, tmp_path):
    messages = international(campaign)
    seen: list[str] = []
    if kind == "outbox":
        outcomes, _ = deliver("outbox://out", messages, root=tmp_path)
        seen = [to_address(raw) for raw in read_outbox(tmp_path / "out")]
    elif kind == "null":
        outcomes, _ = deliver("null://", messages)
        seen = A_LABELS  # discarded: only the outcomes to check
    elif kind.startswith("smtp"):
        with RunningSmtp(SmtpSink(), smtputf8=kind.endswith("SMTPUTF8")) as server:
            outcomes, _ = deliver(server.dsn(), messages)
        seen = [r.recipients[0] for r in server.sink.received]
        for received in server.sink.received:  # the envelope and the To header agree
            assert to_address(received.data) == received.recipients[0]
    else:
        with respx.mock:
            respx.post(url__regex=r"https://[^/]+/").mock(side_effect=api_fake(kind, seen))
            outcomes, _ = deliver(API_DSNS[kind], messages)
    takes_it = kind in TAKES_A_NON_ASCII_LOCAL_PART
    assert [o.status for o in outcomes[:3]] == ["sent", "sent", "sent" if takes_it else "failed"], outcomes
    assert sorted(seen) == sorted(A_LABELS if takes_it or kind == "postmark+api" else A_LABELS[:2])
    if not takes_it:
        assert "ASCII" in outcomes[2].reason or "Illegal email mailbox" in outcomes[2].reason
        assert not outcomes[2].bounce  # another transport may deliver it: the subscriber is not marked bounced
    assert outcomes[3].status == "failed" and "☃.example" in outcomes[3].reason


# Every API provider, through the same contract: what ApiTransport and each provider's parse_response promise for
# the answers they all share. The bodies are the providers' own examples (tests/fixtures/<provider>/, whose
# README.md gives each source); what only one provider does stays in its own test file.

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOCAL = "127.0.0.1:8025"


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, made anew for each request (httpx reads a Response's body once)."""

    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> httpx.Response:
        return httpx.Response(self.status, content=self.content, headers=self.headers)


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Api:
    """An API provider as the contract sees it: its DSNs, its send endpoint, and its documented answers."""

    scheme: str
    name: str  # the provider's name in reasons and errors
    secret: str  # what str(), repr() and every message must never show
    dsn: str  # DSN_FOR_LOCAL's form with the real host: DSN(host) below
    path: str  # the send endpoint, after the host
    base_url: str  # the real API
    shown: str  # str(transport) for the DSN on the real API
    max_batch: int
    delivered: Reply  # the documented success for the first `batch` messages
    ids: tuple[str, ...]  # the provider ids those messages keep
    throttled: Reply  # 429, with a Retry-After of `retry_after` seconds
    retry_after: float
    throttled_says: str
    server_error: Reply  # 500
    server_error_says: str
    refused: tuple[tuple[Reply, str], ...]  # credentials refused, and what the TransportError says besides
    batch: int = 4

    def at(self, host: str) -> str:
        return self.dsn.replace("@default", f"@{host}")

    @property
    def url(self) -> str:
        return self.base_url + self.path


POSTMARK_SUCCESS = fixture("postmark", "batch-success.json")
SENDGRID_ACCEPTED = json.loads(fixture("sendgrid", "accepted-202-headers.json"))
SES_THROTTLED = {"Retry-After": "7", "x-amzn-ErrorType": "TooManyRequestsException"}
RESEND_THROTTLED = {"retry-after": "2", "ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "2"}
MAILGUN_ID = "<20111114174239.25659.5817@samples.mailgun.org>"

APIS = [
    Api(
        "postmark+api",
        "postmark",
        secret="f3c1a9e2-5b7d-4e0a-9c61-Secr3tT0ken",
        # These messages carry newsletter's own links: Postmark's broadcast stream would need its own.
        dsn="postmark+api://f3c1a9e2-5b7d-4e0a-9c61-Secr3tT0ken@default?unsubscribe=own",
        path="/email/batch",
        base_url="https://api.postmarkapp.com",
        shown="postmark+api://default?unsubscribe=own",
        max_batch=500,
        delivered=Reply(200, POSTMARK_SUCCESS),
        ids=tuple(result["MessageID"] for result in json.loads(POSTMARK_SUCCESS)),
        throttled=Reply(429, as_json({"ErrorCode": 429, "Message": "Rate limit exceeded"}), {"Retry-After": "30"}),
        retry_after=30.0,
        throttled_says="Rate limit exceeded",
        server_error=Reply(500, as_json({"ErrorCode": 500, "Message": "Internal server error"})),
        server_error_says="Internal server error",
        # 'wrong or missing headers … HTTP Response 401 (Unauthorized)' (https://postmarkapp.com/developer/api/overview)
        refused=((Reply(401, as_json({"ErrorCode": 10, "Message": "Bad or missing API token"})), "API token"),),
    ),
    Api(
        "sendgrid+api",
        "SendGrid",
        secret="SG.Secr3tKeyForTests.abc_DEF-123",
        dsn="sendgrid+api://SG.Secr3tKeyForTests.abc_DEF-123@default",
        path="/v3/mail/send",
        base_url="https://api.sendgrid.com",
        shown="sendgrid+api://default",
        max_batch=1000,
        # 202 with X-Message-Id (https://www.twilio.com/docs/sendgrid/glossary/x-message-id): every message sent,
        # each with the request's id, which the Event Webhook's sg_message_id starts with.
        delivered=Reply(202, headers=SENDGRID_ACCEPTED),
        ids=("Ua9z9lSTSaqYBWJe_Xfc-Q",) * 4,
        # The body of https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
        throttled=Reply(429, fixture("sendgrid", "error-429-too-many-requests.json"), {"Retry-After": "30"}),
        retry_after=30.0,
        throttled_says="too many requests",
        server_error=Reply(500, fixture("sendgrid", "error-500-internal-server-error.json")),  # PostMailSend500
        server_error_says="internal server error",
        refused=((Reply(401, fixture("sendgrid", "error-401-authorization-required.json")), "authorization required"),),
    ),
    Api(
        "mailgun+api",
        "Mailgun",
        secret="key-3ax6xnjp29jd6fds4gc373sgvjxteol0",
        dsn="mailgun+api://key-3ax6xnjp29jd6fds4gc373sgvjxteol0:mg.crdbsl.org@default?region=eu",
        path="/v3/mg.crdbsl.org/messages",
        base_url="https://api.eu.mailgun.net",
        shown="mailgun+api://default?region=eu",
        max_batch=1000,
        # The sample response of https://documentation.mailgun.com/en/latest/api-sending.html: one id a batch.
        delivered=Reply(200, fixture("mailgun", "send-200-queued.json")),
        ids=(MAILGUN_ID,) * 4,
        # 429: "Please retry these requests as defined in the response"; 500: "Retries are recommended"
        # (https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses)
        throttled=Reply(429, as_json({"message": "Too many requests"}), {"Retry-After": "30"}),
        retry_after=30.0,
        throttled_says="Too many requests",
        server_error=Reply(500, b"Internal Server Error"),
        server_error_says="Internal Server Error",
        refused=((Reply(401, b"Forbidden"), "(401: Forbidden)"),),
    ),
    Api(
        "ses+api",
        "SES",
        secret="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        dsn="ses+api://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY@default?region=ca-central-1",
        path="/v2/email/outbound-bulk-emails",
        base_url="https://email.ca-central-1.amazonaws.com",
        shown="ses+api://default?region=ca-central-1",
        max_batch=50,
        # Response Syntax of https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendBulkEmail.html: one
        # BulkEmailEntryResult per entry, in order.
        delivered=Reply(200, fixture("ses", "bulk-success.json")),
        ids=tuple(r["MessageId"] for r in json.loads(fixture("ses", "bulk-success.json"))["BulkEmailEntryResults"]),
        # TooManyRequestsException, its body quoted from a real SES v2 answer.
        throttled=Reply(429, fixture("ses", "error-429-too-many-requests.json"), SES_THROTTLED),
        retry_after=7.0,
        throttled_says="Maximum sending rate exceeded.",
        server_error=Reply(500, as_json({"message": "Internal"}), {"x-amzn-ErrorType": "InternalFailure"}),
        server_error_says="Internal",
        # UnrecognizedClientException, 403 (https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html)
        refused=(
            (
                Reply(
                    403,
                    fixture("ses", "error-403-unrecognized-client.json"),
                    {"x-amzn-ErrorType": "UnrecognizedClientException:"},
                ),
                "security token included in the request is invalid",
            ),
            (Reply(401, as_json({"message": "Unauthorized"})), "Unauthorized"),
        ),
    ),
    Api(
        "resend+api",
        "Resend",
        secret="re_Secr3tKeyForTests_123",
        dsn="resend+api://re_Secr3tKeyForTests_123@default",
        path="/emails/batch",
        base_url="https://api.resend.com",
        shown="resend+api://default",
        max_batch=100,
        # Both emails created (https://resend.com/docs/api-reference/emails/send-batch-emails, response example).
        delivered=Reply(200, fixture("resend", "batch-response.json")),
        ids=("ae2014de-c168-4c61-8267-70d2662a1ce1", "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb"),
        batch=2,
        # rate_limit_exceeded with retry-after and ratelimit-* headers (https://resend.com/docs/api-reference/errors,
        # https://resend.com/docs/api-reference/rate-limit).
        throttled=Reply(429, fixture("resend", "error-429-rate-limit-exceeded.json"), RESEND_THROTTLED),
        retry_after=2.0,
        throttled_says="rate_limit_exceeded",
        server_error=Reply(500, fixture("resend", "error-500-application-error.json")),
        server_error_says="application_error",
        # missing_api_key (401) and invalid_api_key (403) (https://resend.com/docs/api-reference/errors).
        refused=(
            (Reply(401, fixture("resend", "error-401-missing-api-key.json")), "missing_api_key"),
            (Reply(403, fixture("resend", "error-403-invalid-api-key.json")), "invalid_api_key"),
        ),
    ),
]


def api_send(api: Api, messages, *replies: Reply | Exception, dsn: str | None = None):
    """Send the batch once per reply through one transport whose requests get those replies, in order; return
    each call's outcomes and the route."""

    async def run(route: respx.Route) -> list[list[Outcome]]:
        transport = transport_from_dsn(dsn or api.dsn)
        try:
            return [await transport.send_batch(messages) for _ in replies]
        finally:
            await transport.aclose()

    url = api.url if dsn is None else f"http://{LOCAL}{api.path}"
    with respx.mock:
        route = respx.post(url__regex="^" + re.escape(url) + r"(\?.*)?$")
        route.side_effect = [reply.response() if isinstance(reply, Reply) else reply for reply in replies]
        outcomes = asyncio.run(run(route))
    return outcomes, route


@pytest.mark.parametrize("api", APIS, ids=[api.scheme for api in APIS])
def test_api_delivered_keeps_the_providers_ids(api, messages):
    [outcomes], route = api_send(api, messages[: api.batch], api.delivered)
    assert route.call_count == 1
    assert [o.status for o in outcomes] == ["sent"] * api.batch
    assert [o.provider_id for o in outcomes] == list(api.ids)
    assert outcomes == [Outcome.sent(provider_id) for provider_id in api.ids]


@pytest.mark.parametrize("api", APIS, ids=[api.scheme for api in APIS])
def test_api_throttled_is_retried_after_retry_after(api, messages):
    [outcomes], _ = api_send(api, messages, api.throttled)
    assert [(o.status, o.retry_after) for o in outcomes] == [("retry", api.retry_after)] * 4
    assert outcomes[0].reason.startswith(f"{api.name} 429:")
    assert api.throttled_says in outcomes[0].reason


@pytest.mark.parametrize("api", APIS, ids=[api.scheme for api in APIS])
def test_api_5xx_is_retried_then_the_same_batch_is_sent(api, messages):
    (first, second), route = api_send(api, messages[: api.batch], api.server_error, api.delivered)
    assert route.call_count == 2
    assert [o.status for o in first] == ["retry"] * api.batch
    assert first[0].reason.startswith(f"{api.name} 500:") and api.server_error_says in first[0].reason
    assert first[0].retry_after is None  # no Retry-After: the runner's own backoff
    assert second == [Outcome.sent(provider_id) for provider_id in api.ids]


@pytest.mark.parametrize(
    ("api", "refused", "says"),
    [(api, reply, says) for api in APIS for reply, says in api.refused],
    ids=[f"{api.scheme}-{reply.status}" for api in APIS for reply, _ in api.refused],
)
def test_api_refused_credentials_stop_the_run_without_showing_the_secret(api, refused, says, messages):
    with pytest.raises(TransportError) as raised:
        api_send(api, messages, refused)
    message = str(raised.value)
    assert f"{api.name} refused the credentials ({refused.status}" in message and says in message
    assert api.secret not in message and quote(api.secret, safe="") not in message


@pytest.mark.parametrize("api", APIS, ids=[api.scheme for api in APIS])
def test_api_dropped_connection_leaves_the_batch_to_retry(api, messages):
    [outcomes], _ = api_send(api, messages, httpx.ConnectError("connection refused"))
    assert [o.status for o in outcomes] == ["retry"] * 4
    assert outcomes[0].reason == f"{api.name}: ConnectError connection refused"
    assert api.secret not in outcomes[0].reason


@pytest.mark.parametrize("api", APIS, ids=[api.scheme for api in APIS])
def test_api_default_host_is_the_real_api_and_no_secret_is_shown(api):
    transport = transport_from_dsn(api.dsn)
    assert isinstance(transport, ApiTransport) and transport.scheme == api.scheme
    assert transport.base_url == api.base_url
    assert transport.max_batch == api.max_batch
    assert str(transport) == api.shown
    for shown in (str(transport), repr(transport.dsn)):
        assert api.secret not in shown and quote(api.secret, safe="") not in shown
    asyncio.run(transport.aclose())


@pytest.mark.parametrize("api", APIS, ids=[api.scheme for api in APIS])
def test_api_a_local_host_and_port_is_plain_http(api, messages):
    dsn = api.at(LOCAL)
    [outcomes], route = api_send(api, messages[: api.batch], api.delivered, dsn=dsn)
    assert route.call_count == 1
    assert [o.status for o in outcomes] == ["sent"] * api.batch
    transport = transport_from_dsn(dsn)
    assert isinstance(transport, ApiTransport) and transport.base_url == f"http://{LOCAL}"
    asyncio.run(transport.aclose())


# SMTP, through the same contract against tests/smtp_server.py's real aiosmtpd server: a refused address is
# permanent (5xx; a 5.1.x "no such user" also a hard bounce), a busy server temporary (4xx), a dropped connection
# leaves what was not accepted to retry. (What only SMTP does, pooling and timeouts, stays in test_smtp.py.)


def smtp_send(dsn: str, messages):
    return deliver(dsn, messages)[0]


def test_smtp_refused_addresses_fail_permanently_and_a_busy_server_is_retried(campaign):
    refuse = {
        "gone@example.org": "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        "later@example.org": "451 4.7.1 Greylisted",
        "big@example.org": "552 5.3.4 Message too big",
    }
    batch = [campaign.build(Recipient(i, address)) for i, address in enumerate([*refuse, "ok@example.org"], 1)]
    with RunningSmtp(SmtpSink(refuse=refuse)) as server:
        gone, later, big, ok = smtp_send(server.dsn(), batch)
    assert (gone.status, gone.bounce) == ("failed", True) and "550" in gone.reason and "User unknown" in gone.reason
    assert later.status == "retry" and "451" in later.reason
    assert (big.status, big.bounce) == ("failed", False)
    assert ok.status == "sent"
    assert server.sink.per_recipient() == {"ok@example.org": 1}


def test_smtp_a_dropped_connection_leaves_the_rest_of_the_batch_to_retry(campaign):
    messages = [campaign.build(Recipient(i, f"r{i}@example.org")) for i in range(30)]
    with RunningSmtp(SmtpSink(flaky=0.2, seed=3)) as server:
        outcomes = smtp_send(server.dsn(), messages)
    statuses = [o.status for o in outcomes]
    assert "retry" in statuses and "sent" in statuses and "failed" not in statuses
    delivered = server.sink.per_recipient()
    for message, outcome in zip(messages, outcomes, strict=True):
        # Sent means delivered once; retry means not delivered (the server hung up before accepting it).
        assert delivered[message.recipient.address] == (1 if outcome.status == "sent" else 0)


@pytest.mark.parametrize("kind", sorted(API_DSNS))
def test_a_batch_of_a_campaign_in_two_languages_sends_each_member_their_version(kind):
    """A batch mixes the versions of a campaign in two languages (the ledger claims members in id order): a
    provider whose request holds one content (SendGrid, Mailgun, SES) gets one request per version, the others
    one request; every message is sent, each outcome in the batch's order."""
    campaign = bilingual_campaign()
    messages = [
        campaign.build(dataclasses.replace(recipient, lang=lang))
        for recipient, lang in zip(RECIPIENTS, ["fr", "en", None, "en"], strict=True)
    ]
    subjects = {m.subject for m in messages}
    assert len(subjects) == 2
    seen: list[str] = []
    with respx.mock:
        route = respx.post(url__regex=r"https://[^/]+/").mock(side_effect=api_fake(kind, seen))
        outcomes, _ = deliver(API_DSNS[kind], messages)
        requests = [call.request for call in route.calls]
    assert [o.status for o in outcomes] == ["sent"] * 4
    assert sorted(seen) == sorted(r.email for r in RECIPIENTS)
    one_content = kind in ("sendgrid+api", "mailgun+api", "ses+api")
    assert len(requests) == (2 if one_content else 1)
    if one_content:  # the French members' request, then the English members'
        first, second = (request.content.decode("utf-8") for request in requests)
        assert "Retour sur le 2e Forum" in first and "Looking back" not in first
        assert "Looking back" in second and "Retour sur le 2e Forum" not in second
