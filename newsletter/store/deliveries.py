"""One person's deliveries, for "why did X not get it?" (newsletter/delivery.py makes the report of them): the
subscriber or their erasure, their memberships and events, the latest campaigns of the lists they are or were on,
their ledger rows in those campaigns, and the earlier campaigns of the same content that reached them.

A handful of queries, each by an index that starts with the person or the campaign: the subscriber by email_key,
memberships and events by subscriber_id, the ledger by its key (campaign_id, subscriber_id) for the few campaigns
concerned, never by the person alone (no index starts with subscriber_id), campaigns by id and by issue
(campaigns_by_issue). Nothing scans the ledger, the events or the memberships;
the one scan is of campaigns for the latest of the person's lists (a table of one row per send).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.engine import StoreBase, _aware
from newsletter.store.schema import address_hash, campaigns, deliveries, events, lists, memberships, subscribers
from newsletter.store.schema import suppressions as suppressions_table


@dataclass(frozen=True)
class MembershipFact:
    list_id: int
    list: str  # its slug
    status: str
    updated_at: dt.datetime
    joined_at: dt.datetime | None


@dataclass(frozen=True)
class EventFact:
    at: dt.datetime
    list_id: int | None
    kind: str
    source: str
    detail: dict


@dataclass(frozen=True)
class CampaignFact:
    id: int
    list_id: int
    list: str  # its slug
    issue_slug: str
    subject: str
    content_hash: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    segment: str | None  # the frozen segment's expression; None: the whole list
    segment_name: str | None


@dataclass(frozen=True)
class LedgerFact:
    """The person's ledger row of one campaign."""

    campaign_id: int
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    provider_id: str | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class EarlierFact:
    """A ledger row of the person in a campaign of an issue shown (the same content sent earlier, maybe)."""

    campaign_id: int
    list_id: int
    issue_slug: str
    content_hash: str
    started_at: dt.datetime
    status: str
    updated_at: dt.datetime


@dataclass
class PersonDeliveries:
    """What the store holds of one address's deliveries. erased_at: the person was erased at their request then,
    and nothing else is held (subscriber_id is None)."""

    email: str
    subscriber_id: int | None = None
    name: str | None = None
    erased_at: dt.datetime | None = None
    memberships: list[MembershipFact] = field(default_factory=list)
    events: list[EventFact] = field(default_factory=list)  # oldest first
    campaigns: list[CampaignFact] = field(default_factory=list)  # newest first, at most `limit`
    more: bool = False  # older campaigns of these lists exist
    ledger: dict[int, LedgerFact] = field(default_factory=dict)  # by campaign, for the campaigns above
    earlier: list[EarlierFact] = field(default_factory=list)  # rows in other campaigns of the same issues


class Deliveries(StoreBase):
    def person_deliveries(
        self, email: str, limit: int = 10, *, connection: Connection | None = None
    ) -> PersonDeliveries | None:
        """The facts of one address's deliveries over the latest `limit` campaigns (started, newest first) of the
        lists they are or were on; None when the address is unknown and was never erased."""
        key = email.strip().lower()
        with self._reading(connection) as reading:
            person = reading.execute(
                sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.lang).where(
                    subscribers.c.email_key == key
                )
            ).first()
            if person is None:
                erased = reading.execute(
                    sa.select(suppressions_table.c.at).where(suppressions_table.c.email_hash == address_hash(key))
                ).scalar()
                return PersonDeliveries(email.strip(), erased_at=_aware(erased)) if erased is not None else None
            found = PersonDeliveries(person.email, person.id, person.name)
            found.memberships.extend(_memberships(reading, person.id))
            found.events.extend(_events(reading, person.id))
            list_ids = {m.list_id for m in found.memberships} | {e.list_id for e in found.events if e.list_id}
            shown = _latest_campaigns(reading, sorted(list_ids), limit + 1, person.lang)
            found.campaigns.extend(shown[:limit])
            found.more = len(shown) > limit
            ids = [c.id for c in found.campaigns]
            found.ledger.update((row.campaign_id, row) for row in _ledger(reading, person.id, ids))
            missing = [c for c in found.campaigns if c.id not in found.ledger]
            if missing:  # why they were not in its audience: had an earlier campaign of the same content reached them?
                found.earlier.extend(_earlier(reading, person.id, sorted({c.issue_slug for c in missing})))
        return found


def _memberships(connection: Connection, subscriber_id: int) -> list[MembershipFact]:
    rows = connection.execute(
        sa.select(
            memberships.c.list_id, lists.c.slug, memberships.c.status, memberships.c.updated_at, memberships.c.joined_at
        )
        .join(lists, lists.c.id == memberships.c.list_id)
        .where(memberships.c.subscriber_id == subscriber_id)
        .order_by(lists.c.slug)
    ).all()
    return [MembershipFact(r.list_id, r.slug, r.status, _aware(r.updated_at), _aware(r.joined_at)) for r in rows]


