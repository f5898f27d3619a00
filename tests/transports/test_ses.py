"""The Amazon SES v2 transport against respx: SigV4 against AWS's test suite, the SendBulkEmail request as the API
reference documents it, the inline template rendered as SES renders it, and each kind of answer.

Bodies come from tests/fixtures/ses/ (README.md there gives each source and what was written for the test).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.header
import email.utils
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.errors import NewsletterError
from newsletter.message import Recipient
from newsletter.render import RenderedIssue
from newsletter.transports import transport_from_dsn
from newsletter.transports.base import Dsn, Outcome, TransportError
from newsletter.transports.ses import (
    FAILED_STATUSES,
    RETRY_STATUSES,
    SesTransport,
    build_payload,
    error_code,
    literal,
    parse_response,
    sigv4,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ses"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
QUOTED_SECRET = SECRET.replace("/", "%2F").replace("+", "%2B")
DSN = f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default?region=ca-central-1"
URL = "https://email.ca-central-1.amazonaws.com/v2/email/outbound-bulk-emails"
NOW = datetime(2026, 4, 15, 12, 0, 0, tzinfo=UTC)
VARIABLE = re.compile(r"\{\{(\w+)\}\}")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def make(dsn: str = DSN) -> SesTransport:
    transport = transport_from_dsn(dsn)
    assert isinstance(transport, SesTransport)
    transport.clock = lambda: NOW
    return transport


def send(messages, dsn: str = DSN, transport: SesTransport | None = None) -> list[Outcome]:
    """Send one batch through a transport (a fresh one, closed afterwards, unless given)."""

    async def run() -> list[Outcome]:
        used = transport or make(dsn)
        try:
            return await used.send_batch(messages)
        finally:
            if transport is None:
                await used.aclose()

    return asyncio.run(run())


def sent_payload(route) -> dict:
    return json.loads(route.calls.last.request.content.decode("utf-8"))


def ses_render(template: str, data: dict[str, str]) -> str:
    """What SES's "simple substitution" makes of an inline template: each {{variable}} replaced by its value.

    Also check that no other double brace, and no brace touching a variable, is left for SES to misread.
    """
    rest = VARIABLE.sub("\0", template)
    assert "{{" not in rest and "}}" not in rest
    assert "{\0" not in rest and "\0}" not in rest
    return VARIABLE.sub(lambda match: data[match.group(1)], template)


def decoded(header: str) -> str:
    return str(email.header.make_header(email.header.decode_header(header)))


# Signature Version 4


SUITE = json.loads(fixture("sigv4-test-suite.json"))


@pytest.mark.parametrize("case", SUITE["cases"], ids=[case["name"] for case in SUITE["cases"]])
def test_sigv4_matches_the_aws_test_suite(case):
    """The AWS Signature Version 4 test suite (formerly
    https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html, kept in aws/aws-sdk-js-v3
    packages/signature-v4/src/suite.fixture.ts): the same Authorization header, byte for byte."""
    authorization = sigv4(
        case["method"],
        case["path"],
        case["headers"],
        case["body"].encode(),
        access_key_id=SUITE["credentials"]["access_key_id"],
        secret_access_key=SUITE["credentials"]["secret_access_key"],
        region=SUITE["region"],
        service=SUITE["service"],
        query=case["query"],
    )
    assert authorization == case["authorization"]


# The request


@respx.mock
def test_the_request_is_the_documented_send_bulk_email_call(messages):
    """POST /v2/email/outbound-bulk-emails on email.ca-central-1.amazonaws.com, SigV4-signed for service "ses",
    a JSON body with only documented fields (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendBulkEmail.html,
    "Request Syntax"), one entry per message, the French names intact."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=fixture("bulk-success.json")))

    outcomes = send(messages)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Host"] == "email.ca-central-1.amazonaws.com"
    assert request.headers["X-Amz-Date"] == "20260415T120000Z"
    authorization = request.headers["Authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20260415/ca-central-1/ses/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature="
    )
    signed = {name: request.headers[name] for name in ("content-type", "host", "x-amz-date")}
    assert authorization == sigv4(
        "POST",
        "/v2/email/outbound-bulk-emails",
        signed,
        request.content,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        region="ca-central-1",
        service="ses",
    )
    assert SECRET not in request.content.decode("utf-8") and SECRET not in str(request.headers)

    payload = sent_payload(route)
    documented = json.loads(fixture("send-bulk-email-request-syntax.json"))

    def undocumented(value, model, where=""):
        if isinstance(value, dict):
            return [
                problem
                for key, item in value.items()
                for problem in (
                    undocumented(item, model[key], f"{where}.{key}") if key in model else [f"{where}.{key}"]
                )
            ]
        if isinstance(value, list):
            return [problem for item in value for problem in undocumented(item, model[0], f"{where}[]")]
        return []

    assert undocumented(payload, documented) == []
    assert payload["FromEmailAddress"] == "Le bulletin des Alliances <alliancesolidarite@crdbsl.org>"
    assert payload["ReplyToAddresses"] == ["alliancesolidarite@crdbsl.org"]
    entries = payload["BulkEmailEntries"]
    assert len(entries) == len(messages) == 4
    recipients = [email.utils.parseaddr(entry["Destination"]["ToAddresses"][0]) for entry in entries]
    assert [(decoded(name), address) for name, address in recipients] == [
        ("Françoise Légaré-Pelletier", "francoise@example.org"),
        ("Audrey Charest", "audrey@example.org"),
        ("Zoé Côté-Bœuf", "zoe@example.net"),
        ("", "jean@example.com"),
    ]
    assert [entry["ReplacementTags"] for entry in entries] == [
        [{"Name": "newsletter_key", "Value": message.key}] for message in messages
    ]
    assert [outcome.status for outcome in outcomes] == ["sent"] * 4


