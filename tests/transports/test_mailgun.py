"""The Mailgun transport: one multipart request per batch, answered with one id; respx stands in for Mailgun."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.header
import email.policy
import json
import re
from pathlib import Path

import httpx
import pytest
import respx

from newsletter.errors import NewsletterError
from newsletter.message import Recipient
from newsletter.render import PLACEHOLDER, RenderedIssue
from newsletter.transports import transport_from_dsn
from newsletter.transports.base import Dsn
from newsletter.transports.mailgun import MailgunTransport, build_payload, parse_response

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mailgun"
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DSN = f"mailgun+api://{KEY}:mg.crdbsl.org@default?region=eu"
EU_URL = "https://api.eu.mailgun.net/v3/mg.crdbsl.org/messages"
RECIPIENT_VARIABLE = re.compile(r"%recipient\.([^%\s]+)%")


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def transport(dsn: str = DSN) -> MailgunTransport:
    made = transport_from_dsn(dsn)
    assert isinstance(made, MailgunTransport)
    return made


def send(messages, dsn: str = DSN, times: int = 1):
    """Send the batch `times` times through one transport; return the outcomes of each call."""

    async def run():
        mailgun = transport(dsn)
        try:
            return [await mailgun.send_batch(messages) for _ in range(times)]
        finally:
            await mailgun.aclose()

    results = asyncio.run(run())
    return results if times > 1 else results[0]


def form_fields(request: httpx.Request) -> list[tuple[str, str]]:
    """The multipart/form-data fields of a request, in order, as (name, text)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    parsed = email.message_from_bytes(head + request.content, policy=email.policy.default)
    assert parsed.is_multipart()
    return [
        (part.get_param("name", header="content-disposition"), part.get_payload(decode=True).decode("utf-8"))
        for part in parsed.iter_parts()
    ]


def mailgun_fills(template: str, variables: dict[str, str]) -> str:
    """What Mailgun makes of a template for one recipient: each %recipient.VAR% replaced by its value."""
    return RECIPIENT_VARIABLE.sub(lambda match: variables[match.group(1)], template)


def first(fields: list[tuple[str, str]], name: str) -> str:
    return next(value for field, value in fields if field == name)