def _events(connection: Connection, subscriber_id: int) -> list[EventFact]:
    rows = connection.execute(
        sa.select(events.c.at, events.c.list_id, events.c.kind, events.c.source, events.c.detail)
        .where(events.c.subscriber_id == subscriber_id)
        .order_by(events.c.at, events.c.id)
    ).all()
    return [EventFact(_aware(r.at), r.list_id, r.kind, r.source, r.detail or {}) for r in rows]


def _latest_campaigns(
    connection: Connection, list_ids: list[int], count: int, lang: str | None = None
) -> list[CampaignFact]:
    """The latest `count` campaigns of these lists that started, newest first, welcome emails left out (a person's
    is in `subscribers show`); the segment read from the frozen content of those only (the inner query picks them
    without reading any content), and the subject the person got: their language's version's where the campaign
    has one (lang: theirs), else the campaign's."""
    if not list_ids:
        return []
    subject: sa.ColumnElement[str] = campaigns.c.subject
    if lang is not None:
        subject = sa.func.coalesce(campaigns.c.content[("versions", lang, "subject")].as_string(), subject)
    latest = (
        sa.select(campaigns.c.id)
        .where(campaigns.c.list_id.in_(list_ids), campaigns.c.started_at.is_not(None), ~campaigns.c.welcome)
        .order_by(campaigns.c.started_at.desc(), campaigns.c.id.desc())
        .limit(count)
    )
    rows = connection.execute(
        sa.select(
            campaigns.c.id,
            campaigns.c.list_id,
            lists.c.slug,
            campaigns.c.issue_slug,
            subject.label("subject"),
            campaigns.c.content_hash,
            campaigns.c.status,
            campaigns.c.started_at,
            campaigns.c.finished_at,
            campaigns.c.content["segment"].as_string().label("segment"),
            campaigns.c.content["segment_name"].as_string().label("segment_name"),
        )
        .join(lists, lists.c.id == campaigns.c.list_id)
        .where(campaigns.c.id.in_(latest.scalar_subquery()))
        .order_by(campaigns.c.started_at.desc(), campaigns.c.id.desc())
    ).all()
    return [
        CampaignFact(
            r.id,
            r.list_id,
            r.slug,
            r.issue_slug,
            r.subject,
            r.content_hash,
            r.status,
            _aware(r.started_at),
            _aware(r.finished_at),
            r.segment or None,
            r.segment_name or None,
        )
        for r in rows
    ]


def _ledger(connection: Connection, subscriber_id: int, campaign_ids: list[int]) -> list[LedgerFact]:
    """The person's rows in these campaigns: one lookup of the ledger's key per campaign."""
    if not campaign_ids:
        return []
    rows = connection.execute(
        sa.select(
            deliveries.c.campaign_id,
            deliveries.c.status,
            deliveries.c.attempts,
            deliveries.c.next_attempt_at,
            deliveries.c.last_error,
            deliveries.c.provider_id,
            deliveries.c.updated_at,
        ).where(deliveries.c.campaign_id.in_(campaign_ids), deliveries.c.subscriber_id == subscriber_id)
    ).all()
    return [
        LedgerFact(
            r.campaign_id,
            r.status,
            r.attempts,
            _aware(r.next_attempt_at),
            r.last_error,
            r.provider_id,
            _aware(r.updated_at),
        )
        for r in rows
    ]


def _earlier(connection: Connection, subscriber_id: int, issue_slugs: list[str]) -> list[EarlierFact]:
    """The person's rows in every started campaign of these issues, a welcome among them (an audience leaves out
    whom a welcome sent the same content: campaigns.audience_filter): the campaigns by campaigns_by_issue, then their
    rows by the ledger's key (one statement each, so that neither engine reads the ledger by the person alone)."""
    found = connection.execute(
        sa.select(
            campaigns.c.id,
            campaigns.c.list_id,
            campaigns.c.issue_slug,
            campaigns.c.content_hash,
            campaigns.c.started_at,
        ).where(campaigns.c.issue_slug.in_(issue_slugs), campaigns.c.started_at.is_not(None))
    ).all()
    of = {r.id: r for r in found}
    return [
        EarlierFact(
            row.campaign_id,
            of[row.campaign_id].list_id,
            of[row.campaign_id].issue_slug,
            of[row.campaign_id].content_hash,
            _aware(of[row.campaign_id].started_at),
            row.status,
            row.updated_at,
        )
        for row in _ledger(connection, subscriber_id, sorted(of))
    ]
