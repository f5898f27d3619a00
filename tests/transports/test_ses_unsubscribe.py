"""Amazon SES subscription management (ses+api://…?unsubscribe=provider&contact_list=…&topic=…) against respx:
one SendEmail per message with ListManagementOptions and {{amazonSESUnsubscribeUrl}} in both parts, no
List-Unsubscribe of ours, the contact list checked before sending, and its unsubscribed contacts applied to the
store before a send.

SendBulkEmail has no ListManagementOptions (its request syntax, API_SendBulkEmail.html), so SendEmail it is. The
request and answer shapes below are those of the API reference's Request Syntax and Response Syntax:
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_GetContactList.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_ListContacts.html
and the rules are those of https://docs.aws.amazon.com/ses/latest/dg/sending-email-subscription-management.html.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime

import httpx
import pytest
import respx
from sample_messages import RECIPIENTS, example_campaign

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe
from newsletter.render import RenderedIssue
from newsletter.transports import transport_from_dsn
from newsletter.transports.base import TransportError
from newsletter.transports.ses import SesTransport, parse_contacts

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
QUOTED_SECRET = SECRET.replace("/", "%2F").replace("+", "%2B")
OWN = f"ses+api://{KEY_ID}:{QUOTED_SECRET}@default?region=ca-central-1"
DSN = OWN + "&unsubscribe=provider&contact_list=infolettre&topic=alliances"
HOST = "https://email.ca-central-1.amazonaws.com"
SEND_URL = f"{HOST}/v2/email/outbound-emails"
BULK_URL = f"{HOST}/v2/email/outbound-bulk-emails"
LIST_URL = f"{HOST}/v2/email/contact-lists/infolettre"
CONTACTS_URL = f"{LIST_URL}/contacts/list"
SUPPRESSED_URL = f"{HOST}/v2/email/suppression/addresses"
NOW = datetime(2026, 4, 15, 12, 0, 0, tzinfo=UTC)
PLACEHOLDER = "{{amazonSESUnsubscribeUrl}}"

# SendEmail's Request Syntax: the members of the body, and of Content.Simple.
SEND_EMAIL_MEMBERS = {
    "ConfigurationSetName",
    "Content",
    "Destination",
    "EmailTags",
    "EndpointId",
    "FeedbackForwardingEmailAddress",
    "FeedbackForwardingEmailAddressIdentityArn",
    "FromEmailAddress",
    "FromEmailAddressIdentityArn",
    "ListManagementOptions",
    "ReplyToAddresses",
    "TenantName",
}
SIMPLE_MEMBERS = {"Attachments", "Body", "Headers", "Subject"}


def get_contact_list(*topics: tuple[str, str]) -> dict:
    """GetContactList's Response Syntax, with the given (TopicName, DefaultSubscriptionStatus)."""
    return {
        "ContactListName": "infolettre",
        "CreatedTimestamp": 1712000000,
        "Description": "Les infolettres du CRDBSL",
        "LastUpdatedTimestamp": 1712000000,
        "Tags": [],
        "Topics": [
            {"DefaultSubscriptionStatus": status, "Description": "", "DisplayName": name.title(), "TopicName": name}
            for name, status in topics
        ],
    }


def contact(address: str, *, all_: bool = False, **topics: str) -> dict:
    """One entry of ListContacts's Response Syntax."""
    return {
        "EmailAddress": address,
        "LastUpdatedTimestamp": 1713000000,
        "TopicDefaultPreferences": [{"SubscriptionStatus": "OPT_IN", "TopicName": "alliances"}],
        "TopicPreferences": [{"SubscriptionStatus": status, "TopicName": name} for name, status in topics.items()],
        "UnsubscribeAll": all_,
    }


def make(dsn: str = DSN) -> SesTransport:
    transport = transport_from_dsn(dsn)
    assert isinstance(transport, SesTransport)
    transport.clock = lambda: NOW

    async def no_wait(seconds: float) -> None:
        pass

    transport.pause = no_wait  # no waiting in tests
    return transport


def run(coroutine_function, dsn: str = DSN):
    async def go():
        transport = make(dsn)
        try:
            return await coroutine_function(transport)
        finally:
            await transport.aclose()

    return asyncio.run(go())


