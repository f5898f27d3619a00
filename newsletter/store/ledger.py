"""The ledger as a leased work queue: one row per (campaign, subscriber), inserted when the campaign starts (its
audience is fixed then), moving from pending to sent, failed or skipped; a row is final once it leaves pending.

Senders on any number of hosts claim due pending rows under a lease (claim, renew, release), record outcomes
(record), and book the campaign-wide rate limits (reserve). claim and record run for every few messages: their
statements are built once, here beside them, since building one costs more than running it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.campaigns import _CAMPAIGN_STATUS, Campaigns
from newsletter.store.engine import _TIME, _aware, now
from newsletter.store.schema import campaign_sends, campaigns, deliveries, memberships, subscribers
from newsletter.store.statuses import CampaignStatus, DeliveryStatus, MembershipStatus, delivery_counts
from newsletter.store.subscribers import Subscribers

_HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Delivery:
    """A ledger row still to send, with the subscriber's membership status as it is now."""

    subscriber_id: int
    email: str
    name: str | None
    fields: dict
    attempts: int
    membership: str | None
    lang: str | None = None  # the language they read in (None: the list's first): which version they get


@dataclass(frozen=True)
class Result:
    """An outcome to record in the ledger."""

    subscriber_id: int
    status: str  # a DeliveryStatus: sent, failed, skipped, or pending (retry later)
    provider_id: str | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    attempted: bool = True  # counts as an attempt
    bounce: bool = False  # also mark the membership bounced


# claim's statements.
_AT = sa.bindparam("c_at", type_=_TIME)
# A CTE, computed once: an IN (subquery … LIMIT n FOR UPDATE SKIP LOCKED) may be run again for each row
# PostgreSQL considers, each run locking other rows, and so claim more than n.
_PICKED = (
    sa.select(deliveries.c.subscriber_id)
    .where(
        deliveries.c.campaign_id == sa.bindparam("c_id"),
        deliveries.c.status == DeliveryStatus.PENDING.value,
        sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= _AT),
        sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < _AT),
    )
    .order_by(deliveries.c.subscriber_id)
    .limit(sa.bindparam("c_limit", type_=sa.Integer))
    .with_for_update(skip_locked=True)
    .cte("picked")
    .prefix_with("MATERIALIZED", dialect="postgresql")
)
_CLAIM = (
    deliveries.update()
    .where(deliveries.c.campaign_id == sa.bindparam("c_id"), deliveries.c.subscriber_id == _PICKED.c.subscriber_id)
    .values(lease_owner=sa.bindparam("c_owner"), lease_until=sa.bindparam("c_until", type_=_TIME))
    .returning(deliveries.c.subscriber_id)
)
_CLAIMED = (
    sa.select(
        deliveries.c.subscriber_id,
        deliveries.c.attempts,
        subscribers.c.email,
        subscribers.c.name,
        subscribers.c.fields,
        memberships.c.status.label("membership"),
        subscribers.c.lang,
    )
    .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
    .outerjoin(
        memberships,
        sa.and_(
            memberships.c.subscriber_id == deliveries.c.subscriber_id, memberships.c.list_id == sa.bindparam("c_list")
        ),
    )
    .where(
        deliveries.c.campaign_id == sa.bindparam("c_id"),
        deliveries.c.subscriber_id.in_(sa.bindparam("c_ids", expanding=True)),
    )
    .order_by(deliveries.c.subscriber_id)
)
# record's statement: one executemany for a batch of outcomes.
_RECORD = (
    deliveries.update()
    .where(
        deliveries.c.campaign_id == sa.bindparam("b_campaign"),
        deliveries.c.subscriber_id == sa.bindparam("b_subscriber"),
        deliveries.c.status == DeliveryStatus.PENDING.value,  # a final row is never rewritten
    )
    .values(
        status=sa.bindparam("b_status"),
        updated_at=sa.bindparam("b_at", type_=_TIME),
        next_attempt_at=sa.bindparam("b_next", type_=_TIME),
        last_error=sa.bindparam("b_error", type_=sa.Text),
        provider_id=sa.func.coalesce(sa.bindparam("b_provider", type_=sa.String), deliveries.c.provider_id),
        attempts=deliveries.c.attempts + sa.bindparam("b_attempted", type_=sa.Integer),
        lease_owner=None,
        lease_until=None,
    )
)


def _held_by(holder: str) -> sa.ColumnElement[bool]:
    """Rows leased by this claim ("sender#n"), or by any claim of this sender."""
    return sa.or_(
        deliveries.c.lease_owner == holder, deliveries.c.lease_owner.startswith(f"{holder}#", autoescape=True)
    )


