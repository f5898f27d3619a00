"""Campaigns: one issue sent to one list, a unit of work that any sender on any host can pick up. Made scheduled
(its audience fixed when it starts) or running (its ledger fixed at once), then moved between statuses only as
TRANSITIONS allows, by what it names; and read back for `campaigns`, `status` and the public archive.

A list's welcome email is a campaign too (campaigns.welcome, made by welcomes.py), running from the start and
never finished: the reads here leave it out (latest_campaign, campaign_list, sent_issues, sent_content) unless
asked for it, so that no send resumes it, no list of sends counts it and the archive lists none.

The ledger itself (the rows of one campaign, and the queue they make) is ledger.py's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.engine import StoreBase, _aware, now
from newsletter.store.schema import approval_requests, campaigns, deliveries, lists, memberships, subscribers
from newsletter.store.statuses import CampaignStatus, DeliveryStatus, MembershipStatus, delivery_counts


@dataclass(frozen=True)
class CampaignRow:
    id: int
    list_id: int
    issue_slug: str
    content_hash: str
    subject: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    status: CampaignStatus = CampaignStatus.RUNNING
    scheduled_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    content: dict | None = None  # what every message shares, frozen when the campaign was made
    welcome: bool = False  # a list's welcome email (welcomes.py): never finished, a row per person who joins


# Every change of a campaign's status, and the one action that may make it: (from, to) → action; from None, a
# campaign being made. Every status change below goes through this table; one it does not hold is refused.
TRANSITIONS: dict[tuple[CampaignStatus | None, CampaignStatus], str] = {
    (None, CampaignStatus.SCHEDULED): "create",  # its audience fixed when it starts
    (None, CampaignStatus.RUNNING): "create",  # its audience fixed at once
    (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING): "start",  # start_due: its time has come
    (CampaignStatus.SCHEDULED, CampaignStatus.EXPIRED): "expire",  # expire_overdue: nobody started it in time
    (CampaignStatus.RUNNING, CampaignStatus.FINISHED): "finish",  # finish_if_done: no pending row left
    (CampaignStatus.RUNNING, CampaignStatus.PAUSED): "pause",
    (CampaignStatus.SCHEDULED, CampaignStatus.PAUSED): "pause",
    (CampaignStatus.PAUSED, CampaignStatus.RUNNING): "resume",  # paused once it had started
    (CampaignStatus.PAUSED, CampaignStatus.SCHEDULED): "resume",  # paused before it started
    (CampaignStatus.RUNNING, CampaignStatus.CANCELLED): "cancel",
    (CampaignStatus.SCHEDULED, CampaignStatus.CANCELLED): "cancel",
    (CampaignStatus.PAUSED, CampaignStatus.CANCELLED): "cancel",
    # A person's approval (approvals.py): frozen, no audience until it is approved and starts.
    (None, CampaignStatus.AWAITING_APPROVAL): "request",
    (CampaignStatus.AWAITING_APPROVAL, CampaignStatus.SCHEDULED): "approve",  # its time is still to come
    (CampaignStatus.AWAITING_APPROVAL, CampaignStatus.RUNNING): "approve",  # its audience fixed then
    (CampaignStatus.AWAITING_APPROVAL, CampaignStatus.DECLINED): "decline",
    (CampaignStatus.AWAITING_APPROVAL, CampaignStatus.CANCELLED): "cancel",
    (CampaignStatus.AWAITING_APPROVAL, CampaignStatus.EXPIRED): "expire",  # the requests lapsed, or its time passed
}
FINAL = (  # finished_at is set
    CampaignStatus.FINISHED,
    CampaignStatus.CANCELLED,
    CampaignStatus.EXPIRED,
    CampaignStatus.DECLINED,
)


def allowed_from(to: str, action: str) -> tuple[CampaignStatus, ...]:
    """The statuses from which `action` may move a campaign to `to`, as TRANSITIONS has them; () when none."""
    return tuple(
        before for (before, after), made_by in TRANSITIONS.items() if before and after == to and made_by == action
    )


def _move(to: CampaignStatus, action: str, at: dt.datetime) -> sa.Update:
    """The UPDATE that moves campaigns to `to` by `action`, only those in a status TRANSITIONS lets it move from
    (callers add which campaigns): so that two processes at once never both make one change."""
    values: dict[str, Any] = {"status": to}
    if to in FINAL:
        values["finished_at"] = at
    return campaigns.update().where(campaigns.c.status.in_(allowed_from(to, action))).values(**values)


def _campaign(row: Any) -> CampaignRow | None:
    if row is None:
        return None
    return CampaignRow(
        row.id,
        row.list_id,
        row.issue_slug,
        row.content_hash,
        row.subject,
        _aware(row.created_at),
        _aware(row.finished_at),
        CampaignStatus(row.status),
        _aware(row.scheduled_at),
        _aware(row.expires_at),
        _aware(row.started_at),
        row.content,
        bool(row.welcome),
    )


# Built once: claim asks it, and a sender with every write of outcomes (a select built each time was a fifth of the
# cost of a send).
_CAMPAIGN_STATUS = sa.select(campaigns.c.status).where(campaigns.c.id == sa.bindparam("c_id"))


def audience_filter(
    connection: Connection,
    list_id: int,
    segment: str | None,
    issue_slug: str,
    content_hash: str,
    campaign_id: int | None = None,
    *,
    not_sent_already: bool = True,
) -> list[sa.ColumnElement[bool]]:
    """Who a campaign of this content goes to, as conditions on memberships: subscribed to the list (the consent
    predicate, always), in the segment (which can only narrow it), and not already sent, or about to be sent, this
    same content by an earlier campaign of the issue to the list (a campaign to another segment, or a new one after
    a cancel): nobody gets the issue twice (not_sent_already=False: whoever got it already too)."""
    where: list[sa.ColumnElement[bool]] = [
        memberships.c.list_id == list_id,
        memberships.c.status == MembershipStatus.SUBSCRIBED,
    ]
    if segment:
        from newsletter.segments import parse
        from newsletter.store.segments import segment_clause

        where.append(segment_clause(parse(segment)))
    if not not_sent_already:
        return where
    earlier = _earlier_of_same_content(connection, list_id, issue_slug, content_hash, campaign_id)
    if earlier:
        got_it = sa.exists().where(
            deliveries.c.campaign_id.in_(earlier),
            deliveries.c.subscriber_id == memberships.c.subscriber_id,
            deliveries.c.status.in_((DeliveryStatus.SENT.value, DeliveryStatus.PENDING.value)),
        )
        where.append(~got_it)
    return where


def _earlier_of_same_content(
    connection: Connection, list_id: int, issue_slug: str, content_hash: str, campaign_id: int | None = None
) -> list[int]:
    """The campaigns of this content to this list that started (but campaign_id), the list's welcome emails among
    them: a send of the welcome's issue leaves out whoever its welcome reached with the same content."""
    return list(
        connection.execute(
            sa.select(campaigns.c.id).where(
                campaigns.c.issue_slug == issue_slug,
                campaigns.c.list_id == list_id,
                campaigns.c.content_hash == content_hash,
                campaigns.c.started_at.is_not(None),
                campaigns.c.id != (campaign_id or 0),
            )
        ).scalars()
    )


