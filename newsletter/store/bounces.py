"""Bounces read from a mailbox (newsletter/bounces/): the messages acted on, kept by identity so that none is acted
on twice, and what each does to a person, in one transaction with that record: a hard bounce or a complaint
changes memberships at once, a soft one counts towards `[bounces] soft_limit`, a deferral or a delivery report is
noted. Every decision is an event (source "bounce-mail") with the report's status code and words.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.engine import _Among, _aware, _insert_ignoring, now
from newsletter.store.ledger import Ledger
from newsletter.store.schema import bounce_messages, campaigns, deliveries, events, memberships, subscribers
from newsletter.store.statuses import DeliveryStatus, MembershipStatus

SOURCE = "bounce-mail"
EffectKind = Literal["bounced", "soft-bounce", "deferred", "delivered", "complained"]
# Whom a hard bounce stops mailing: those the list would still mail (an unsubscribed person stays unsubscribed).
STILL_MAILED = (MembershipStatus.SUBSCRIBED, MembershipStatus.UNCONFIRMED)


@dataclass(frozen=True)
class BounceEffect:
    """What one report says of one person: kind, the campaign it is about (None: not known), and the detail its
    event records (status code, the server's words, severity)."""

    subscriber_id: int
    campaign_id: int | None
    kind: EffectKind
    detail: dict[str, Any] = field(default_factory=dict)
    sender_problem: bool = False  # a soft bounce that is the sender's problem: it does not count towards the limit


@dataclass(frozen=True)
class Recipient:
    """A person a bounce may be about, as the store knows them."""

    subscriber_id: int
    email: str


@dataclass(frozen=True)
class SentCampaign:
    campaign_id: int
    list_id: int
    list_slug: str | None  # as frozen in its content: what its Message-IDs were made with


class BounceMail(Ledger):
    def bounce_messages_seen(self, identities: Sequence[str], *, connection: Connection | None = None) -> set[str]:
        """Which of these messages a scan acted on before."""
        if not identities:
            return set()
        with self._reading(connection) as reading:
            found = reading.execute(
                sa.select(bounce_messages.c.identity).where(_Among(bounce_messages.c.identity, "k_ids")),
                {"k_ids": list(identities)},
            )
            return set(found.scalars())

    def recipient(self, subscriber_id: int, *, connection: Connection | None = None) -> Recipient | None:
        with self._reading(connection) as reading:
            row = reading.execute(
                sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.id == subscriber_id)
            ).first()
        return Recipient(row.id, row.email) if row is not None else None

    def recipient_by_address(self, email: str, *, connection: Connection | None = None) -> Recipient | None:
        with self._reading(connection) as reading:
            row = reading.execute(
                sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.email_key == email.strip().lower())
            ).first()
        return Recipient(row.id, row.email) if row is not None else None

    def sent_campaign(
        self, campaign_id: int, subscriber_id: int, *, connection: Connection | None = None
    ) -> SentCampaign | None:
        """The campaign, if it sent this person a message (a ledger row of theirs that is not pending or skipped)."""
        with self._reading(connection) as reading:
            row = reading.execute(
                sa.select(campaigns.c.id, campaigns.c.list_id, campaigns.c.content)
                .join(deliveries, deliveries.c.campaign_id == campaigns.c.id)
                .where(
                    campaigns.c.id == campaign_id,
                    deliveries.c.subscriber_id == subscriber_id,
                    deliveries.c.status.in_((DeliveryStatus.SENT, DeliveryStatus.FAILED)),
                )
            ).first()
        if row is None:
            return None
        return SentCampaign(row.id, row.list_id, (row.content or {}).get("list_slug"))

    def latest_sent_campaign(
        self, subscriber_id: int, list_ids: Sequence[int] = (), *, connection: Connection | None = None
    ) -> int | None:
        """The campaign that last sent this person a message (on one of list_ids, when given)."""
        query = (
            sa.select(campaigns.c.id)
            .join(deliveries, deliveries.c.campaign_id == campaigns.c.id)
            .where(deliveries.c.subscriber_id == subscriber_id, deliveries.c.status == DeliveryStatus.SENT)
            .order_by(sa.desc(deliveries.c.updated_at), sa.desc(campaigns.c.id))
            .limit(1)
        )
        if list_ids:
            query = query.where(campaigns.c.list_id.in_(list(list_ids)))
        with self._reading(connection) as reading:
            return reading.execute(query).scalar()

    def apply_bounce(
        self,
        identity: str,
        mailbox: str,
        kind: str,
        effects: Sequence[BounceEffect],
        *,
        detail: dict[str, Any],
        soft_limit: int,
        soft_since: dt.datetime,
        connection: Connection | None = None,
    ) -> int | None:
        """Record one message of the bounce mailbox and apply what it says, in one transaction; return how many
        memberships changed, or None when that message was acted on before (nothing is applied again).

        The record's row is inserted first, unique by the message's identity: two scans at once, on one host or
        several, and a scan run again after a crash apply each message once."""
        at = now()
        first = effects[0] if effects else None
        with self._writing(connection) as writing:
            recorded = writing.execute(
                _insert_ignoring(writing.dialect.name, bounce_messages).returning(bounce_messages.c.identity),
                {
                    "identity": identity,
                    "seen_at": at,
                    "mailbox": mailbox[:500],
                    "kind": kind,
                    "subscriber_id": first.subscriber_id if first else None,
                    "campaign_id": first.campaign_id if first else None,
                    "detail": detail,
                },
            ).first()
            if recorded is None:
                return None
            return sum(self._apply_effect(writing, effect, soft_limit, soft_since) for effect in effects)

    def _apply_effect(self, writing: Connection, effect: BounceEffect, soft_limit: int, since: dt.datetime) -> int:
        detail = {**effect.detail, "campaign": effect.campaign_id}
        person = effect.subscriber_id
        if effect.kind == "complained":  # a complaint leaves every list: the person said it was unwanted
            return self._set_each(writing, person, self._list_ids(writing, person), MembershipStatus.COMPLAINED, detail)
        if effect.kind == "bounced":
            changed = self._set_each(writing, person, self._list_ids(writing, person, STILL_MAILED), "bounced", detail)
            if not changed:  # nobody mails them any more: noted all the same, for `newsletter delivery`
                self._event(
                    writing, person, self._campaign_list(writing, effect.campaign_id), "hard-bounce", SOURCE, detail
                )
            return changed
        list_id = self._campaign_list(writing, effect.campaign_id)
        self._event(writing, person, list_id, effect.kind, SOURCE, {**detail, "sender_problem": effect.sender_problem})
        if effect.kind != "soft-bounce" or effect.sender_problem:
            return 0
        streak = self._soft_streak(writing, person, since)
        if len(streak) < soft_limit:
            return 0
        reason = {**detail, "soft_bounces": len(streak), "campaigns": streak}
        return self._set_each(writing, person, self._list_ids(writing, person, STILL_MAILED), "bounced", reason)

    def soft_streak(self, subscriber_id: int, since: dt.datetime, *, connection: Connection | None = None) -> list[int]:
        """The campaigns, newest first, of this person's current run of soft bounces since `since`."""
        with self._reading(connection) as reading:
            return self._soft_streak(reading, subscriber_id, since)

    def _soft_streak(self, connection: Connection, subscriber_id: int, since: dt.datetime) -> list[int]:
        """Walking back from the newest campaign sent to them that soft-bounced, the campaigns that did, up to the
        first one that did not (it was delivered: that resets the count), a delivery report, or their latest
        subscription. Only campaigns sent since `since`; a soft bounce that is the sender's problem (a policy
        refusal) is not theirs and does not count."""
        found = connection.execute(
            sa.select(events.c.kind, events.c.at, events.c.detail).where(
                events.c.subscriber_id == subscriber_id,
                events.c.at >= since,
                events.c.kind.in_(("soft-bounce", "delivered", "bounced", "hard-bounce", "subscribed")),
            )
        ).all()
        fresh_since = max((_aware(e.at) for e in found if e.kind == "subscribed"), default=since)
        soft: set[int] = set()
        stops: set[int] = set()
        for event in found:
            campaign = (event.detail or {}).get("campaign")
            if not isinstance(campaign, int) or _aware(event.at) < fresh_since:
                continue
            if event.kind == "soft-bounce" and not (event.detail or {}).get("sender_problem"):
                soft.add(campaign)
            elif event.kind == "delivered":
                stops.add(campaign)
        sent = connection.execute(
            sa.select(campaigns.c.id)
            .join(deliveries, deliveries.c.campaign_id == campaigns.c.id)
            .where(
                deliveries.c.subscriber_id == subscriber_id,
                deliveries.c.status == DeliveryStatus.SENT,
                sa.func.coalesce(campaigns.c.started_at, campaigns.c.created_at) >= since,
            )
            .order_by(
                sa.desc(sa.func.coalesce(campaigns.c.started_at, campaigns.c.created_at)), sa.desc(campaigns.c.id)
            )
        ).scalars()
        streak: list[int] = []
        for campaign in sent:
            if campaign in soft and campaign not in stops:
                streak.append(campaign)
            elif streak:
                break
        return streak

    def _list_ids(self, connection: Connection, subscriber_id: int, statuses: Sequence[str] | None = None) -> list[int]:
        query = sa.select(memberships.c.list_id).where(memberships.c.subscriber_id == subscriber_id)
        if statuses is not None:
            query = query.where(memberships.c.status.in_(list(statuses)))
        return list(connection.execute(query).scalars())

    def _campaign_list(self, connection: Connection, campaign_id: int | None) -> int | None:
        if campaign_id is None:
            return None
        return connection.execute(sa.select(campaigns.c.list_id).where(campaigns.c.id == campaign_id)).scalar()

    def _set_each(
        self, connection: Connection, subscriber_id: int, list_ids: Sequence[int], status: str, detail: dict
    ) -> int:
        return sum(self.set_status(subscriber_id, i, status, SOURCE, detail, connection=connection) for i in list_ids)
