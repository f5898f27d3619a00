"""SendGrid's hosted unsubscribe (`unsubscribe=provider&group=ID`): the DSN, the payload, preflight(), suppressions().

Sources of the bodies below:
- asm in the v3 Mail Send body, one integer group per send:
  https://www.twilio.com/docs/sendgrid/for-developers/sending-email/suppressions and the Mail Send reference
  (asm {"group_id": integer, "groups_to_display": [integer]});
- the group's tag <%asm_group_unsubscribe_raw_url%> ("When using our ASM Global or Group Unsubscribe tags, you must
  pass an unsubscribe group"): https://www.twilio.com/docs/sendgrid/ui/sending-email/global-unsubscribes;
- GET /v3/asm/groups/{group_id}: the group object {id, name, description, is_default, unsubscribes} of
  https://www.twilio.com/docs/sendgrid/api-reference/suppressions-unsubscribe-groups/get-information-on-a-single-suppression-group;
- GET /v3/asm/groups/{group_id}/suppressions: a JSON array of addresses,
  https://www.twilio.com/docs/sendgrid/api-reference/suppressions-suppressions/retrieve-all-suppressions-for-a-suppression-group;
- the 202 answer: tests/fixtures/sendgrid/accepted-202-headers.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
from pathlib import Path

import pytest
import respx
from sample_messages import RECIPIENTS

from newsletter.errors import NewsletterError
from newsletter.message import Recipient
from newsletter.render import RenderedIssue, Verbatim
from newsletter.transports import sendgrid, transport_from_dsn
from newsletter.transports._http import ApiTransport
from newsletter.transports.base import TransportError
from newsletter.transports.sendgrid import GROUP_PLACEHOLDER, SendgridTransport, build_payload, content_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid"
KEY = "SG.Secr3tKeyForTests.abc_DEF-123"
API = "https://api.sendgrid.com"
SEND = f"{API}/v3/mail/send"
GROUP = 12345
HOSTED = f"unsubscribe=provider&group={GROUP}"
ACCEPTED = json.loads((FIXTURES / "accepted-202-headers.json").read_text())
GROUP_ANSWER = {
    "id": GROUP,
    "name": "Le bulletin des Alliances",
    "description": "Le bulletin mensuel de l'Alliance pour la solidarité",
    "is_default": False,
    "unsubscribes": 1,
}


def transport(options: str = HOSTED) -> SendgridTransport:
    made = transport_from_dsn(f"sendgrid+api://{KEY}@default" + (f"?{options}" if options else ""))
    assert isinstance(made, SendgridTransport)
    return made


def run(made: SendgridTransport, call):
    async def go():
        try:
            return await call(made)
        finally:
            await made.aclose()

    return asyncio.run(go())


def replay(content: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with a personalization's substitutions: plain string replacement in the content."""
    for key, value in substitutions.items():
        content = content.replace(key, value)
    return content


@pytest.fixture
def hosted_messages(campaign):
    """The example issue's four messages, built for SendGrid's unsubscribe group GROUP."""
    hosted = dataclasses.replace(campaign, hosted=transport().hosted_unsubscribe)
    return [hosted.build(recipient) for recipient in RECIPIENTS]


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch) -> list[float]:
    waited: list[float] = []

    async def pause(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(ApiTransport, "pause", staticmethod(pause))
    return waited


# The DSN


def test_provider_with_a_group_uses_sendgrids_unsubscribe():
    made = transport()
    assert made.group_id == GROUP
    hosted = made.hosted_unsubscribe
    assert hosted is not None and hosted.provider == "sendgrid"
    assert hosted.url == "<%asm_group_unsubscribe_raw_url%>"
    assert hosted.fields == {"group_id": GROUP}
    assert f"unsubscribe group {GROUP}" in hosted.description
    assert transport(f"group={GROUP}&unsubscribe=provider&region=eu").hosted_unsubscribe == hosted
    assert transport(f"unsubscribe=provider&group={GROUP + 1}").hosted_unsubscribe != hosted  # another group


def test_the_default_is_our_own_links():
    assert transport("").hosted_unsubscribe is None and transport("").group_id is None
    assert transport("unsubscribe=own").hosted_unsubscribe is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "unsubscribe=provider",
            r"unsubscribe=provider needs group=ID, the number of an unsubscribe group \(no group=",
        ),
        ("unsubscribe=provider&group=0", r"needs group=ID.*\(group=0\)"),
        ("unsubscribe=provider&group=-3", r"needs group=ID.*\(group=-3\)"),
        ("unsubscribe=provider&group=abc", r"needs group=ID.*\(group=abc\)"),
        ("unsubscribe=provider&group=1.5", r"needs group=ID.*\(group=1.5\)"),
        ("unsubscribe=provider&group=%C2%B2", r"needs group=ID"),  # "²" is a digit to str.isdigit, not to int()
        (f"group={GROUP}", r"\?group=…: an unsubscribe group goes with SendGrid's hosted unsubscribe"),
        (f"unsubscribe=own&group={GROUP}", r"goes with SendGrid's hosted unsubscribe"),
        ("unsubscribe=sendgrid&group=1", r"\?unsubscribe=sendgrid: use one of own, provider"),
        ("asm_group=1", r"asm_group=…: unknown option"),
    ],
)
def test_dsn_errors(options, message):
    with pytest.raises(NewsletterError, match=message) as error:
        transport(options)
    assert KEY not in str(error.value) and "\n" not in str(error.value)


