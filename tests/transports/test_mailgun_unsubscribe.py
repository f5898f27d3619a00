"""Mailgun's hosted unsubscribe (mailgun+api://…?unsubscribe=provider) against respx: the tag variable written into
the batch's html and text, the list's o:tag, no List-Unsubscribe of ours, the domain's tracking settings checked
before sending, and Mailgun's unsubscribes list applied to the store before a send.

Pages the bodies are shaped after:
  https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending (the batch's fields,
    tests/fixtures/mailgun/batch-sending-request.json)
  https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/tracking-unsubscribes
    (%tag_unsubscribe_url%: "Link to unsubscribe from all tags provided in the message")
  https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/domain-tracking/get-v3-domains--name--tracking
    (tracking.unsubscribe.active, html_footer, text_footer; the default footers are those of Mailgun's earlier
    manual, https://documentation.mailgun.com/en/latest/api-domains.html, GET /domains/<domain>/tracking)
  https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Unsubscribe (the list's items)
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import json
import re
from pathlib import Path

import httpx
import pytest
import respx
from sample_messages import RECIPIENTS, example_campaign

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe
from newsletter.render import RenderedIssue
from newsletter.transports import transport_from_dsn
from newsletter.transports.base import TransportError
from newsletter.transports.mailgun import MailgunTransport, build_payload, tracking_problem

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mailgun"
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DSN = f"mailgun+api://{KEY}:mg.crdbsl.org@default?region=eu&unsubscribe=provider"
EU = "https://api.eu.mailgun.net/v3"
MESSAGES_URL = f"{EU}/mg.crdbsl.org/messages"
TRACKING_URL = f"{EU}/domains/mg.crdbsl.org/tracking"
RECIPIENT_VARIABLE = re.compile(r"%recipient\.([^%\s]+)%")
# GET /v3/domains/{name}/tracking, as the reference page lists its fields; the footers as Mailgun ships them.
DEFAULT_FOOTERS = {
    "html_footer": '\n<br>\n<p><a href="%unsubscribe_url%">unsubscribe</a></p>\n',
    "text_footer": "\n\nTo unsubscribe click: <%unsubscribe_url%>\n\n",
}


def tracking(active: bool = True, **footers: str) -> dict:
    unsubscribe = {"active": active, "html_footer": "", "text_footer": ""} | footers
    return {
        "tracking": {
            "open": {"active": False, "place_at_the_top": False},
            "click": {"active": False},
            "unsubscribe": unsubscribe,
            "web_scheme": "https",
        }
    }


def transport(dsn: str = DSN) -> MailgunTransport:
    made = transport_from_dsn(dsn)
    assert isinstance(made, MailgunTransport)
    return made


def hosted_messages(mailgun: MailgunTransport, rendered: RenderedIssue | None = None):
    campaign = dataclasses.replace(
        example_campaign(), hosted=mailgun.hosted_unsubscribe, view_online="https://crdbsl.org/bulletin/x/"
    )
    if rendered is not None:
        campaign = dataclasses.replace(campaign, rendered=rendered)
    return [campaign.build(recipient) for recipient in RECIPIENTS]


def run(coroutine_function):
    async def go():
        mailgun = transport()
        try:
            return await coroutine_function(mailgun)
        finally:
            await mailgun.aclose()

    return asyncio.run(go())


def form_fields(request: httpx.Request) -> list[tuple[str, str]]:
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    parsed = email.message_from_bytes(head + request.content, policy=email.policy.default)
    return [
        (part.get_param("name", header="content-disposition"), part.get_payload(decode=True).decode("utf-8"))
        for part in parsed.iter_parts()
    ]


def mailgun_fills(template: str, variables: dict[str, str]) -> str:
    """What Mailgun makes of a template for one recipient: each %recipient.VAR% replaced by its value."""
    return RECIPIENT_VARIABLE.sub(lambda match: variables[match.group(1)], template)


def first(fields: list[tuple[str, str]], name: str) -> str:
    return next(value for field, value in fields if field == name)


def test_the_dsn_option_chooses_mailguns_tag_unsubscribe():
    hosted = transport().hosted_unsubscribe
    assert hosted == HostedUnsubscribe(
        "mailgun", "%tag_unsubscribe_url%", hosted.description, {"domain": "mg.crdbsl.org"}
    )
    assert "Mailgun" in hosted.description and "mg.crdbsl.org" in hosted.description
    assert transport(DSN.replace("provider", "own")).hosted_unsubscribe is None
    assert transport(DSN.replace("&unsubscribe=provider", "")).hosted_unsubscribe is None  # own is the default
    with pytest.raises(NewsletterError, match=r"\?unsubscribe=mailgun: use one of own, provider"):
        transport(DSN.replace("provider", "mailgun"))


@respx.mock
def test_the_tag_variable_is_in_both_parts_and_no_list_unsubscribe_of_ours():
    """The batch of the documentation, with %tag_unsubscribe_url% written into the html (as the footer's href) and
    the text: never a %recipient.…% variable, whose value Mailgun is not documented to substitute again."""
    route = respx.post(MESSAGES_URL).mock(
        return_value=httpx.Response(200, json=json.loads((FIXTURES / "send-200-queued.json").read_text()))
    )

    async def send(mailgun):
        messages = hosted_messages(mailgun)
        return messages, await mailgun.send_batch(messages)

    messages, outcomes = run(send)
    assert [outcome.status for outcome in outcomes] == ["sent"] * 4
    fields = form_fields(route.calls.last.request)
    names = [name for name, _ in fields]
    documented = json.loads((FIXTURES / "batch-sending-request.json").read_text())["fields"]
    assert {name for name, _ in documented} <= set(names)

    html, text = first(fields, "html"), first(fields, "text")
    assert 'href="%tag_unsubscribe_url%"' in html
    assert "%tag_unsubscribe_url%" in text
    assert "unsubscribe_url%" not in html.replace("%tag_unsubscribe_url%", "")  # no variable stands for it
    assert "%recipient.text_unsubscribe_url%" not in text
    variables = json.loads(first(fields, "recipient-variables"))
    for message in messages:
        own = variables[message.recipient.address]
        assert not any("unsubscribe_url" in name for name in own)
        assert "%tag_unsubscribe_url%" not in json.dumps(own)
        assert mailgun_fills(html, own) == message.html  # what message.py builds, exactly
        assert mailgun_fills(text, own) == message.text
        assert "/u/" not in message.html  # no signed link of ours

    assert not [name for name in names if name.lower() in ("h:list-unsubscribe", "h:list-unsubscribe-post")]
    assert first(fields, "h:List-Id") == "Le bulletin des Alliances <alliances.crdbsl.org>"
    assert first(fields, "o:tag") == "alliances"  # the tag %tag_unsubscribe_url% unsubscribes from: the list
    assert "o:tracking" not in names  # it might also turn the unsubscribe variables off (not documented)
    assert first(fields, "o:tracking-clicks") == first(fields, "o:tracking-opens") == "no"  # Law 25 all the same


def test_own_unsubscribe_keeps_the_batch_as_it_was(messages):
    fields = build_payload(messages)
    names = [name for name, _ in fields]
    assert "o:tag" not in names and first(fields, "o:tracking") == "no"
    assert first(fields, "h:List-Unsubscribe") == "%recipient.header_list_unsubscribe%"


def test_a_campaign_without_the_providers_link_is_refused(messages):
    """Messages built with our own links (a campaign begun without unsubscribe=provider) would carry a second
    unsubscribe and a second list: send_batch refuses them before any request."""

    async def send(mailgun):
        return await mailgun.send_batch(messages)

    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json={"id": "<x>"}))
        with pytest.raises(TransportError, match="carries this tool's List-Unsubscribe"):
            run(send)
        assert not route.called


@pytest.mark.parametrize("part", ["html", "text"])
def test_an_issue_without_the_placeholder_in_a_part_is_refused(part):
    """Compliance: every message carries Mailgun's link in both parts, or nothing is sent."""
    rendered = example_campaign().rendered
    html, text = rendered.html, rendered.text
    if part == "html":
        html = html.replace("%%unsubscribe_url%%", "https://crdbsl.org/")
    else:
        text = text.replace("%%unsubscribe_url%%", "https://crdbsl.org/")
    stripped = dataclasses.replace(rendered, html=html, text=text)
    kind = "HTML" if part == "html" else "text"

    async def send(mailgun):
        return await mailgun.send_batch(hosted_messages(mailgun, stripped))

    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json={"id": "<x>"}))
        with pytest.raises(TransportError, match=f"the issue's {kind} part has no %%unsubscribe_url%%"):
            run(send)
        assert not route.called


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (tracking(), None),
        (tracking(active=False), "unsubscribe tracking is off for mg.crdbsl.org"),
        (tracking(**DEFAULT_FOOTERS), r"appends its unsubscribe footer \(html_footer and text_footer\)"),
        (tracking(text_footer=DEFAULT_FOOTERS["text_footer"]), r"footer \(text_footer\) .* a second link"),
        ({"message": "no tracking"}, "not the documented answer"),
    ],
)
def test_preflight_refuses_a_domain_that_would_add_a_footer_or_no_link(answer, expected):
    """The trap: Mailgun appends its own footer ("Remove text in the HTML and text footer so they won't be
    appended automatically"), and without unsubscribe tracking the variable is not replaced."""
    with respx.mock:
        route = respx.get(TRACKING_URL).mock(return_value=httpx.Response(200, json=answer))
        if expected is None:
            run(lambda mailgun: mailgun.preflight())
        else:
            with pytest.raises(NewsletterError, match=expected):
                run(lambda mailgun: mailgun.preflight())
        assert route.call_count == 1
        assert route.calls.last.request.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "needs an account key"), (404, "check the sending domain"), (500, "Mailgun 500 reading")],
)
def test_preflight_says_why_mailgun_could_not_be_asked(status, expected):
    with respx.mock:
        respx.get(TRACKING_URL).mock(return_value=httpx.Response(status, json={"message": "Forbidden"}))
        with pytest.raises(TransportError, match=expected):
            run(lambda mailgun: mailgun.preflight())