@respx.mock
def test_the_request_is_the_documented_batch(messages):
    """One POST /v3/{domain}/messages, multipart/form-data, Basic api:KEY, one `to` per recipient with its
    French name, recipient-variables keyed by plain address; the fields are those of the curl example on
    https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending
    (tests/fixtures/mailgun/batch-sending-request.json). Tracking off: o:tracking on
    https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/pass-sending-options."""
    route = respx.post(EU_URL).mock(return_value=httpx.Response(200, json=fixture("send-200-queued.json")))
    send(messages)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == EU_URL
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(request)
    names = [name for name, _ in fields]

    documented = fixture("batch-sending-request.json")["fields"]
    assert {name for name, _ in documented} <= set(names)
    assert isinstance(json.loads(first(documented, "recipient-variables")), dict)  # the docs' shape, keyed by address

    assert first(fields, "from") == "Le bulletin des Alliances <alliancesolidarite@crdbsl.org>"
    assert [value for name, value in fields if name == "to"] == [
        "Françoise Légaré-Pelletier <francoise@example.org>",
        "Audrey Charest <audrey@example.org>",
        "Zoé Côté-Bœuf <zoe@example.net>",
        "jean@example.com",
    ]
    assert first(fields, "subject") == messages[0].subject == "Retour sur le 2e Forum des Alliances"
    variables = json.loads(first(fields, "recipient-variables"))
    assert list(variables) == [m.recipient.address for m in messages]

    # Each recipient gets exactly the text and HTML that message.py would have built for them.
    for message in messages:
        own = variables[message.recipient.address]
        assert mailgun_fills(first(fields, "html"), own) == message.html
        assert mailgun_fills(first(fields, "text"), own) == message.text
    assert not PLACEHOLDER.search(first(fields, "html")) and not PLACEHOLDER.search(first(fields, "text"))
    assert "%recipient.html_unsubscribe_url%" in first(fields, "html")
    assert "%recipient.text_unsubscribe_url%" in first(fields, "text")

    # Headers: List-Unsubscribe differs by recipient, the others are the campaign's.
    assert first(fields, "h:List-Unsubscribe") == "%recipient.header_list_unsubscribe%"
    for message in messages:
        own = variables[message.recipient.address]
        assert own["header_list_unsubscribe"] == message.headers["List-Unsubscribe"]
        assert own["header_list_unsubscribe"].startswith("<https://bulletin.crdbsl.example/u/")
    assert first(fields, "h:List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert first(fields, "h:List-Id") == "Le bulletin des Alliances <alliances.crdbsl.org>"
    assert first(fields, "h:Reply-To") == "alliancesolidarite@crdbsl.org"
    assert "h:Date" not in names and "h:Message-ID" not in names  # Mailgun's own, one message per batch
    assert first(fields, "o:tracking") == "no"
    assert first(fields, "o:tracking-clicks") == first(fields, "o:tracking-opens") == "no"
    assert KEY not in request.content.decode("utf-8")


def test_each_recipient_key_goes_in_a_custom_variable(messages):
    """v:newsletter-key is filled per recipient from recipient-variables, which Mailgun documents: "given a variable
    of v:recipient-id=%recipient.id% and a recipient variable of {"user1@example.com":{"id":123}}, events and
    webhooks associated with the recipient user1@example.com will contain a user-variable field with the content
    of {"recipient-id":"123"}" (https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/
    send-attachments). test_mailgun_webhooks.py reads the key back from a webhook."""
    fields = build_payload(messages)
    assert [(name, value) for name, value in fields if name.startswith("v:")] == [
        ("v:newsletter-key", "%recipient.newsletter_key%")
    ]
    variables = json.loads(first(fields, "recipient-variables"))
    assert [variables[m.recipient.address]["newsletter_key"] for m in messages] == ["12-1", "12-2", "12-3", "12-4"]
    assert [m.key for m in messages] == ["12-1", "12-2", "12-3", "12-4"]
    # Every other variable starts with html_, text_ or header_: none can take the key's name.
    names = {name for own in variables.values() for name in own} - {"newsletter_key"}
    assert names and all(name.startswith(("html_", "text_", "header_")) for name in names)


def test_batch_size_is_mailgun_limit(campaign):
    """ "The maximum number of recipients allowed for batch is 1,000":
    https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending"""
    assert MailgunTransport.max_batch == 1000
    many = [campaign.build(Recipient(i, f"lecteur{i}@example.org", f"Lecteur {i}")) for i in range(1, 1002)]
    assert len([1 for name, _ in build_payload(many[:1000]) if name == "to"]) == 1000
    with pytest.raises(ValueError, match="at most 1000"):
        build_payload(many)


def test_placeholder_fallbacks_and_html_escaping(campaign):
    """HTML values are escaped and text values are not, through distinct variables; a placeholder without value
    takes its fallback, and one name with two fallbacks gets two variables (RenderedIssue.fill's rules)."""
    issue = RenderedIssue(
        slug="essai",
        lang="fr",
        subject="Essai",
        mjml="",
        html=(
            "<p>Bonjour %%name|chère lectrice%%,</p><p>%%name|toi &amp; moi%% %%name%%</p>"
            '<a href="%%unsubscribe_url%%">x</a>'
        ),
        text="Bonjour %%name|chère lectrice%%, %%name|toi & moi%%. %%name%%\n%%unsubscribe_url%%\n",
        images={},
    )
    other = dataclasses.replace(campaign, rendered=issue)
    messages = [
        other.build(Recipient(1, "zoe@example.net", "Zoé <Côté> & fils")),
        other.build(Recipient(2, "jean@example.com", None)),
    ]
    fields = build_payload(messages)
    html_template, text_template = first(fields, "html"), first(fields, "text")
    assert "%recipient.html_name%" in html_template and "%recipient.html_name-2%" in html_template
    assert "%recipient.html_name-3%" in html_template  # %%name%%: fallback ""
    assert "%recipient.text_name%" in text_template
    variables = json.loads(first(fields, "recipient-variables"))
    zoe, jean = variables["zoe@example.net"], variables["jean@example.com"]
    assert zoe["html_name"] == "Zoé &lt;Côté&gt; &amp; fils" and zoe["text_name"] == "Zoé <Côté> & fils"
    assert jean["html_name"] == "chère lectrice" and jean["html_name-2"] == "toi &amp; moi"
    assert jean["text_name-2"] == "toi & moi" and jean["html_name-3"] == jean["text_name-3"] == ""
    for message in messages:
        own = variables[message.recipient.address]
        assert mailgun_fills(html_template, own) == message.html
        assert mailgun_fills(text_template, own) == message.text


def test_names_mailgun_would_mangle_are_encoded(campaign):
    """Non-ASCII and punctuation in one display name: RFC 2047, as Mailgun quotes such names wrongly
    (django-anymail issue #270); ASCII names with punctuation are quoted as RFC 5322 says."""
    messages = [
        campaign.build(Recipient(1, "francoise@example.org", "Légaré, Françoise (CRDBSL)")),
        campaign.build(Recipient(2, "audrey@example.org", "Charest, Audrey")),
    ]
    to = [value for name, value in build_payload(messages) if name == "to"]
    assert to[1] == '"Charest, Audrey" <audrey@example.org>'
    assert to[0].isascii() and to[0].endswith(" <francoise@example.org>")
    decoded = email.header.make_header(email.header.decode_header(to[0].rsplit(" <", 1)[0]))
    assert str(decoded) == "Légaré, Françoise (CRDBSL)"


def test_a_single_message_sends_its_headers_as_they_are(messages):
    fields = build_payload(messages[:1])
    assert first(fields, "h:List-Unsubscribe") == messages[0].headers["List-Unsubscribe"]
    assert json.loads(first(fields, "recipient-variables"))["francoise@example.org"]["html_unsubscribe_url"]


def test_build_payload_refuses_two_campaigns(campaign, messages):
    other = dataclasses.replace(campaign, id=13)  # a new Campaign: another Body
    with pytest.raises(ValueError, match="one campaign"):
        build_payload([messages[0], other.build(Recipient(9, "autre@example.org", "Autre"))])


@respx.mock
def test_bad_and_repeated_addresses_stay_out_of_the_request(campaign, messages):
    """Mailgun refuses a whole batch for one invalid `to` without saying which; such an address is failed as a
    bounce and left out, a repeated one waits for the next batch, and the others are sent. The 200 body is the
    sample of https://documentation.mailgun.com/en/latest/api-sending.html."""
    route = respx.post(EU_URL).mock(return_value=httpx.Response(200, json=fixture("send-200-queued.json")))
    batch = [
        messages[0],
        campaign.build(Recipient(5, "pas une adresse@example.org", "Sans Adresse")),
        messages[1],
        campaign.build(Recipient(6, "Francoise@Example.org", "Françoise encore")),
        campaign.build(Recipient(7, "marc@localhost", "Marc")),
    ]
    outcomes = send(batch)
    assert [o.status for o in outcomes] == ["sent", "failed", "sent", "retry", "failed"]
    assert outcomes[1].bounce and outcomes[4].bounce and not outcomes[3].bounce
    assert outcomes[1].reason.startswith("Mailgun: 'pas une adresse@example.org' is not a valid address")
    assert "twice in this batch" in outcomes[3].reason
    to = [value for name, value in form_fields(route.calls.last.request) if name == "to"]
    assert to == ["Françoise Légaré-Pelletier <francoise@example.org>", "Audrey Charest <audrey@example.org>"]


@respx.mock
def test_nothing_is_asked_when_no_address_can_go(campaign):
    route = respx.post(EU_URL).mock(return_value=httpx.Response(200, json=fixture("send-200-queued.json")))
    outcomes = send([campaign.build(Recipient(5, "personne", "Personne"))])
    assert route.call_count == 0
    assert [(o.status, o.bounce) for o in outcomes] == [("failed", True)]


@respx.mock
def test_a_400_fails_the_whole_batch_with_mailgun_words(messages):
    """A 400 "will typically contain a JSON response with a "message" key":
    https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses; the message is the one
    https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages names for an invalid address
    (tests/fixtures/mailgun/send-400-invalid-to.json)."""
    respx.post(EU_URL).mock(return_value=httpx.Response(400, json=fixture("send-400-invalid-to.json")))
    outcomes = send(messages)
    assert [o.status for o in outcomes] == ["failed"] * 4
    assert not any(o.bounce for o in outcomes)
    assert outcomes[0].reason == (
        "Mailgun 400: 'to' parameter is not a valid address. please check documentation "
        "(the whole batch of 4 was refused)"
    )


@respx.mock
def test_a_404_is_retried(messages):
    """A 404 "can be temporal as our system is an eventually-consistent system":
    https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses. The body is adapted: the docs show
    none; "Domain not found" is what django-anymail's Mailgun backend looks for in one."""
    respx.post(EU_URL).mock(return_value=httpx.Response(404, json=fixture("send-404-domain-not-found.json")))
    outcomes = send(messages)
    assert [o.status for o in outcomes] == ["retry"] * 4
    assert outcomes[0].reason.startswith("Mailgun 404: Domain not found: mg.crdbsl.org; Mailgun says")
    assert "?region=eu" in outcomes[0].reason


@respx.mock
def test_an_answer_without_id_leaves_every_message_to_retry(messages):
    """A 200 that names no message (Mailgun answers "Mailgun Magnificent API" to a URL that is no endpoint,
    as django-anymail notes) is no proof of sending."""
    respx.post(EU_URL).mock(return_value=httpx.Response(200, text="Mailgun Magnificent API"))
    outcomes = send(messages)
    assert [o.status for o in outcomes] == ["retry"] * 4
    assert outcomes[0].reason.startswith("Mailgun 200: the answer names no message (Mailgun Magnificent API)")
    assert parse_response(200, {}, b'{"message": "Queued. Thank you."}', messages)[0].status == "retry"


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        (f"mailgun+api://{KEY}:mg.crdbsl.org@default", "https://api.mailgun.net/v3/mg.crdbsl.org/messages"),
        (f"mailgun+api://{KEY}:mg.crdbsl.org@default?region=us", "https://api.mailgun.net/v3/mg.crdbsl.org/messages"),
        (DSN, EU_URL),
        (f"mailgun+api://{KEY}:mg.crdbsl.org@127.0.0.1:8025", "http://127.0.0.1:8025/v3/mg.crdbsl.org/messages"),
    ],
)
def test_dsn_forms(messages, dsn, url):
    with respx.mock:
        route = respx.post(url).mock(return_value=httpx.Response(200, json=fixture("send-200-queued.json")))
        assert [o.status for o in send(messages[:1], dsn)] == ["sent"]
        assert route.call_count == 1
    shown = str(transport(dsn))
    assert KEY not in shown and shown.startswith("mailgun+api://")


def test_str_is_the_dsn_without_credentials():
    assert str(transport(DSN)) == str(Dsn.parse(DSN)) == "mailgun+api://default?region=eu"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mailgun+api://default", "needs the API key before the ':'"),
        (f"mailgun+api://{KEY}@default", "needs the sending domain after the API key"),
        ("mailgun+api://mg.crdbsl.org:key-abcdef@default", "what follows the ':' is not a sending domain"),
        (f"mailgun+api://{KEY}:mg.crdbsl.org@default?region=ca", "region=ca: use one of us, eu"),
    ],
)
def test_a_wrong_dsn_says_what_to_write(dsn, message):
    with pytest.raises(NewsletterError, match=re.escape(message)) as raised:
        transport(dsn)
    assert KEY not in str(raised.value) and "key-abcdef" not in str(raised.value)