class Ledger(Subscribers, Campaigns):
    def claim(
        self,
        campaign_id: int,
        list_id: int,
        owner: str,
        limit: int,
        lease: float,
        at: dt.datetime | None = None,
        *,
        connection: Connection | None = None,
    ) -> list[Delivery] | None:
        """Lease up to `limit` due pending rows of a running campaign to `owner` (one claim of a sender: "sender#n")
        until now + lease, in subscriber order, with each subscriber's membership as it is now. None when the
        campaign is not running.

        One UPDATE picks and marks the rows (_CLAIM); on PostgreSQL its CTE locks them FOR UPDATE SKIP LOCKED, so
        two senders claiming at once take different rows; on SQLite the write transaction is exclusive.
        """
        at = at or now()
        with self._writing(connection) as writing:
            if writing.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar() != CampaignStatus.RUNNING:
                return None
            lease_until = at + dt.timedelta(seconds=lease)
            values = {"c_id": campaign_id, "c_at": at, "c_limit": limit, "c_owner": owner, "c_until": lease_until}
            claimed = list(writing.execute(_CLAIM, values).scalars())
            if not claimed:
                return []
            rows = writing.execute(_CLAIMED, {"c_id": campaign_id, "c_list": list_id, "c_ids": claimed}).all()
        return [
            Delivery(r.subscriber_id, r.email, r.name, r.fields or {}, r.attempts, r.membership, r.lang) for r in rows
        ]

    def renew(self, campaign_id: int, sender: str, lease: float, *, connection: Connection | None = None) -> int:
        """Push back the lease of every row this sender's claims still hold in the campaign; return how many."""
        with self._writing(connection) as writing:
            return writing.execute(
                deliveries.update()
                .where(
                    deliveries.c.campaign_id == campaign_id,
                    _held_by(sender),
                    deliveries.c.status == DeliveryStatus.PENDING,
                )
                .values(lease_until=now() + dt.timedelta(seconds=lease))
            ).rowcount

    def release(
        self,
        campaign_id: int,
        holder: str,
        subscriber_ids: Sequence[int] | None = None,
        *,
        connection: Connection | None = None,
    ) -> int:
        """Give back pending rows that a claim (or all of a sender's claims) holds but will not send."""
        query = deliveries.update().where(
            deliveries.c.campaign_id == campaign_id, _held_by(holder), deliveries.c.status == DeliveryStatus.PENDING
        )
        if subscriber_ids is not None:
            query = query.where(deliveries.c.subscriber_id.in_(subscriber_ids))
        with self._writing(connection) as writing:
            return writing.execute(query.values(lease_owner=None, lease_until=None)).rowcount

    def next_claimable(
        self, campaign_id: int, at: dt.datetime | None = None, *, connection: Connection | None = None
    ) -> dt.datetime | None:
        """When a pending row of the campaign can next be claimed: `at` if one can now, else the earliest retry or
        lease expiry; None when nothing is pending."""
        at = at or now()
        free = sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < at)
        pending = sa.and_(deliveries.c.campaign_id == campaign_id, deliveries.c.status == DeliveryStatus.PENDING)
        with self._reading(connection) as reading:
            total, ready, retry_at, lease_at = reading.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count().filter(
                        free, sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= at)
                    ),
                    sa.func.min(deliveries.c.next_attempt_at).filter(free),
                    sa.func.min(deliveries.c.lease_until).filter(~free),
                ).where(pending)
            ).one()
        if not total:
            return None
        if ready:
            return at
        return min(t for t in (_aware(retry_at), _aware(lease_at)) if t is not None)

    def held(
        self, campaign_id: int, at: dt.datetime | None = None, *, connection: Connection | None = None
    ) -> tuple[int, dt.datetime | None]:
        """Pending rows of the campaign under a lease that has not run out: how many, and when the last lease ends
        (the time a sender that died gives them up)."""
        at = at or now()
        with self._reading(connection) as reading:
            count, until = reading.execute(
                sa.select(sa.func.count(), sa.func.max(deliveries.c.lease_until)).where(
                    deliveries.c.campaign_id == campaign_id,
                    deliveries.c.status == DeliveryStatus.PENDING,
                    deliveries.c.lease_until >= at,
                )
            ).one()
        return count, _aware(until)

    def reserve(
        self,
        campaign_id: int,
        count: int,
        rate: float | None,
        per_hour: int | None,
        *,
        connection: Connection | None = None,
    ) -> dt.datetime:
        """Book `count` messages against the campaign's limits, shared by every sender; return when they may go.

        rate: slots are handed out one after another, count/rate seconds apart (campaigns.next_send_at).
        per_hour: at most per_hour messages in any hour, counted in campaign_sends; a booking never goes before
        the latest one, so the hour ending at the booked instant is the only one to check.
        """
        at = now()
        with self._writing(connection) as writing:
            row = writing.execute(
                sa.select(campaigns.c.next_send_at).where(campaigns.c.id == campaign_id).with_for_update()
            ).one()
            start = max(at, _aware(row.next_send_at) or at) if rate else at
            if per_hour:
                count = min(count, per_hour)
                writing.execute(
                    campaign_sends.delete().where(
                        campaign_sends.c.campaign_id == campaign_id, campaign_sends.c.at <= at - _HOUR
                    )
                )
                booked = [
                    (_aware(when), n)
                    for when, n in writing.execute(
                        sa.select(campaign_sends.c.at, campaign_sends.c.count)
                        .where(campaign_sends.c.campaign_id == campaign_id)
                        .order_by(campaign_sends.c.at)
                    )
                ]
                if booked:
                    start = max(start, booked[-1][0])
                while sum(n for when, n in booked if when > start - _HOUR) + count > per_hour:
                    start = next(when for when, _ in booked if when > start - _HOUR) + _HOUR
                writing.execute(campaign_sends.insert().values(campaign_id=campaign_id, at=start, count=count))
            if rate:
                writing.execute(
                    campaigns.update()
                    .where(campaigns.c.id == campaign_id)
                    .values(next_send_at=start + dt.timedelta(seconds=count / rate))
                )
        return start

    def pending_languages(self, campaign_id: int) -> dict[str | None, int]:
        """A campaign's pending rows counted by their member's language (None: no preference)."""
        with self._reading(None) as reading:
            rows = reading.execute(
                sa.select(subscribers.c.lang, sa.func.count())
                .select_from(deliveries.join(subscribers, subscribers.c.id == deliveries.c.subscriber_id))
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == DeliveryStatus.PENDING)
                .group_by(subscribers.c.lang)
            ).all()
        return {lang: count for lang, count in rows}

    def pending(self, campaign_id: int, limit: int, *, connection: Connection | None = None) -> list[Delivery]:
        """The first pending rows of a campaign, claimed or not (what a dry run shows)."""
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(
                    deliveries.c.subscriber_id,
                    deliveries.c.attempts,
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.fields,
                    subscribers.c.lang,
                )
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == DeliveryStatus.PENDING)
                .order_by(deliveries.c.subscriber_id)
                .limit(limit)
            ).all()
        return [Delivery(r.subscriber_id, r.email, r.name, r.fields or {}, r.attempts, None, r.lang) for r in rows]

    def record(
        self,
        campaign_id: int,
        list_id: int,
        results: Sequence[Result],
        source: str = "send",
        *,
        connection: Connection | None = None,
    ) -> bool:
        """Write outcomes to the ledger in one transaction, releasing their leases (and mark hard bounces); return
        whether the campaign is still running, read in the same transaction: a sender stops at a pause or a cancel
        without asking the store again for each message."""
        if not results:
            return self.is_running(campaign_id, connection=connection)
        at = now()
        rows = [
            {
                "b_campaign": campaign_id,
                "b_subscriber": r.subscriber_id,
                "b_status": r.status,
                "b_at": at,
                "b_next": r.next_attempt_at,
                "b_error": r.error,
                "b_provider": r.provider_id,
                "b_attempted": int(r.attempted),
            }
            for r in results
        ]
        with self._writing(connection) as writing:
            writing.execute(_RECORD, rows)  # one executemany for the batch
            for result in results:
                if result.bounce:  # the campaign named, for `newsletter delivery` to tie the bounce to it
                    reason = {"reason": result.error or "", "campaign": campaign_id}
                    self.set_status(
                        result.subscriber_id, list_id, MembershipStatus.BOUNCED, source, reason, connection=writing
                    )
            status = writing.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar()
        return status == CampaignStatus.RUNNING

    def counts(self, campaign_id: int, *, connection: Connection | None = None) -> dict[str, int]:
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(deliveries.c.status, sa.func.count())
                .where(deliveries.c.campaign_id == campaign_id)
                .group_by(deliveries.c.status)
            ).all()
        return delivery_counts(dict(rows))

    def failures(
        self, campaign_id: int, limit: int = 20, *, connection: Connection | None = None
    ) -> list[tuple[str, str]]:
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(subscribers.c.email, deliveries.c.last_error)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == DeliveryStatus.FAILED)
                .order_by(deliveries.c.subscriber_id)
                .limit(limit)
            ).all()
        return [(row.email, row.last_error or "") for row in rows]
