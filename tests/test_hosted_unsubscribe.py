"""A provider's hosted unsubscribe, on the side every transport shares: the messages, the frozen campaign, the
refusals. (Each provider's payload is tested with its adapter; a whole send in tests/test_send_hosted.py.)"""

from __future__ import annotations

import dataclasses

import pytest
from sample_messages import RECIPIENTS, example_campaign

from newsletter.config import load_config
from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe
from newsletter.sending.send import leaving_problem
from newsletter.sending.wiring import check_transport_fits
from newsletter.store import CampaignRow

POSTMARK = HostedUnsubscribe("postmark", "{{{ pm:unsubscribe }}}", "Postmark's unsubscribe page")
SENDGRID = HostedUnsubscribe("sendgrid", "<%asm_group_unsubscribe_raw_url%>", "SendGrid's group", {"group_id": 7})


class Transport:
    def __init__(self, hosted: HostedUnsubscribe | None):
        self.hosted_unsubscribe = hosted

    def __str__(self) -> str:
        return "fake+api://"


@pytest.mark.parametrize("hosted", [POSTMARK, SENDGRID])
def test_the_footer_carries_the_providers_placeholder_as_written_and_no_list_unsubscribe(hosted):
    campaign = dataclasses.replace(example_campaign(), hosted=hosted, view_online="https://org.example/nouvelles/x/")
    message = campaign.build(RECIPIENTS[0])
    assert "List-Unsubscribe" not in message.headers and "List-Unsubscribe-Post" not in message.headers
    assert message.headers["List-Id"]  # the list is still named
    assert f'href="{hosted.url}"' in message.html  # never HTML-escaped: < and > stay as the provider reads them
    assert hosted.url in message.text
    assert "/u/" not in message.html and "/u/" not in message.text  # no signed link of ours
    assert "https://org.example/nouvelles/x/" in message.html
    parsed = message.message  # the MIME form (outbox, SMTP) says the same
    assert parsed["List-Unsubscribe"] is None
    html = parsed.get_body(("html",)).get_content()
    assert f'href="{hosted.url}"' in html and hosted.url in parsed.get_body(("plain",)).get_content()


def test_without_a_provider_the_links_and_headers_are_ours():
    message = example_campaign().build(RECIPIENTS[0])
    assert message.headers["List-Unsubscribe"].startswith("<https://bulletin.crdbsl.example/u/")
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_campaign_goes_on_only_through_the_same_provider_and_settings():
    campaign = dataclasses.replace(example_campaign(), hosted=SENDGRID)
    check_transport_fits(campaign, Transport(SENDGRID))
    for other in (None, POSTMARK, dataclasses.replace(SENDGRID, fields={"group_id": 8})):
        with pytest.raises(NewsletterError, match="carries SendGrid's group"):
            check_transport_fits(campaign, Transport(other))
    with pytest.raises(NewsletterError, match="unsubscribe links of `newsletter serve`"):
        check_transport_fits(example_campaign(), Transport(POSTMARK))


def test_the_hosted_unsubscribe_is_frozen_with_the_campaign(example_workspace, monkeypatch):
    from newsletter.sending.frozen import thaw
    from newsletter.sending.send import Prepared
    from newsletter.store import ListRow
    from newsletter.tokens import TokenSigner
    from newsletter.workspace import Workspace

    workspace = Workspace.discover(example_workspace)
    campaign = example_campaign()
    prepared = Prepared(
        workspace, campaign.rendered, "fake+api://", None, "A <a@crdbsl.org>", TokenSigner("k" * 40), None, SENDGRID
    )
    content = prepared.freeze(ListRow(1, "alliances", "alliances")).to_json()
    row = CampaignRow(**{f.name: None for f in dataclasses.fields(CampaignRow)} | {"id": 5, "content": content})
    thawed = thaw(row, TokenSigner("k" * 40))
    assert thawed.hosted == SENDGRID
    assert thawed.build(RECIPIENTS[1]).headers.get("List-Unsubscribe") is None


def test_a_provider_needs_no_base_url_but_a_web_version(example_workspace):
    config = load_config(example_workspace)
    rendered = example_campaign().rendered
    config.base_url = config.archive_url = None
    assert "base_url is not set" in leaving_problem(config, rendered, None)
    assert "archive_url" in leaving_problem(config, rendered, POSTMARK)
    config.archive_url, config.asset_base_url = "https://org.example/nouvelles", "https://org.example/build"
    assert leaving_problem(config, rendered, POSTMARK) is None


def test_the_providers_unsubscribes_count_for_the_list_being_sent_its_bounces_for_every_list(tmp_path):
    import asyncio

    from newsletter.sending.wiring import ready
    from newsletter.store import Store
    from newsletter.transports.base import DeliveryEvent

    class Provider(Transport):
        scheme = "fake+api"
        checked = False

        async def preflight(self):
            self.checked = True

        async def suppressions(self):
            yield DeliveryEvent("unsubscribed", "marie@example.org", detail="left through the provider's page")
            yield DeliveryEvent("bounced", "luc@example.org", detail="550 5.1.1")

    store = Store.open(f"sqlite:///{tmp_path / 'newsletter.db'}")
    with store.transaction() as connection:
        sent, other = (store.ensure_list(slug, None, connection=connection) for slug in ("alliances", "membres"))
        for list_id in (sent, other):
            for address in ("marie@example.org", "luc@example.org"):
                store.subscribe(list_id, address, None, {}, "import", connection=connection)
    provider = Provider(POSTMARK)
    asyncio.run(ready(store, provider, sent))
    with store.transaction() as connection:
        marie, luc = (store.find_subscriber(a, connection=connection) for a in ("marie@example.org", "luc@example.org"))
    people = (("marie", marie), ("luc", luc))
    statuses = {
        (who, slug): store.membership(subscriber, slug)[2]
        for who, subscriber in people
        for slug in ("alliances", "membres")
    }
    store.close()
    assert provider.checked
    assert statuses == {
        ("marie", "alliances"): "unsubscribed",
        ("marie", "membres"): "subscribed",
        ("luc", "alliances"): "bounced",
        ("luc", "membres"): "bounced",
    }
