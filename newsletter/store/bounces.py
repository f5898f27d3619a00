"""Bounces read from a mailbox (newsletter/bounces/): the messages acted on, kept by identity so that none is acted
on twice, and what each does to a person, in one transaction with that record: a hard bounce or a complaint
changes memberships at once, a soft one counts towards `[bounces] soft_limit`, a deferral or a delivery report is
noted. Every decision is an event (source "bounce-mail") with the report's status code and words.

A scan applies a batch of messages in one transaction (apply_bounces): a crash loses the whole batch's decisions,
which the scan has not filed yet (it moves messages only once they are committed), so the next scan makes them
again. Every statement is built once, here: a scan runs a few of them per message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.engine import _TIME, _Among, _aware, _insert_ignoring, now
from newsletter.store.ledger import Ledger
from newsletter.store.schema import bounce_messages, campaigns, deliveries, events, memberships, subscribers
from newsletter.store.statuses import DeliveryStatus, MembershipStatus
from newsletter.store.subscribers import _LOG_EVENT

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


@dataclass(frozen=True)
class ReturnedMessage:
    """One message of the bounce mailbox and what it does: its identity (the SHA-256 of its bytes), its kind, its
    effects, and the detail its record keeps."""

    identity: str
    kind: str
    effects: tuple[BounceEffect, ...]
    detail: dict[str, Any]


_RECIPIENT = sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.id == sa.bindparam("k_id"))
_RECIPIENT_BY_ADDRESS = sa.select(subscribers.c.id, subscribers.c.email).where(
    subscribers.c.email_key == sa.bindparam("k_key")
)
_SENT_CAMPAIGN = (  # the campaign, if it sent this person a message (a ledger row that is neither pending nor skipped)
    sa.select(campaigns.c.id, campaigns.c.list_id, campaigns.c.content["list_slug"].as_string().label("list_slug"))
    .join(deliveries, deliveries.c.campaign_id == campaigns.c.id)
    .where(
        campaigns.c.id == sa.bindparam("k_campaign"),
        deliveries.c.subscriber_id == sa.bindparam("k_id"),
        deliveries.c.status.in_((DeliveryStatus.SENT, DeliveryStatus.FAILED)),
    )
)
_LATEST_SENT = (
    sa.select(campaigns.c.id)
    .join(deliveries, deliveries.c.campaign_id == campaigns.c.id)
    .where(deliveries.c.subscriber_id == sa.bindparam("k_id"), deliveries.c.status == DeliveryStatus.SENT)
    .order_by(sa.desc(deliveries.c.updated_at), sa.desc(campaigns.c.id))
    .limit(1)
)
_SEEN = sa.select(bounce_messages.c.identity).where(_Among(bounce_messages.c.identity, "k_ids"))
_RECORD = {
    dialect: _insert_ignoring(dialect, bounce_messages)
    .values(
        identity=sa.bindparam("b_identity"),
        seen_at=sa.bindparam("b_at", type_=_TIME),
        mailbox=sa.bindparam("b_mailbox"),
        kind=sa.bindparam("b_kind"),
        subscriber_id=sa.bindparam("b_subscriber"),
        campaign_id=sa.bindparam("b_campaign"),
        detail=sa.bindparam("b_detail", type_=sa.JSON),
    )
    .returning(bounce_messages.c.identity)  # no row when it was there (psycopg's rowcount is -1 for this insert)
    for dialect in ("sqlite", "postgresql")
}
_MEMBERSHIPS = sa.select(memberships.c.list_id, memberships.c.status).where(
    memberships.c.subscriber_id == sa.bindparam("k_id")
)
_SET_STATUS = (
    memberships.update()
    .where(memberships.c.subscriber_id == sa.bindparam("k_id"), memberships.c.list_id == sa.bindparam("k_list"))
    .values(status=sa.bindparam("k_status"), updated_at=sa.bindparam("k_at", type_=_TIME))
)
_CAMPAIGN_LIST = sa.select(campaigns.c.list_id).where(campaigns.c.id == sa.bindparam("k_campaign"))
_STREAK_EVENTS = sa.select(events.c.kind, events.c.at, events.c.detail).where(
    events.c.subscriber_id == sa.bindparam("k_id"),
    events.c.at >= sa.bindparam("k_since", type_=_TIME),
    events.c.kind.in_(("soft-bounce", "delivered", "subscribed")),
)
_STARTED = sa.func.coalesce(campaigns.c.started_at, campaigns.c.created_at)
_SENT_SINCE = (  # the campaigns that sent this person a message since then, newest first
    sa.select(campaigns.c.id)
    .join(deliveries, deliveries.c.campaign_id == campaigns.c.id)
    .where(
        deliveries.c.subscriber_id == sa.bindparam("k_id"),
        deliveries.c.status == DeliveryStatus.SENT,
        sa.bindparam("k_since", type_=_TIME) <= _STARTED,
    )
    .order_by(sa.desc(_STARTED), sa.desc(campaigns.c.id))
)


class BounceMail(Ledger):
    def bounce_messages_seen(self, identities: Sequence[str], *, connection: Connection | None = None) -> set[str]:
        """Which of these messages a scan acted on before."""
        if not identities:
            return set()
        with self._reading(connection) as reading:
            return set(reading.execute(_SEEN, {"k_ids": list(identities)}).scalars())

    def recipient(self, subscriber_id: int, *, connection: Connection | None = None) -> Recipient | None:
        with self._reading(connection) as reading:
            row = reading.execute(_RECIPIENT, {"k_id": subscriber_id}).first()
        return Recipient(row.id, row.email) if row is not None else None

    def recipient_by_address(self, email: str, *, connection: Connection | None = None) -> Recipient | None:
        with self._reading(connection) as reading:
            row = reading.execute(_RECIPIENT_BY_ADDRESS, {"k_key": email.strip().lower()}).first()
        return Recipient(row.id, row.email) if row is not None else None

    def sent_campaign(
        self, campaign_id: int, subscriber_id: int, *, connection: Connection | None = None
    ) -> SentCampaign | None:
        """The campaign, if it sent this person a message (a ledger row of theirs that is not pending or skipped)."""
        with self._reading(connection) as reading:
            row = reading.execute(_SENT_CAMPAIGN, {"k_campaign": campaign_id, "k_id": subscriber_id}).first()
        return SentCampaign(row.id, row.list_id, row.list_slug) if row is not None else None

    def latest_sent_campaign(self, subscriber_id: int, *, connection: Connection | None = None) -> int | None:
        """The campaign that last sent this person a message."""
        with self._reading(connection) as reading:
            return reading.execute(_LATEST_SENT, {"k_id": subscriber_id}).scalar()

    def apply_bounces(
        self,
        mailbox: str,
        messages: Sequence[ReturnedMessage],
        *,
        soft_limit: int,
        soft_since: dt.datetime,
        connection: Connection | None = None,
    ) -> list[int | None]:
        """Record messages of the bounce mailbox and apply what each says, in one transaction; for each, how many
        memberships it changed, or None when it was acted on before (nothing of it is applied again).

        Each record is inserted before its effects, unique by the message's identity: two scans at once, on one
        host or several, and a scan run again after a crash apply each message once."""
        at = now()
        changed: list[int | None] = []
        with self._writing(connection) as writing:
            record = _RECORD[writing.dialect.name]
            for message in messages:
                first = message.effects[0] if message.effects else None
                row = {
                    "b_identity": message.identity,
                    "b_at": at,
                    "b_mailbox": mailbox[:500],
                    "b_kind": message.kind,
                    "b_subscriber": first.subscriber_id if first else None,
                    "b_campaign": first.campaign_id if first else None,
                    "b_detail": message.detail,
                }
                if writing.execute(record, row).first() is None:
                    changed.append(None)
                    continue
                changed.append(sum(self._apply_effect(writing, e, soft_limit, soft_since, at) for e in message.effects))
        return changed

    def _apply_effect(
        self, writing: Connection, effect: BounceEffect, soft_limit: int, since: dt.datetime, at: dt.datetime
    ) -> int:
        detail = {**effect.detail, "campaign": effect.campaign_id}
        person = effect.subscriber_id
        if effect.kind == "complained":  # a complaint leaves every list: the person said it was unwanted
            return self._mark(writing, person, MembershipStatus.COMPLAINED, detail, at, every=True)
        if effect.kind == "bounced":
            changed = self._mark(writing, person, MembershipStatus.BOUNCED, detail, at)
            if not changed:  # nobody mails them any more: noted all the same, for `newsletter delivery`
                self._log(writing, person, self._campaign_list(writing, effect.campaign_id), "hard-bounce", detail, at)
            return changed
        detail["sender_problem"] = effect.sender_problem
        self._log(writing, person, self._campaign_list(writing, effect.campaign_id), effect.kind, detail, at)
        if effect.kind != "soft-bounce" or effect.sender_problem:
            return 0
        streak = self._soft_streak(writing, person, since)
        if len(streak) < soft_limit:
            return 0
        reason = {**detail, "soft_bounces": len(streak), "campaigns": streak}
        return self._mark(writing, person, MembershipStatus.BOUNCED, reason, at)

    def soft_streak(self, subscriber_id: int, since: dt.datetime, *, connection: Connection | None = None) -> list[int]:
        """The campaigns, newest first, of this person's current run of soft bounces since `since`."""
        with self._reading(connection) as reading:
            return self._soft_streak(reading, subscriber_id, since)

    def _soft_streak(self, connection: Connection, subscriber_id: int, since: dt.datetime) -> list[int]:
        """Walking back from the newest campaign sent to them that soft-bounced, the campaigns that did, up to the
        first one that did not (it was delivered: that resets the count), a delivery report, or their latest
        subscription. Only campaigns sent since `since`; a soft bounce that is the sender's problem (a policy
        refusal) is not theirs and does not count."""
        found = connection.execute(_STREAK_EVENTS, {"k_id": subscriber_id, "k_since": since}).all()
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
        streak: list[int] = []
        for campaign in connection.execute(_SENT_SINCE, {"k_id": subscriber_id, "k_since": since}).scalars():
            if campaign in soft and campaign not in stops:
                streak.append(campaign)
            elif streak:
                break
        return streak

    def _mark(
        self, connection: Connection, subscriber_id: int, status: str, detail: dict, at: dt.datetime, every=False
    ) -> int:
        """Give each of the person's memberships this status (only those still mailed, unless every), logging
        each change; how many changed."""
        changed = 0
        for row in connection.execute(_MEMBERSHIPS, {"k_id": subscriber_id}).all():
            if row.status == status or not (every or row.status in STILL_MAILED):
                continue
            values = {"k_id": subscriber_id, "k_list": row.list_id, "k_status": status, "k_at": at}
            connection.execute(_SET_STATUS, values)
            self._log(connection, subscriber_id, row.list_id, status, detail, at)
            changed += 1
        return changed

    def _log(
        self, connection: Connection, subscriber_id: int, list_id: int | None, kind: str, detail: dict, at: dt.datetime
    ) -> None:
        row = {"e_at": at, "e_subscriber": subscriber_id, "e_list": list_id, "e_kind": kind, "e_source": SOURCE}
        connection.execute(_LOG_EVENT, {**row, "e_detail": detail})

    def _campaign_list(self, connection: Connection, campaign_id: int | None) -> int | None:
        if campaign_id is None:
            return None
        return connection.execute(_CAMPAIGN_LIST, {"k_campaign": campaign_id}).scalar()