# The payload


@respx.mock
def test_payload_carries_the_group_and_its_tag_in_both_parts(hosted_messages):
    """asm.group_id is the group; the content has the tag literally as the footer's href and in the text part; it is
    no substitution (the same for everyone); no List-Unsubscribe of ours; subscription tracking stays off."""
    route = respx.post(SEND).respond(202, headers=ACCEPTED)
    outcomes = run(transport(), lambda t: t.send_batch(hosted_messages))
    assert [o.status for o in outcomes] == ["sent"] * 4

    payload = json.loads(route.calls.last.request.content)
    assert payload["asm"] == {"group_id": GROUP, "groups_to_display": [GROUP]}
    assert isinstance(payload["asm"]["group_id"], int)  # "make sure to only use integers"
    assert payload["tracking_settings"]["subscription_tracking"] == {"enable": False}
    text, html_part = (part["value"] for part in payload["content"])
    assert f'<a href="{GROUP_PLACEHOLDER}"' in html_part
    assert html.escape(GROUP_PLACEHOLDER) not in html_part  # not &lt;%…%&gt;
    assert f"Se désabonner : {GROUP_PLACEHOLDER}" in text
    for personalization, message in zip(payload["personalizations"], hosted_messages, strict=True):
        assert not any(GROUP_PLACEHOLDER in value for value in personalization["substitutions"].values())
        assert not any("unsubscribe_url" in key for key in personalization["substitutions"])
        assert set(personalization["headers"]) == {"List-Id"}
        assert replay(html_part, personalization["substitutions"]) == message.html
        assert replay(text, personalization["substitutions"]) == message.text
    assert b"List-Unsubscribe" not in route.calls.last.request.content
    assert b"/u/" not in route.calls.last.request.content  # no link of `newsletter serve`


def test_our_own_mode_sends_no_asm(messages):
    payload = build_payload(messages)
    assert "asm" not in payload
    assert "List-Unsubscribe" in payload["personalizations"][0]["headers"]


def test_build_payload_never_sends_our_headers_with_a_group(messages):
    payload = build_payload(messages, group_id=GROUP)
    assert not any(name.lower().startswith("list-unsubscribe") for name in payload["personalizations"][0]["headers"])


def test_the_tag_is_written_once_per_campaign_content(hosted_messages):
    """The Verbatim value goes into the cached content; other placeholders keep their keys, HTML-escaped values."""
    fixed = sendgrid.fixed_values(hosted_messages[0])
    assert fixed == (("unsubscribe_url", GROUP_PLACEHOLDER),)
    content = content_for(hosted_messages[0].body, fixed)
    assert ("unsubscribe_url", "") not in content.html_keys and ("unsubscribe_url", "") not in content.text_keys
    assert ("view_online_url", "") in content.html_keys


def test_a_name_is_still_escaped_beside_the_tag(campaign):
    """Per-recipient values stay substitutions, HTML-escaped in the HTML part (escape_value), raw in the text."""
    rendered = RenderedIssue(
        "2026-04",
        "fr",
        "L’infolettre d’avril",
        "",
        '<p>Bonjour %%name%%,</p><a href="%%unsubscribe_url%%">Se désabonner</a>',
        "Bonjour %%name%%,\nSe désabonner : %%unsubscribe_url%%\n",
        {},
    )
    hosted = dataclasses.replace(campaign, rendered=rendered, hosted=transport().hosted_unsubscribe)
    message = hosted.build(Recipient(7, "zoe@example.net", "Zoé <Côté> & Bœuf"))
    payload = build_payload([message], group_id=GROUP)
    text, html_part = (part["value"] for part in payload["content"])
    subs = payload["personalizations"][0]["substitutions"]
    assert replay(html_part, subs) == message.html
    assert 'Bonjour Zoé &lt;Côté&gt; &amp; Bœuf,</p><a href="<%asm_group_unsubscribe_raw_url%>">' in message.html
    assert replay(text, subs) == "Bonjour Zoé <Côté> & Bœuf,\nSe désabonner : <%asm_group_unsubscribe_raw_url%>\n"