@respx.mock
def test_headers_list_unsubscribe_per_entry_and_list_headers_in_the_template(messages):
    """List-Unsubscribe goes in each entry's ReplacementHeaders, which "takes precedence over any header of the
    same name specified in Template" (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_BulkEmailEntry.html);
    List-Id and List-Unsubscribe-Post, the same for the whole campaign, in Template.Headers
    (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Template.html); all printable ASCII, never folded."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=fixture("bulk-success.json")))

    send(messages)

    payload = sent_payload(route)
    template = payload["DefaultContent"]["Template"]
    assert template["Headers"] == [
        {"Name": "List-Id", "Value": "Le bulletin des Alliances <alliances.crdbsl.org>"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    for entry, message in zip(payload["BulkEmailEntries"], messages, strict=True):
        assert entry["ReplacementHeaders"] == [
            {"Name": "List-Unsubscribe", "Value": message.headers["List-Unsubscribe"]}
        ]
        assert message.headers["List-Unsubscribe"].startswith("<https://bulletin.crdbsl.example/u/")


def test_non_ascii_list_id_is_encoded_and_differing_headers_go_per_entry(campaign):
    """MessageHeaderValue is printable ASCII of at most 870 characters
    (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_MessageHeader.html): a French list name is written
    in RFC 2047 encoded-words; a header that differs between messages is sent per entry."""
    accented = dataclasses.replace(campaign, list_name="Le bulletin des Élèves")
    first, second = (accented.build(Recipient(i, f"r{i}@example.org", "Émilie")) for i in (1, 2))
    second = dataclasses.replace(second, headers={**second.headers, "List-Id": "Autre liste <autre.crdbsl.org>"})

    payload = build_payload([first, second])

    template_headers = {h["Name"]: h["Value"] for h in payload["DefaultContent"]["Template"]["Headers"]}
    assert set(template_headers) == {"List-Unsubscribe-Post"}
    values = [{h["Name"]: h["Value"] for h in entry["ReplacementHeaders"]} for entry in payload["BulkEmailEntries"]]
    assert all(re.fullmatch(r"[ -~]*", value) for entry in values for value in entry.values())
    assert decoded(values[0]["List-Id"]) == "Le bulletin des Élèves <alliances.crdbsl.org>"
    assert values[1]["List-Id"] == "Autre liste <autre.crdbsl.org>"


@respx.mock
def test_a_batch_is_at_most_fifty_entries_in_one_call(campaign):
    """'You can send email to up to 50 destination objects in each call to the SendBulkEmail operation'
    (https://docs.aws.amazon.com/ses/latest/dg/send-personalized-email-api.html)."""
    assert SesTransport.max_batch == 50
    batch = [campaign.build(Recipient(i, f"abonne{i}@example.org", f"Abonné·e {i}")) for i in range(50)]
    results = {"BulkEmailEntryResults": [{"Status": "SUCCESS", "MessageId": f"id-{i}"} for i in range(50)]}
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=results))

    outcomes = send(batch)

    assert route.call_count == 1
    assert len(sent_payload(route)["BulkEmailEntries"]) == 50
    assert [outcome.provider_id for outcome in outcomes] == [f"id-{i}" for i in range(50)]


# The inline template


