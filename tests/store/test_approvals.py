"""A person's approval of a campaign, in the store: awaiting approval it is frozen and never started or claimed;
decisions are single-use, bound to their campaign, refused when expired or forged; one decline declines; `required`
distinct approvals approve; concurrent decisions have exactly one winner; every step is an event."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from newsletter.store import CampaignStatus, Store, now
from newsletter.store.engine import create_engine
from newsletter.subscribers import add

LATER = dt.timedelta(hours=48)


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    for number in range(3):
        add(store, "alliances", f"p{number}@example.org", None)
    yield store
    store.close()


def awaiting(store, scheduled_at=None):
    list_id = store.list_id("alliances")
    return store.create_campaign(
        list_id, "issue", "hash", "Sujet", {"subject": "Sujet"}, scheduled_at=scheduled_at, awaiting_approval=True
    )


def ask(store, campaign_id, approvers=("direction@example.org",), required=1, expires_at=None):
    return store.request_approval(
        campaign_id,
        approvers,
        requested_by="agent via MCP",
        content_digest="digest",
        expires_at=expires_at or now() + LATER,
        required=required,
        ip_hash="iphash",
    )


def ledger_size(store, campaign_id):
    with store.engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(*) FROM deliveries WHERE campaign_id = :c"), {"c": campaign_id}
        ).scalar()


def test_awaiting_approval_is_frozen_without_a_ledger_and_never_started_or_claimed(store):
    campaign_id = awaiting(store)
    row = store.campaign(campaign_id)
    assert row.status == CampaignStatus.AWAITING_APPROVAL and row.content == {"subject": "Sujet"}
    assert row.started_at is None and ledger_size(store, campaign_id) == 0
    assert store.start_due(now() + LATER) == []
    assert store.claim(campaign_id, row.list_id, "sender#1", 10, 60) is None
    assert store.campaign_ids(CampaignStatus.RUNNING) == []
    assert not store.is_running(campaign_id)
    assert store.expire_overdue() == []  # not asked yet: it waits for its requests


def test_approval_starts_it_with_its_audience_then_or_schedules_it(store):
    campaign_id = awaiting(store)
    ((request_id, nonce),) = ask(store, campaign_id)
    result = store.decide(request_id, nonce, "approved", by="direction@example.org", campaign_id=campaign_id)
    assert (result.outcome, result.status) == ("approved", CampaignStatus.RUNNING)
    row = store.campaign(campaign_id)
    assert row.status == CampaignStatus.RUNNING and row.started_at is not None
    assert ledger_size(store, campaign_id) == 3

    later = awaiting(store, scheduled_at=now() + dt.timedelta(hours=2))
    ((request_id, nonce),) = ask(store, later)
    assert store.decide(request_id, nonce, "approved", by="d").status == CampaignStatus.SCHEDULED
    assert ledger_size(store, later) == 0 and store.campaign(later).started_at is None


def test_single_use_wrong_nonce_other_campaign_and_expiry_change_nothing(store):
    campaign_id, other = awaiting(store), awaiting(store)
    ((request_id, nonce),) = ask(store, campaign_id, ["a@example.org", "b@example.org"], required=2)[:1]
    assert store.decide(request_id, "forged", "approved", by="a").outcome == "wrong-nonce"
    assert store.decide(request_id, nonce, "approved", by="a", campaign_id=other).outcome == "other-campaign"
    assert store.decide(10_000, nonce, "approved", by="a").outcome == "unknown"
    assert store.decide(request_id, nonce, "approved", by="a").outcome == "counted"
    assert store.decide(request_id, nonce, "approved", by="a").outcome == "used"  # a replay
    assert store.decide(request_id, nonce, "declined", by="a").outcome == "used"
    assert store.campaign(campaign_id).status == CampaignStatus.AWAITING_APPROVAL

    ((late_id, late_nonce),) = ask(store, other, expires_at=now() + dt.timedelta(minutes=1))
    result = store.decide(late_id, late_nonce, "approved", by="a", at=now() + dt.timedelta(minutes=2))
    assert result.outcome == "expired" and store.campaign(other).status == CampaignStatus.AWAITING_APPROVAL
    assert store.expire_overdue(now() + dt.timedelta(minutes=2)) == [other]
    assert store.campaign(other).status == CampaignStatus.EXPIRED
    assert store.decide(late_id, late_nonce, "approved", by="a").outcome in ("closed", "expired")


def test_two_approvals_required_and_one_decline_wins(store):
    campaign_id = awaiting(store)
    (a_id, a_nonce), (b_id, b_nonce) = ask(store, campaign_id, ["a@example.org", "b@example.org"], required=2)
    assert store.decide(a_id, a_nonce, "approved", by="a").outcome == "counted"
    assert store.decide(b_id, b_nonce, "approved", by="b").outcome == "approved"
    assert store.campaign(campaign_id).status == CampaignStatus.RUNNING

    declined = awaiting(store)
    (a_id, a_nonce), (b_id, b_nonce) = ask(store, declined, ["a@example.org", "b@example.org"], required=2)
    assert store.decide(a_id, a_nonce, "approved", by="a").outcome == "counted"
    result = store.decide(b_id, b_nonce, "declined", by="b", comment="Le titre est faux")
    assert (result.outcome, result.status) == ("declined", CampaignStatus.DECLINED)
    row = store.campaign(declined)
    assert row.status == CampaignStatus.DECLINED and row.finished_at is not None
    assert store.approval_request(b_id).comment == "Le titre est faux"
    assert ledger_size(store, declined) == 0
    assert not store.change_campaign_status(declined, CampaignStatus.RUNNING, "approve")  # final


def test_the_transitions_allowed_and_refused(store):
    campaign_id = awaiting(store)
    assert not store.change_campaign_status(campaign_id, CampaignStatus.RUNNING, "resume")
    assert not store.change_campaign_status(campaign_id, CampaignStatus.PAUSED, "pause")
    assert store.change_campaign_status(campaign_id, CampaignStatus.CANCELLED, "cancel")
    with pytest.raises(ValueError, match="not awaiting approval"):
        ask(store, campaign_id)
    running = store.create_campaign(store.list_id("alliances"), "issue", "hash", "Sujet")
    with pytest.raises(ValueError, match="not awaiting approval"):
        ask(store, running)


def test_concurrent_decisions_have_exactly_one_winner(store):
    campaign_id = awaiting(store)
    requests = ask(store, campaign_id, [f"a{n}@example.org" for n in range(4)])
    # Each request decided twice at once, and four requests of one campaign: one decision only moves it.
    attempts = [
        (request_id, nonce, "approved" if n % 2 else "declined") for n, (request_id, nonce) in enumerate(requests)
    ] * 2
    barrier = threading.Barrier(len(attempts))
    outcomes: list[str] = []

    def decide(request_id, nonce, decision):
        barrier.wait()
        outcomes.append(store.decide(request_id, nonce, decision, by="someone").outcome)

    threads = [threading.Thread(target=decide, args=attempt) for attempt in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o in ("approved", "declined", "counted")]
    assert len(winners) == 1, outcomes
    assert set(outcomes) - set(winners) <= {"used", "closed"}
    assert store.campaign(campaign_id).status in (CampaignStatus.RUNNING, CampaignStatus.DECLINED)
    used = [r for r in store.approval_requests(campaign_id) if r.used_at is not None]
    assert len(used) == 1


def test_every_request_view_and_decision_is_an_event(store):
    campaign_id = awaiting(store)
    (a_id, a_nonce), (b_id, _) = ask(store, campaign_id, ["a@example.org", "b@example.org"])
    store.record_campaign_event(campaign_id, "approval-viewed", {"request": a_id, "by": "a", "ip_hash": "h"})
    store.decide(b_id, "forged", "approved", by="b", ip_hash="h2")
    store.decide(a_id, a_nonce, "declined", by="a", comment="non", ip_hash="h3")
    events = store.campaign_events(campaign_id)
    assert [e.kind for e in events] == [
        "approval-requested",
        "approval-requested",
        "approval-viewed",
        "decision-refused",
        "declined",
    ]
    assert events[0].detail["by"] == "agent via MCP" and events[0].detail["ip_hash"] == "iphash"
    assert events[3].detail["reason"] == "wrong-nonce"
    assert events[4].detail == {"request": a_id, "by": "a", "ip_hash": "h3", "comment": "non"}


def test_the_migration_from_version_6_keeps_the_campaigns_and_widens_the_status(database_url):
    Store.open(database_url, upgrade=True).close()
    engine = create_engine(database_url)
    with engine.begin() as connection:  # the database as version 6 left it
        connection.exec_driver_sql("DELETE FROM schema_version WHERE version >= 7")
        connection.exec_driver_sql("DROP TABLE approval_requests")
        connection.exec_driver_sql("DROP TABLE campaign_events")
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ALTER TABLE campaigns ALTER COLUMN status TYPE VARCHAR(16)")
    engine.dispose()
    store = Store(create_engine(database_url))
    assert store.version() == 6
    add(store, "alliances", "a@example.org", None)
    kept = store.create_campaign(store.list_id("alliances"), "issue", "hash", "Sujet")
    assert store.upgrade() == [7, 8, 9, 12]
    assert store.campaign(kept).status == CampaignStatus.RUNNING
    inspector = sa.inspect(store.engine)
    assert inspector.has_table("approval_requests") and inspector.has_table("campaign_events")
    campaign_id = awaiting(store)  # 17 characters: PostgreSQL refused it before
    assert store.campaign(campaign_id).status == CampaignStatus.AWAITING_APPROVAL
    store.close()
