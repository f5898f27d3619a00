"""Campaign statuses: every change goes through TRANSITIONS, refused when the table holds no such change; reads
never write; and the calling convention (a caller's connection is never committed for it)."""

from __future__ import annotations

import datetime as dt

import pytest

from newsletter.store import (
    TRANSITIONS,
    CampaignStatus,
    DeliveryStatus,
    MembershipStatus,
    Store,
    allowed_from,
    campaigns,
    now,
)
from newsletter.subscribers import add


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    for number in range(3):
        add(store, "alliances", f"p{number}@example.org", None)
    yield store
    store.close()


def test_the_statuses_keep_the_strings_the_schema_and_json_have():
    assert [str(s) for s in MembershipStatus] == [
        "subscribed",
        "pending",
        "unsubscribed",
        "bounced",
        "complained",
        "nonsubscribed",
    ]
    assert [str(s) for s in DeliveryStatus] == ["pending", "sent", "failed", "skipped"]
    assert [str(s) for s in CampaignStatus] == [
        "scheduled",
        "running",
        "paused",
        "finished",
        "cancelled",
        "expired",
        "awaiting-approval",
        "declined",
    ]


def test_the_table_allows_what_pause_resume_and_cancel_always_allowed():
    running, scheduled, paused = CampaignStatus.RUNNING, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED
    assert set(allowed_from(paused, "pause")) == {running, scheduled}
    assert allowed_from(running, "resume") == allowed_from(scheduled, "resume") == (paused,)
    awaiting = CampaignStatus.AWAITING_APPROVAL
    assert set(allowed_from(CampaignStatus.CANCELLED, "cancel")) == {running, scheduled, paused, awaiting}
    assert allowed_from(running, "start") == (scheduled,) and allowed_from(running, "resume") != (scheduled,)
    finals = (CampaignStatus.FINISHED, CampaignStatus.CANCELLED, CampaignStatus.EXPIRED, CampaignStatus.DECLINED)
    assert not [before for before, _ in TRANSITIONS if before in finals]  # a final status never changes again


def test_a_change_the_table_does_not_hold_is_refused(store):
    list_id = store.list_id("alliances")
    campaign_id = store.create_campaign(list_id, "issue", "hash", "Sujet")
    assert store.change_campaign_status(campaign_id, CampaignStatus.PAUSED, "pause")
    assert not store.change_campaign_status(campaign_id, CampaignStatus.PAUSED, "pause")  # already paused
    assert not store.change_campaign_status(campaign_id, CampaignStatus.FINISHED, "resume")  # no such change
    assert store.change_campaign_status(campaign_id, CampaignStatus.CANCELLED, "cancel")
    assert not store.change_campaign_status(campaign_id, CampaignStatus.RUNNING, "resume")  # cancelled for good
    row = store.campaign(campaign_id)
    assert row.status == CampaignStatus.CANCELLED and row.finished_at is not None


def test_campaign_list_only_reads_and_expire_overdue_expires(store):
    list_id = store.list_id("alliances")
    past = now() - dt.timedelta(hours=2)
    campaign_id = store.create_campaign(
        list_id, "issue", "hash", "Sujet", {}, scheduled_at=past, expires_at=past + dt.timedelta(hours=1)
    )
    assert [row.status for row, _, _ in store.campaign_list()] == [CampaignStatus.SCHEDULED]  # shown, unchanged
    assert store.campaign(campaign_id).status == CampaignStatus.SCHEDULED
    assert store.expire_overdue() == [campaign_id]
    (row, slug, counts), *_ = store.campaign_list(list_id)
    assert (row.status, slug, counts) == (CampaignStatus.EXPIRED, "alliances", dict.fromkeys(DeliveryStatus, 0))
    assert store.start_due() == []  # expired: never started


def test_a_write_given_the_callers_connection_commits_only_with_it(store):
    list_id = store.list_id("alliances")

    class Undone(Exception):
        pass

    with pytest.raises(Undone), store.transaction() as connection:
        campaign_id = store.create_campaign(list_id, "issue", "hash", "Sujet", connection=connection)
        assert store.counts(campaign_id, connection=connection)[DeliveryStatus.PENDING] == 3  # seen in it
        raise Undone
    with store.engine.connect() as connection:
        assert connection.execute(campaigns.select()).first() is None  # rolled back with the caller's transaction
    assert store.campaign_list() == []