def tricky_campaign(campaign):
    """A campaign whose issue has fallbacks, HTML-special values and the template language's own braces."""
    html = (
        "<style>a{color:#336699}</style><p>Bonjour %%name|chère lectrice%%, {{ pas une variable }} "
        '{%%name%%} }}{{ {{{</p><a href="%%unsubscribe_url%%">Se désabonner</a> %%name%% }'
    )
    text = (
        "Bonjour %%name|chère lectrice%% {{x}} {%%name%%}}\nSe désabonner : %%unsubscribe_url%%\n%%view_online_url%%\n"
    )
    rendered = RenderedIssue(
        slug="2026-04-ete", lang="fr", subject="Bulletin d’été {{ spécial }}", mjml="", html=html, text=text, images={}
    )
    return dataclasses.replace(campaign, rendered=rendered)


def test_each_recipient_gets_exactly_their_message_html_escaped_in_html_only(campaign):
    """Rendering the inline template with each entry's ReplacementTemplateData gives that recipient's own
    html, text and subject: SES 'doesn't escape HTML content when rendering the HTML template'
    (https://docs.aws.amazon.com/ses/latest/dg/send-personalized-email-advanced.html), so HTML variables carry
    escaped values and text variables the values as they are; a missing name takes its fallback; literal braces
    come from variables, since inline templates get 'only simple substitutions'
    (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Template.html)."""
    tricky = tricky_campaign(campaign)
    batch = [
        tricky.build(Recipient(3, "zoe@example.net", "Zoé <Côté> & Bœuf")),
        tricky.build(Recipient(4, "jean@example.com", None)),
    ]

    payload = build_payload(batch)

    content = payload["DefaultContent"]["Template"]["TemplateContent"]
    for entry, message in zip(payload["BulkEmailEntries"], batch, strict=True):
        data = json.loads(entry["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])
        assert ses_render(content["Html"], data) == message.html
        assert ses_render(content["Text"], data) == message.text
        assert ses_render(content["Subject"], data) == message.subject == "Bulletin d’été {{ spécial }}"
    zoe, jean = batch
    assert "Zoé &lt;Côté&gt; &amp; Bœuf" in zoe.html and "Zoé <Côté> & Bœuf" in zoe.text
    assert "Bonjour chère lectrice" in jean.html and "Bonjour chère lectrice" in jean.text
    default = json.loads(payload["DefaultContent"]["Template"]["TemplateData"])
    assert set(default) == set(VARIABLE.findall(content["Html"] + content["Text"] + content["Subject"]))


def test_literal_braces_never_form_a_tag():
    """Each literal brace that would touch another brace, or a variable next to it, is written {{lb}}/{{rb}}."""
    assert literal("a{color:red}") == "a{color:red}"
    assert literal("{{x}}") == "{{lb}}{x}{{rb}}"
    assert literal("{") == "{{lb}}" and literal("}") == "{{rb}}"
    assert literal("}}}{{{") == "{{rb}}{{rb}}{{rb}}{{lb}}{{lb}}{{lb}}"
    for text in ("{{x}}", "{ {", "}{", "a}}b{{c", "{{{", "}", "{}"):
        assert ses_render("[" + literal(text) + "]", {"lb": "{", "rb": "}"}) == "[" + text + "]"


def test_the_real_issue_round_trips(messages):
    """The example issue (60 KB of MJML output) renders to each message's own html and text."""
    payload = build_payload(messages)
    content = payload["DefaultContent"]["Template"]["TemplateContent"]
    for entry, message in zip(payload["BulkEmailEntries"], messages, strict=True):
        data = json.loads(entry["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])
        assert ses_render(content["Html"], data) == message.html
        assert ses_render(content["Text"], data) == message.text


def test_one_campaign_per_call(campaign, messages):
    other = tricky_campaign(campaign).build(Recipient(9, "autre@example.org"))
    with pytest.raises(ValueError, match="share its body"):
        build_payload([messages[0], other])


# Recipients SES cannot take


@respx.mock
def test_a_non_ascii_local_part_fails_without_being_sent(campaign, messages):
    """'Amazon SES does not support the SMTPUTF8 extension … the local part of a destination email address … may
    only contain 7-bit ASCII characters' (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Destination.html):
    that message fails with the reason; the others go in one call and keep their places."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=fixture("bulk-missing-one.json")))
    accented = campaign.build(Recipient(5, "élodie@example.org", "Élodie"))

    outcomes = send([messages[0], accented, messages[1]])

    assert route.call_count == 1
    entries = sent_payload(route)["BulkEmailEntries"]
    assert [email.utils.parseaddr(e["Destination"]["ToAddresses"][0])[1] for e in entries] == [
        "francoise@example.org",
        "audrey@example.org",
    ]
    assert [outcome.status for outcome in outcomes] == ["sent", "failed", "sent"]
    assert outcomes[1].reason.startswith("SES SMTPUTF8: the local part of élodie@example.org is not ASCII")
    assert outcomes[1].bounce is False


@respx.mock
def test_a_batch_with_nothing_sendable_makes_no_call(campaign):
    route = respx.post(URL).mock(return_value=httpx.Response(500))
    too_long = campaign.build(Recipient(7, "long@example.org"))
    too_long = dataclasses.replace(
        too_long, headers={**too_long.headers, "List-Unsubscribe": "<https://x.example/" + "a" * 900 + ">"}
    )

    outcomes = send([campaign.build(Recipient(5, "andré@example.org")), too_long])

    assert route.call_count == 0
    assert [outcome.status for outcome in outcomes] == ["failed", "failed"]
    assert outcomes[1].reason.startswith("SES InvalidHeader: the List-Unsubscribe header is 920 characters")


def test_a_non_ascii_domain_is_sent_in_punycode(campaign):
    """'If the domain part of an address … contains non-ASCII characters, they must be encoded using Punycode'
    (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Destination.html)."""
    message = campaign.build(Recipient(6, "marie@québec.example", "Marie"))
    payload = build_payload([message])
    assert payload["BulkEmailEntries"][0]["Destination"]["ToAddresses"] == ["Marie <marie@xn--qubec-csa.example>"]


# The answer


@respx.mock
def test_a_partial_failure_is_mapped_to_the_right_messages(messages):
    """Statuses from BulkEmailStatus (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_BulkEmailEntryResult.html):
    SUCCESS sent, INVALID_PARAMETER failed, ACCOUNT_THROTTLED retry, MESSAGE_REJECTED failed; none a bounce."""
    respx.post(URL).mock(return_value=httpx.Response(200, content=fixture("bulk-partial.json")))

    outcomes = send(messages)

    assert [outcome.status for outcome in outcomes] == ["sent", "failed", "retry", "failed"]
    assert outcomes[0].provider_id == "01010161b06c7f94-f36c15a6-1e25-49b2-a48d-772fb35fe846-000000"
    assert outcomes[1].reason == "SES INVALID_PARAMETER: SES refused a value of this message (Illegal address)"
    assert outcomes[2].reason.startswith("SES ACCOUNT_THROTTLED: ")
    assert outcomes[3].reason == "SES MESSAGE_REJECTED: SES rejected the message (Message rejected.)"
    assert not any(outcome.bounce for outcome in outcomes)


@pytest.mark.parametrize(
    "status, expected",
    [
        ("SUCCESS", "sent"),
        *((status, "retry") for status in RETRY_STATUSES),
        *((status, "failed") for status in FAILED_STATUSES),
        ("SOMETHING_NEW", "retry"),
    ],
)
def test_every_entry_status(status, expected, messages):
    """Every BulkEmailStatus of botocore's sesv2 service-2.json (and the API reference's older spellings)."""
    body = json.dumps({"BulkEmailEntryResults": [{"Status": status, "Error": "détail"}]}).encode()
    (outcome,) = parse_response(200, {}, body, messages[:1])
    assert outcome.status == expected
    if expected != "sent":
        assert outcome.reason.startswith(f"SES {status}: ") and outcome.reason.endswith("(détail)")


@respx.mock
def test_an_answer_missing_a_message_leaves_it_retry(messages):
    """Two results for four entries (fixture bulk-missing-one.json): the last two are not counted as sent."""
    respx.post(URL).mock(return_value=httpx.Response(200, content=fixture("bulk-missing-one.json")))

    outcomes = send(messages)

    assert [outcome.status for outcome in outcomes] == ["sent", "sent", "retry", "retry"]


def test_an_unreadable_success_leaves_everything_retry(messages):
    outcomes = parse_response(200, {}, b"<html>proxy</html>", messages)
    assert all(outcome.status == "retry" for outcome in outcomes)


@respx.mock
def test_a_whole_request_400_fails_every_message(messages):
    """BadRequestException, 400 (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendBulkEmail.html;
    fixture error-400-bad-request.json), the code read from x-amzn-ErrorType as botocore does."""
    respx.post(URL).mock(
        return_value=httpx.Response(
            400,
            headers={"x-amzn-ErrorType": "BadRequestException:http://internal.amazon.com/coral/com.amazon.coral/"},
            content=fixture("error-400-bad-request.json"),
        )
    )

    outcomes = send(messages)

    assert outcomes == [Outcome.failed("SES 400 BadRequestException: Missing final '@domain'")] * 4


@pytest.mark.parametrize(
    "code, body, expected",
    [
        ("MessageRejected", "error-400-message-rejected.json", "failed"),
        ("BadRequestException", "error-400-bad-request.json", "failed"),
        ("LimitExceededException", "error-400-limit-exceeded.json", "retry"),
        ("ThrottlingException", "error-429-too-many-requests.json", "retry"),
        ("MessageRejected", "error-400-message-rejected-not-verified.json", TransportError),
        ("AccountSuspendedException", "error-400-message-rejected.json", TransportError),
        ("SendingPausedException", "error-400-message-rejected.json", TransportError),
        ("MailFromDomainNotVerifiedException", "error-400-message-rejected.json", TransportError),
        ("NotFoundException", "error-400-message-rejected.json", TransportError),
        ("AccessDeniedException", "error-400-message-rejected.json", TransportError),
        ("RequestExpired", "error-400-message-rejected.json", TransportError),
    ],
)
def test_whole_request_errors(code, body, expected, messages):
    """SendBulkEmail's errors and the common ones (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendBulkEmail.html,
    https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html): retry, fail, or stop the run."""
    status = 404 if code == "NotFoundException" else 400
    headers = httpx.Headers({"x-amzn-ErrorType": code})
    if expected is TransportError:
        with pytest.raises(TransportError, match=f"^SES {status} {code}: "):
            parse_response(status, headers, fixture(body), messages)
        return
    outcomes = parse_response(status, headers, fixture(body), messages)
    assert [outcome.status for outcome in outcomes] == [expected] * 4
    assert outcomes[0].reason.startswith(f"SES {status} {code}: ")


def test_the_error_code_comes_from_the_header_else_the_body():
    """botocore/parsers.py RestJSONParser: x-amzn-errortype first, then code, then __type; ':' and '#' cut."""
    assert error_code({"X-Amzn-ErrorType": "MessageRejected:http://x/"}, b'{"message":"m"}') == ("MessageRejected", "m")
    assert error_code({}, b'{"__type":"com.amazonaws.sesv2#NotFoundException","Message":"n"}') == (
        "NotFoundException",
        "n",
    )
    assert error_code({}, b"Bad Gateway") == (None, "Bad Gateway")


# The DSN


def test_the_default_host_is_the_regional_endpoint():
    transport = make()
    assert transport.base_url == "https://email.ca-central-1.amazonaws.com"
    assert (transport.access_key_id, transport.secret_access_key, transport.region) == (
        KEY_ID,
        SECRET,
        "ca-central-1",
    )
    assert str(transport) == "ses+api://default?region=ca-central-1"
    asyncio.run(transport.aclose())


@respx.mock
def test_a_local_host_and_port_is_plain_http_and_signed_for_that_host(messages):
    route = respx.post("http://127.0.0.1:8005/v2/email/outbound-bulk-emails").mock(
        return_value=httpx.Response(200, content=fixture("bulk-success.json"))
    )

    outcomes = send(messages, dsn=f"ses+api://{KEY_ID}:{QUOTED_SECRET}@127.0.0.1:8005?region=us-east-1")

    assert [outcome.status for outcome in outcomes] == ["sent"] * 4
    request = route.calls.last.request
    assert request.headers["Host"] == "127.0.0.1:8005"
    assert "/us-east-1/ses/aws4_request" in request.headers["Authorization"]


@respx.mock
def test_the_configuration_set_option(messages):
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=fixture("bulk-success.json")))
    send(messages, dsn=DSN + "&configuration_set=infolettre-events")
    assert sent_payload(route)["ConfigurationSetName"] == "infolettre-events"


@pytest.mark.parametrize(
    "dsn, message",
    [
        ("ses+api://default?region=ca-central-1", "needs the access key ID and the secret access key"),
        (f"ses+api://{KEY_ID}@default?region=ca-central-1", "needs the access key ID and the secret access key"),
        (f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default", r"needs the SES region .*\?region=ca-central-1"),
        (f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default?region=Canada", "not an AWS region name"),
        (f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default?regoin=ca-central-1", "unknown option; known: region"),
        (f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default/x?region=ca-central-1", "write it as %2F"),
        (f"ses+api://{KEY_ID}:s3cr3t@default?region=ca-central-1&configuration_set=a b", "configuration set names"),
    ],
)
def test_dsn_errors_say_what_to_write(dsn, message):
    with pytest.raises(NewsletterError, match=message) as caught:
        transport_from_dsn(dsn)
    assert SECRET not in str(caught.value) and QUOTED_SECRET not in str(caught.value)


def test_the_secret_is_url_decoded():
    transport = SesTransport.from_dsn(Dsn.parse(DSN))
    assert transport.secret_access_key == SECRET
    asyncio.run(transport.aclose())