def hosted_messages(transport: SesTransport, rendered: RenderedIssue | None = None):
    campaign = dataclasses.replace(
        example_campaign(), hosted=transport.hosted_unsubscribe, view_online="https://crdbsl.org/bulletin/x/"
    )
    if rendered is not None:
        campaign = dataclasses.replace(campaign, rendered=rendered)
    return [campaign.build(recipient) for recipient in RECIPIENTS]


def test_the_dsn_options():
    transport = make()
    assert transport.hosted_unsubscribe == HostedUnsubscribe(
        "ses",
        PLACEHOLDER,
        transport.hosted_unsubscribe.description,
        {"region": "ca-central-1", "contact_list": "infolettre", "topic": "alliances"},
    )
    assert "contact list infolettre, topic alliances" in transport.hosted_unsubscribe.description
    assert transport.max_batch == 1  # SendEmail: one recipient a call
    without_topic = make(DSN.replace("&topic=alliances", ""))
    assert without_topic.hosted_unsubscribe.fields["topic"] is None
    assert "every topic" in without_topic.hosted_unsubscribe.description
    own = make(OWN)
    assert own.hosted_unsubscribe is None and own.max_batch == 50


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        (OWN + "&unsubscribe=provider", r"needs the SES contact list: &contact_list=NAME"),
        (OWN + "&contact_list=infolettre", r"\?contact_list=: only with unsubscribe=provider"),
        (OWN + "&unsubscribe=own&topic=alliances", r"\?topic=: only with unsubscribe=provider"),
        (OWN + "&unsubscribe=ses", r"\?unsubscribe=ses: use one of own, provider"),
        (DSN.replace("contact_list=infolettre", "contact_list=a%2Fb"), r"\?contact_list=: not an SES contact list"),
        (DSN + "&list=x", r"\?list=: unknown option; known: region, configuration_set, unsubscribe"),
    ],
)
def test_dsn_errors(dsn, message):
    with pytest.raises(NewsletterError, match=message):
        transport_from_dsn(dsn)


@respx.mock
def test_each_message_is_one_send_email_with_list_management_and_the_placeholder_in_both_parts():
    route = respx.post(SEND_URL).mock(
        side_effect=[httpx.Response(200, json={"MessageId": f"0100018f-{n}"}) for n in range(4)]
    )
    bulk = respx.post(BULK_URL).mock(return_value=httpx.Response(500))

    async def send(transport):
        messages = hosted_messages(transport)
        return messages, await transport.send_batch(messages)

    messages, outcomes = run(send)
    assert [(o.status, o.provider_id) for o in outcomes] == [("sent", f"0100018f-{n}") for n in range(4)]
    assert route.call_count == 4 and not bulk.called

    for message, call in zip(messages, route.calls, strict=True):
        request = call.request
        assert request.headers["authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20260415/ca-central-1/ses/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, Signature="
        )
        payload = json.loads(request.content.decode("utf-8"))
        assert set(payload) <= SEND_EMAIL_MEMBERS
        assert payload["ListManagementOptions"] == {"ContactListName": "infolettre", "TopicName": "alliances"}
        assert payload["Destination"] == {"ToAddresses": [payload["Destination"]["ToAddresses"][0]]}  # one recipient
        assert message.recipient.address in payload["Destination"]["ToAddresses"][0]
        simple = payload["Content"]["Simple"]
        assert set(simple) <= SIMPLE_MEMBERS
        html, text = simple["Body"]["Html"]["Data"], simple["Body"]["Text"]["Data"]
        assert f'href="{PLACEHOLDER}"' in html and PLACEHOLDER in text  # literally, once in each part
        assert html.count(PLACEHOLDER) + text.count(PLACEHOLDER) == 2  # SES replaces "only the first two"
        assert html == message.html and text == message.text
        assert simple["Body"]["Html"]["Charset"] == simple["Body"]["Text"]["Charset"] == "UTF-8"
        assert simple["Subject"] == {"Data": "Retour sur le 2e Forum des Alliances", "Charset": "UTF-8"}
        names = [header["Name"] for header in simple.get("Headers", [])]
        assert names == ["List-Id"]  # SES writes List-Unsubscribe and List-Unsubscribe-Post itself
        assert "/u/" not in html and "/u/" not in text  # no signed link of ours
        assert payload["EmailTags"] == [{"Name": "newsletter_key", "Value": message.key}]
        assert payload["ReplyToAddresses"] == ["alliancesolidarite@crdbsl.org"]