class Campaigns(StoreBase):
    def latest_campaign(
        self, issue_slug: str, list_id: int, segment: str | None = None, *, connection: Connection | None = None
    ) -> CampaignRow | None:
        """The latest campaign of the issue to the list and to that segment (None: the whole list); never a welcome."""
        query = (
            sa.select(campaigns)
            .where(campaigns.c.issue_slug == issue_slug, campaigns.c.list_id == list_id, ~campaigns.c.welcome)
            .order_by(campaigns.c.id.desc())
        )
        with self._reading(connection) as reading:
            for row in reading.execute(query):
                if (row.content or {}).get("segment") == segment:
                    return _campaign(row)
        return None

    def campaign(self, campaign_id: int, *, connection: Connection | None = None) -> CampaignRow | None:
        with self._reading(connection) as reading:
            return _campaign(reading.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first())

    def lock_list(self, list_id: int, *, connection: Connection) -> None:
        """Hold the list until the caller's transaction ends, so that two senders starting at once agree on one
        campaign (the one method that needs the caller's connection: a lock of its own would end at once).

        PostgreSQL locks the row; SQLite's write transaction (BEGIN IMMEDIATE) already excludes every other writer.
        """
        connection.execute(sa.select(lists.c.id).where(lists.c.id == list_id).with_for_update())

    def create_campaign(
        self,
        list_id: int,
        issue_slug: str,
        content_hash: str,
        subject: str,
        content: dict | None = None,
        *,
        scheduled_at: dt.datetime | None = None,
        expires_at: dt.datetime | None = None,
        awaiting_approval: bool = False,
        welcome: bool = False,
        connection: Connection | None = None,
    ) -> int:
        """A new campaign, its id: scheduled (its audience fixed when it starts), or running with its ledger at
        once (a pending row for every member subscribed now). awaiting_approval: neither, until a person approves
        it (approvals.py): its content frozen now, its audience fixed when it starts, as a scheduled one's.
        welcome: a list's welcome email (welcomes.py), running at once with no row: each newcomer's is queued."""
        at = now()
        if awaiting_approval:
            status, action = CampaignStatus.AWAITING_APPROVAL, "request"
        else:
            status, action = (CampaignStatus.SCHEDULED if scheduled_at else CampaignStatus.RUNNING), "create"
        assert TRANSITIONS.get((None, status)) == action
        starts_now = status == CampaignStatus.RUNNING
        assert starts_now or not welcome
        with self._writing(connection) as writing:
            campaign_id = writing.execute(
                campaigns.insert()
                .values(
                    list_id=list_id,
                    issue_slug=issue_slug,
                    content_hash=content_hash,
                    subject=subject,
                    created_at=at,
                    content=content or {},
                    status=status,
                    scheduled_at=scheduled_at,
                    expires_at=expires_at,
                    started_at=at if starts_now else None,
                    welcome=welcome,
                )
                .returning(campaigns.c.id)
            ).scalar_one()
            if starts_now and not welcome:
                self._fix_audience(writing, campaign_id, list_id, at)
        return campaign_id

    def _fix_audience(self, connection: Connection, campaign_id: int, list_id: int, at: dt.datetime) -> None:
        """The ledger: a pending row for every member of its audience at this instant (audience_filter)."""
        row = connection.execute(
            sa.select(campaigns.c.issue_slug, campaigns.c.content_hash, campaigns.c.content).where(
                campaigns.c.id == campaign_id
            )
        ).one()
        segment = (row.content or {}).get("segment")
        where = audience_filter(connection, list_id, segment, row.issue_slug, row.content_hash, campaign_id)
        audience = sa.select(
            sa.literal(campaign_id).label("campaign_id"),
            memberships.c.subscriber_id,
            sa.literal(DeliveryStatus.PENDING.value).label("status"),
            sa.literal(0).label("attempts"),
            sa.literal(at, sa.DateTime(timezone=True)).label("updated_at"),
        ).where(*where)
        connection.execute(
            deliveries.insert().from_select(
                ["campaign_id", "subscriber_id", "status", "attempts", "updated_at"], audience
            )
        )

    def count_audience(
        self,
        list_id: int,
        segment: str | None,
        issue_slug: str,
        content_hash: str,
        *,
        not_sent_already: bool = True,
        connection: Connection | None = None,
    ) -> int:
        """How many a new campaign of this content to this list (and segment) would go to now (audience_filter)."""
        with self._reading(connection) as reading:
            where = audience_filter(
                reading, list_id, segment, issue_slug, content_hash, not_sent_already=not_sent_already
            )
            return reading.execute(sa.select(sa.func.count()).select_from(memberships).where(*where)).scalar_one()

    def had_it_already(
        self, list_id: int, segment: str | None, issue_slug: str, content_hash: str, audience: int
    ) -> int:
        """How many of those a new campaign would go to (audience of them) are left out for having been sent this
        content already; 0 at once when no campaign sent it."""
        with self._reading(None) as reading:
            if not _earlier_of_same_content(reading, list_id, issue_slug, content_hash):
                return 0
        everyone = self.count_audience(list_id, segment, issue_slug, content_hash, not_sent_already=False)
        return everyone - audience

    def audience_languages(
        self, list_id: int, segment: str | None, issue_slug: str, content_hash: str
    ) -> dict[str | None, int]:
        """How many a new campaign would go to, by their language (None: no preference): a bilingual dry run's."""
        with self._reading(None) as reading:
            where = audience_filter(reading, list_id, segment, issue_slug, content_hash)
            rows = reading.execute(
                sa.select(subscribers.c.lang, sa.func.count())
                .select_from(memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id))
                .where(*where)
                .group_by(subscribers.c.lang)
            ).all()
        return {lang: count for lang, count in rows}

    def audience_sample(
        self,
        list_id: int,
        segment: str | None,
        issue_slug: str,
        content_hash: str,
        limit: int,
        *,
        connection: Connection | None = None,
    ) -> list[tuple[int, str, str | None, dict, str | None]]:
        """The first members (subscriber order) a new campaign would go to: (id, email, name, fields, lang)."""
        with self._reading(connection) as reading:
            where = audience_filter(reading, list_id, segment, issue_slug, content_hash)
            rows = reading.execute(
                sa.select(
                    subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.fields, subscribers.c.lang
                )
                .select_from(memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id))
                .where(*where)
                .order_by(memberships.c.subscriber_id)
                .limit(limit)
            ).all()
        return [(r.id, r.email, r.name, r.fields or {}, r.lang) for r in rows]

    def set_content(self, campaign_id: int, content: dict, *, connection: Connection | None = None) -> None:
        """Freeze the content of a campaign an earlier version started without it."""
        with self._writing(connection) as writing:
            writing.execute(
                campaigns.update()
                .where(campaigns.c.id == campaign_id, campaigns.c.content.is_(None))
                .values(content=content)
            )

    def expire_overdue(self, at: dt.datetime | None = None, *, connection: Connection | None = None) -> list[int]:
        """Scheduled campaigns that nobody started before expires_at become expired, never to be sent; and so do
        those awaiting approval past their expires_at, or whose every approval request has lapsed.

        The reads that show campaigns (campaign_list, latest_campaign) never do this themselves: a command that
        shows them calls it first, so that what it shows is current."""
        at = at or now()
        overdue = _move(CampaignStatus.EXPIRED, "expire", at).where(
            campaigns.c.expires_at.is_not(None), campaigns.c.expires_at <= at
        )
        # Asked, and no request is still open: nobody can approve it any more. (One made awaiting approval and not
        # asked yet waits for its requests.)
        asked = sa.exists().where(approval_requests.c.campaign_id == campaigns.c.id)
        still_open = sa.exists().where(
            approval_requests.c.campaign_id == campaigns.c.id,
            approval_requests.c.used_at.is_(None),
            approval_requests.c.expires_at > at,
        )
        lapsed = _move(CampaignStatus.EXPIRED, "expire", at).where(
            campaigns.c.status == CampaignStatus.AWAITING_APPROVAL, asked, ~still_open
        )
        with self._writing(connection) as writing:
            expired = list(writing.execute(overdue.returning(campaigns.c.id)).scalars())
            return expired + list(writing.execute(lapsed.returning(campaigns.c.id)).scalars())

    def start_due(self, at: dt.datetime | None = None, *, connection: Connection | None = None) -> list[int]:
        """Start every scheduled campaign whose time has come: running, its audience fixed, in one transaction each
        (all in the caller's, given one). Overdue ones expire first (expire_overdue).

        Only one of the senders polling at once wins each campaign (the status changes from scheduled only once).
        """
        at = at or now()
        self.expire_overdue(at, connection=connection)
        with self._reading(connection) as reading:
            due = reading.execute(
                sa.select(campaigns.c.id, campaigns.c.list_id).where(
                    campaigns.c.status == CampaignStatus.SCHEDULED, campaigns.c.scheduled_at <= at
                )
            ).all()
        start = _move(CampaignStatus.RUNNING, "start", at).values(started_at=at)
        started = []
        for campaign_id, list_id in due:
            with self._writing(connection) as writing:
                if writing.execute(start.where(campaigns.c.id == campaign_id)).rowcount:
                    self._fix_audience(writing, campaign_id, list_id, at)
                    started.append(campaign_id)
        return started

    def campaign_ids(
        self, *statuses: str, welcome: bool | None = None, connection: Connection | None = None
    ) -> list[int]:
        """The campaigns in these statuses, oldest first: welcome emails among them (None), only (True), or not."""
        query = sa.select(campaigns.c.id).where(campaigns.c.status.in_(statuses)).order_by(campaigns.c.id)
        if welcome is not None:
            query = query.where(campaigns.c.welcome if welcome else ~campaigns.c.welcome)
        with self._reading(connection) as reading:
            return list(reading.execute(query).scalars())

    def is_running(self, campaign_id: int, *, connection: Connection | None = None) -> bool:
        """Whether the campaign is running now: what a sender asks between two messages of a batch."""
        with self._reading(connection) as reading:
            status = reading.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar()
        return status == CampaignStatus.RUNNING

    def change_campaign_status(
        self, campaign_id: int, to: str, action: str, *, connection: Connection | None = None
    ) -> bool:
        """`action` (pause, resume, cancel: what a person asks) moves the campaign to status `to`, if TRANSITIONS
        lets that action move it from the status it is in; False when it does not."""
        with self._writing(connection) as writing:
            moved = _move(CampaignStatus(to), action, now()).where(campaigns.c.id == campaign_id)
            return bool(writing.execute(moved).rowcount)

    def finish_if_done(self, campaign_id: int, *, connection: Connection | None = None) -> bool:
        """A running campaign with no pending row left is finished; True when it is (now or already). A welcome
        never finishes: whoever joins next gets a row of it."""
        still_pending = sa.exists().where(
            deliveries.c.campaign_id == campaign_id, deliveries.c.status == DeliveryStatus.PENDING
        )
        with self._writing(connection) as writing:
            writing.execute(
                _move(CampaignStatus.FINISHED, "finish", now()).where(
                    campaigns.c.id == campaign_id, ~campaigns.c.welcome, ~still_pending
                )
            )
            status = writing.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar()
        return status == CampaignStatus.FINISHED

    def campaign_list(
        self,
        list_id: int | None = None,
        *,
        welcome: bool | None = False,
        campaign_id: int | None = None,
        connection: Connection | None = None,
    ) -> list[tuple[CampaignRow, str, dict[str, int]]]:
        """Every campaign (of one list, or all), newest first, with its list's slug and its ledger counts: the sends
        (welcome False), the welcome emails (True) or both (None); campaign_id: that one only. A pure read: call
        expire_overdue first to show the overdue ones as expired."""
        query = sa.select(campaigns, lists.c.slug.label("list_slug")).join(lists, lists.c.id == campaigns.c.list_id)
        if welcome is not None:
            query = query.where(campaigns.c.welcome if welcome else ~campaigns.c.welcome)
        if campaign_id is not None:
            query = query.where(campaigns.c.id == campaign_id)
        if list_id is not None:
            query = query.where(campaigns.c.list_id == list_id)
        tally = sa.select(deliveries.c.campaign_id, deliveries.c.status, sa.func.count()).group_by(
            deliveries.c.campaign_id, deliveries.c.status
        )
        with self._reading(connection) as reading:
            rows = reading.execute(query.order_by(campaigns.c.id.desc())).all()
            if list_id is not None or welcome is not False or campaign_id is not None:
                tally = tally.where(deliveries.c.campaign_id.in_([row.id for row in rows]))
            counted: dict[int, dict[str, int]] = {}
            for campaign_id, status, count in reading.execute(tally):
                counted.setdefault(campaign_id, {})[status] = count
        found = []
        for row in rows:
            campaign = _campaign(row)
            assert campaign is not None
            found.append((campaign, row.list_slug, delivery_counts(counted.get(row.id, {}))))
        return found

    def sent_issues(
        self, *, welcome: bool = False, connection: Connection | None = None
    ) -> list[tuple[str, str, dt.datetime]]:
        """(issue slug, subject, first sent) of every issue a campaign started sending, newest first: not those
        only scheduled (nor expired unsent), which the public archive must not show before their time. welcome:
        the issues of the welcome emails instead (their pages exist for the view-online link, and are listed
        nowhere)."""
        first_sent = sa.func.min(campaigns.c.started_at)
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(campaigns.c.issue_slug, sa.func.min(campaigns.c.subject), first_sent)
                .where(campaigns.c.started_at.is_not(None), campaigns.c.welcome if welcome else ~campaigns.c.welcome)
                .group_by(campaigns.c.issue_slug)
                .order_by(first_sent.desc())
            ).all()
        return [(row[0], row[1], _aware(row[2])) for row in rows]

    def sent_content(
        self, issue_slug: str, *, welcome: bool = False, connection: Connection | None = None
    ) -> tuple[int, dict | None] | None:
        """(campaign id, frozen content) of the issue's latest campaign that started sending (welcome: its latest
        welcome email): what the archive shows (None content: begun by a version that did not freeze it); None
        when no campaign of it started."""
        with self._reading(connection) as reading:
            row = reading.execute(
                sa.select(campaigns.c.id, campaigns.c.content)
                .where(
                    campaigns.c.issue_slug == issue_slug,
                    campaigns.c.started_at.is_not(None),
                    campaigns.c.welcome if welcome else ~campaigns.c.welcome,
                )
                .order_by(campaigns.c.started_at.desc(), campaigns.c.id.desc())
                .limit(1)
            ).first()
        return (row[0], row[1]) if row is not None else None