def test_messages_with_different_tags_cannot_share_a_request(hosted_messages):
    first, second = hosted_messages[:2]
    odd = dataclasses.replace(second, values={**second.values, "unsubscribe_url": Verbatim("<%asm_other%>")})
    with pytest.raises(ValueError, match="one unsubscribe placeholder"):
        build_payload([first, odd], group_id=GROUP)


@respx.mock
def test_a_message_without_the_tag_is_refused_and_nothing_is_sent(messages):
    """Messages built for our links through unsubscribe=provider: SendGrid would append its own footer of links."""
    route = respx.post(SEND).respond(202, headers=ACCEPTED)
    with pytest.raises(TransportError, match=r"lacks <%asm_group_unsubscribe_raw_url%>.*nothing was sent"):
        run(transport(), lambda t: t.send_batch(messages))
    assert route.call_count == 0


# preflight()

GROUP_URL = f"{API}/v3/asm/groups/{GROUP}"


@respx.mock
def test_preflight_finds_the_group():
    route = respx.get(GROUP_URL).respond(200, json=GROUP_ANSWER)
    run(transport(), lambda t: t.preflight())
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


@respx.mock
def test_preflight_refuses_an_unknown_group():
    respx.get(GROUP_URL).respond(404, json={"errors": [{"field": None, "message": "Unsubscribe Group not found"}]})
    with pytest.raises(NewsletterError, match=rf"SendGrid has no unsubscribe group {GROUP} in this account") as error:
        run(transport(), lambda t: t.preflight())
    assert not isinstance(error.value, TransportError) and "\n" not in str(error.value)


@respx.mock
def test_preflight_403_names_the_permission():
    respx.get(GROUP_URL).respond(403, json={"errors": [{"field": None, "message": "access forbidden"}]})
    with pytest.raises(TransportError, match=r"\(403: access forbidden\).*the unsubscribe group.*asm\.groups\.read"):
        run(transport(), lambda t: t.preflight())


@respx.mock
def test_preflight_retries_a_5xx_then_succeeds(no_pauses):
    route = respx.get(GROUP_URL).mock(
        side_effect=[respx.MockResponse(500, text="oops"), respx.MockResponse(200, json=GROUP_ANSWER)]
    )
    run(transport(), lambda t: t.preflight())
    assert route.call_count == 2 and no_pauses == [2.0]


@respx.mock
def test_preflight_does_nothing_for_our_own_links():
    run(transport(""), lambda t: t.preflight())  # respx would refuse any request


# suppressions()

LISTS = [f"{API}/v3/suppression/{name}" for name in ("bounces", "invalid_emails", "spam_reports", "unsubscribes")]


def sync(made: SendgridTransport):
    return run(made, lambda t: _collect(t.suppressions()))


async def _collect(events):
    return [event async for event in events]


@respx.mock
def test_suppressions_read_the_group_as_well_as_global_unsubscribes():
    for url in LISTS[:3]:
        respx.get(url).respond(200, content=b"[]")
    respx.get(LISTS[3]).respond(200, json=[{"created": 1443651141, "email": "global@example.org"}])
    group = respx.get(f"{GROUP_URL}/suppressions").respond(200, json=["parti@example.org", "Global@example.org"])
    events = sync(transport())
    assert group.call_count == 1
    assert [(e.kind, e.email) for e in events] == [
        ("unsubscribed", "global@example.org"),
        ("unsubscribed", "parti@example.org"),  # the same address on both lists is yielded once
    ]
    assert events[1].detail == f"unsubscribed from SendGrid unsubscribe group {GROUP}"


@respx.mock
def test_suppressions_without_a_group_do_not_read_any():
    for url in LISTS:
        respx.get(url).respond(200, content=b"[]")
    assert sync(transport("")) == []  # respx would refuse GET /v3/asm/…


@respx.mock
def test_a_malformed_group_answer_stops_the_sync():
    for url in LISTS:
        respx.get(url).respond(200, content=b"[]")
    respx.get(f"{GROUP_URL}/suppressions").respond(200, json={"suppressions": []})
    with pytest.raises(TransportError, match=r"could not be read: sendgrid /v3/asm/groups/12345/suppressions"):
        sync(transport())