@respx.mock
def test_without_a_topic_only_the_contact_list_is_named():
    route = respx.post(SEND_URL).mock(return_value=httpx.Response(200, json={"MessageId": "m"}))

    async def send(transport):
        return await transport.send_batch(hosted_messages(transport)[:1])

    run(send, DSN.replace("&topic=alliances", "") + "&configuration_set=infolettre-events")
    payload = json.loads(route.calls.last.request.content)
    assert payload["ListManagementOptions"] == {"ContactListName": "infolettre"}
    assert payload["ConfigurationSetName"] == "infolettre-events"


@pytest.mark.parametrize(
    ("status", "body", "kind", "reason"),
    [
        (400, {"message": "Illegal address"}, "failed", "SES 400 MessageRejected: Illegal address"),
        (429, {"message": "Maximum sending rate exceeded."}, "retry", "SES 429: "),
        (200, {}, "retry", "an answer without MessageId"),
    ],
)
@respx.mock
def test_send_email_answers(status, body, kind, reason):
    error = {400: "MessageRejected", 429: "TooManyRequestsException"}.get(status)
    headers = {"x-amzn-ErrorType": f"{error}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"} if error else {}
    respx.post(SEND_URL).mock(return_value=httpx.Response(status, json=body, headers=headers))

    async def send(transport):
        return await transport.send_batch(hosted_messages(transport)[:1])

    (outcome,) = run(send)
    assert outcome.status == kind and reason in outcome.reason


def refused(rendered: RenderedIssue | None = None, messages=None) -> str:
    async def send(transport):
        return await transport.send_batch(messages or hosted_messages(transport, rendered))

    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(SEND_URL).mock(return_value=httpx.Response(200, json={"MessageId": "m"}))
        with pytest.raises(TransportError) as caught:
            run(send)
        assert not route.called
    return str(caught.value)


@pytest.mark.parametrize("part", ["HTML", "text"])
def test_an_issue_without_the_placeholder_in_a_part_is_refused(part):
    """Compliance: SES adds its link and headers only where its placeholder stands, so both parts carry it or
    nothing is sent."""
    rendered = example_campaign().rendered
    if part == "HTML":
        stripped = dataclasses.replace(rendered, html=rendered.html.replace("%%unsubscribe_url%%", "https://x.org/"))
    else:
        stripped = dataclasses.replace(rendered, text=rendered.text.replace("%%unsubscribe_url%%", "https://x.org/"))
    assert f"the issue's {part} part has no %%unsubscribe_url%%" in refused(stripped)


def test_an_issue_with_the_placeholder_three_times_is_refused():
    rendered = example_campaign().rendered
    more = dataclasses.replace(rendered, text=rendered.text + "\nSe désabonner : %%unsubscribe_url%%\n")
    assert "holds %%unsubscribe_url%% 3 times; SES replaces only the first 2" in refused(more)


def test_a_campaign_with_our_own_links_is_refused(messages):
    assert "carries this tool's List-Unsubscribe" in refused(messages=messages)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (get_contact_list(("alliances", "OPT_IN"), ("evenements", "OPT_IN")), None),
        (get_contact_list(("evenements", "OPT_IN")), "has no topic alliances \\(its topics: evenements\\)"),
        (get_contact_list(("alliances", "OPT_OUT")), "topic alliances is OPT_OUT by default"),
    ],
)
def test_preflight_checks_the_contact_list_and_topic(answer, expected):
    with respx.mock:
        route = respx.get(LIST_URL).mock(return_value=httpx.Response(200, json=answer))
        if expected is None:
            run(lambda transport: transport.preflight())
        else:
            with pytest.raises(NewsletterError, match=expected):
                run(lambda transport: transport.preflight())
        assert route.call_count == 1
        assert route.calls.last.request.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_preflight_refuses_a_contact_list_that_does_not_exist():
    with respx.mock:
        respx.get(LIST_URL).mock(
            return_value=httpx.Response(
                404,
                json={"message": "List infolettre does not exist."},
                headers={"x-amzn-ErrorType": "NotFoundException"},
            )
        )
        with pytest.raises(TransportError, match="no contact list infolettre in ca-central-1"):
            run(lambda transport: transport.preflight())