def test_preflight_asks_nothing_with_our_own_unsubscribe():
    async def go():
        mailgun = transport(DSN.replace("provider", "own"))
        try:
            await mailgun.preflight()
        finally:
            await mailgun.aclose()

    with respx.mock:  # any request would fail: none is mocked
        asyncio.run(go())


def test_tracking_problem_reads_the_documented_answer():
    assert tracking_problem(json.dumps(tracking()).encode(), "mg.crdbsl.org") is None
    assert "off" in tracking_problem(json.dumps(tracking(active=False)).encode(), "mg.crdbsl.org")
    assert "empty the HTML and text footers" in tracking_problem(
        json.dumps(tracking(html_footer=DEFAULT_FOOTERS["html_footer"])).encode(), "mg.crdbsl.org"
    )


def test_whoever_left_through_mailguns_page_is_unsubscribed_before_a_send(tmp_path):
    """`send` and `worker` call sending.ready(): preflight, then the provider's suppressions into the store. A
    recipient on Mailgun's unsubscribes list with the list's tag (what %tag_unsubscribe_url% records) is
    unsubscribed; the others stay subscribed."""
    from newsletter.sending.wiring import ready
    from newsletter.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'newsletter.db'}")
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", "Le bulletin des Alliances", connection=connection)
        for recipient in RECIPIENTS:
            store.subscribe(list_id, recipient.email, recipient.name, {}, "import", connection=connection)
    unsubscribes = {
        "items": [
            {"address": "audrey@example.org", "tags": ["alliances"], "created_at": "Tue, 07 Jan 2025 19:25:45 UTC"}
        ],
        "paging": {"next": f"{EU}/mg.crdbsl.org/unsubscribes?page=next&address=audrey%40example.org&limit=1000"},
    }
    empty = {"items": [], "paging": {}}
    with respx.mock:
        respx.get(TRACKING_URL).mock(return_value=httpx.Response(200, json=tracking()))
        respx.get(f"{EU}/mg.crdbsl.org/bounces?limit=1000").mock(return_value=httpx.Response(200, json=empty))
        respx.get(f"{EU}/mg.crdbsl.org/complaints?limit=1000").mock(return_value=httpx.Response(200, json=empty))
        respx.get(f"{EU}/mg.crdbsl.org/unsubscribes?limit=1000").mock(
            return_value=httpx.Response(200, json=unsubscribes)
        )
        respx.get(unsubscribes["paging"]["next"]).mock(return_value=httpx.Response(200, json=empty))
        run(lambda mailgun: ready(store, mailgun, list_id))
    statuses = {}
    with store.transaction() as connection:
        for recipient in RECIPIENTS:
            subscriber = store.find_subscriber(recipient.email, connection=connection)
            statuses[recipient.email] = store.membership(subscriber, "alliances")[2]
    store.close()
    assert statuses.pop("audrey@example.org") == "unsubscribed"
    assert set(statuses.values()) == {"subscribed"}