def test_preflight_retries_throttling_then_reads_the_list():
    with respx.mock:
        route = respx.get(LIST_URL).mock(
            side_effect=[
                httpx.Response(
                    429, json={"message": "Too many"}, headers={"x-amzn-ErrorType": "TooManyRequestsException"}
                ),
                httpx.Response(200, json=get_contact_list(("alliances", "OPT_IN"))),
            ]
        )
        run(lambda transport: transport.preflight())
        assert route.call_count == 2


def test_parse_contacts_keeps_only_those_who_unsubscribed():
    body = json.dumps(
        {
            "Contacts": [
                contact("francoise@example.org", alliances="OPT_OUT"),
                contact("audrey@example.org", all_=True, alliances="OPT_IN"),
                contact("zoe@example.net", alliances="OPT_IN", evenements="OPT_OUT"),
                contact("jean@example.com"),  # no preference of its own: the topic's default, not an unsubscribe
            ],
            "NextToken": "page-2",
        }
    ).encode()
    events, token = parse_contacts(body, "alliances")
    assert token == "page-2"
    assert [(e.kind, e.email) for e in events] == [
        ("unsubscribed", "francoise@example.org"),
        ("unsubscribed", "audrey@example.org"),
    ]
    assert "topic alliances" in events[0].detail and "every topic" in events[1].detail
    assert events[0].at == datetime.fromtimestamp(1713000000, UTC)
    # Without a topic: UnsubscribeAll, or every preference the contact states is OPT_OUT.
    events, _ = parse_contacts(body, None)
    assert [e.email for e in events] == ["francoise@example.org", "audrey@example.org"]
    with pytest.raises(ValueError, match="contact 0 has no EmailAddress"):
        parse_contacts(b'{"Contacts": [{"UnsubscribeAll": true}]}', "alliances")


def test_whoever_left_through_ses_is_unsubscribed_before_a_send(tmp_path):
    """sending.ready(): GetContactList, then the account suppression list and every page of ListContacts into the
    store. The contact list is read without a Filter (the API does not say how one treats UnsubscribeAll)."""
    from newsletter.sending.wiring import ready
    from newsletter.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'newsletter.db'}")
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", "Le bulletin des Alliances", connection=connection)
        for recipient in RECIPIENTS:
            store.subscribe(list_id, recipient.email, recipient.name, {}, "import", connection=connection)
    pages = [
        {"Contacts": [contact("francoise@example.org", alliances="OPT_OUT")], "NextToken": "AYADeO+page/2=="},
        {"Contacts": [contact("zoe@example.net", all_=True), contact("jean@example.com", alliances="OPT_IN")]},
    ]
    with respx.mock:
        respx.get(LIST_URL).mock(return_value=httpx.Response(200, json=get_contact_list(("alliances", "OPT_IN"))))
        respx.get(url__startswith=SUPPRESSED_URL).mock(
            return_value=httpx.Response(200, json={"SuppressedDestinationSummaries": []})
        )
        contacts = respx.post(CONTACTS_URL).mock(side_effect=[httpx.Response(200, json=page) for page in pages])
        run(lambda transport: ready(store, transport, list_id))
        assert [json.loads(call.request.content) for call in contacts.calls] == [{}, {"NextToken": "AYADeO+page/2=="}]
        assert all(call.request.headers["content-type"] == "application/json" for call in contacts.calls)
    statuses = {}
    with store.transaction() as connection:
        for recipient in RECIPIENTS:
            subscriber = store.find_subscriber(recipient.email, connection=connection)
            statuses[recipient.email] = store.membership(subscriber, "alliances")[2]
    store.close()
    assert statuses == {
        "francoise@example.org": "unsubscribed",
        "audrey@example.org": "subscribed",
        "zoe@example.net": "unsubscribed",
        "jean@example.com": "subscribed",
    }


def test_own_unsubscribe_reads_no_contact_list():
    async def collect(transport):
        return [event async for event in transport.suppressions()]

    with respx.mock:  # only the account suppression list is mocked: a contact-list call would fail
        respx.get(url__startswith=SUPPRESSED_URL).mock(
            return_value=httpx.Response(200, json={"SuppressedDestinationSummaries": []})
        )
        assert run(collect, OWN) == []
        run(lambda transport: transport.preflight(), OWN)
