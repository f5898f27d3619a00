"""A person's data and what others report about them: everything held about an address (Law 25, GDPR), its
erasure (a one-way hash stays in suppressions, so that nothing mails them again without their own confirmation),
and the providers' reports (bounces, complaints, unsubscribes), from their webhooks or a suppression sync, with
the webhook tokens kept against replays.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.attributes import tags_among
from newsletter.store.engine import _aware, _insert_ignoring, now
from newsletter.store.schema import (
    address_hash,
    campaigns,
    deliveries,
    events,
    lists,
    memberships,
    subscriber_fields,
    subscriber_tags,
    subscribers,
    suppressions,
    webhook_tokens,
)
from newsletter.store.subscribers import Subscribers


class Erasure(Subscribers):
    def person(self, email: str, *, connection: Connection | None = None) -> dict[str, Any] | None:
        """Everything held about one address: the subscriber, memberships, events, deliveries. None if nobody."""
        with self._reading(connection) as connection:
            row = connection.execute(
                sa.select(subscribers).where(subscribers.c.email_key == email.strip().lower())
            ).first()
            if row is None:
                return None
            slugs = dict(connection.execute(sa.select(lists.c.id, lists.c.slug)).all())
            member_rows = connection.execute(
                sa.select(memberships).where(memberships.c.subscriber_id == row.id).order_by(memberships.c.list_id)
            ).all()
            event_rows = connection.execute(
                sa.select(events).where(events.c.subscriber_id == row.id).order_by(events.c.id)
            ).all()
            tags = tags_among(connection, [row.id]).get(row.id, {})
            delivery_rows = connection.execute(
                sa.select(deliveries, campaigns.c.issue_slug, campaigns.c.list_id, campaigns.c.welcome)
                .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
                .where(deliveries.c.subscriber_id == row.id)
                .order_by(deliveries.c.campaign_id)
            ).all()
        return {
            "email": row.email,
            "name": row.name,
            "fields": row.fields or {},
            "lang": row.lang,
            "tags": sorted(tags.values(), key=str.casefold),
            "created_at": _aware(row.created_at),
            "memberships": [
                {
                    "list": slugs.get(m.list_id),
                    "status": m.status,
                    "updated_at": _aware(m.updated_at),
                    "joined_at": _aware(m.joined_at),
                }
                for m in member_rows
            ],
            "events": [
                {
                    "at": _aware(e.at),
                    "list": slugs.get(e.list_id),
                    "kind": e.kind,
                    "source": e.source,
                    "detail": e.detail,
                }
                for e in event_rows
            ],
            "deliveries": [
                {
                    "campaign": d.campaign_id,
                    "issue": d.issue_slug,
                    "list": slugs.get(d.list_id),
                    "welcome": bool(d.welcome),  # the list's welcome email
                    "status": d.status,
                    "attempts": d.attempts,
                    "updated_at": _aware(d.updated_at),
                    "next_attempt_at": _aware(d.next_attempt_at),
                    "error": d.last_error,
                    "provider_id": d.provider_id,
                }
                for d in delivery_rows
            ],
        }

    def forget(self, email: str, *, connection: Connection | None = None) -> bool:
        """Erase a person: their name, fields, memberships and the personal content of their events and ledger
        rows go; a one-way hash of the address stays, so that no import or sign-up mails them again without their
        own new confirmation. The counts of past campaigns stay right (the rows stay, anonymous). False if nobody.
        """
        at = now()
        with self._writing(connection) as connection:
            found = connection.execute(
                sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.email_key == email.strip().lower())
            ).first()
            if found is None:
                return False
            stand_in = f"forgotten-{found.id}"  # unique, and no address: email_key stays unique and not null
            connection.execute(
                subscribers.update()
                .where(subscribers.c.id == found.id)
                .values(email=stand_in, email_key=stand_in, name=None, fields={})
            )
            connection.execute(memberships.delete().where(memberships.c.subscriber_id == found.id))
            connection.execute(subscriber_tags.delete().where(subscriber_tags.c.subscriber_id == found.id))
            connection.execute(subscriber_fields.delete().where(subscriber_fields.c.subscriber_id == found.id))
            connection.execute(events.update().where(events.c.subscriber_id == found.id).values(detail={}))
            connection.execute(
                deliveries.update()
                .where(deliveries.c.subscriber_id == found.id)
                .values(last_error=None, provider_id=None, lease_owner=None, lease_until=None)
            )
            key = address_hash(found.email)
            kept = connection.execute(sa.select(suppressions.c.email_hash).where(suppressions.c.email_hash == key))
            if kept.first() is None:
                connection.execute(suppressions.insert().values(email_hash=key, at=at))
            self._event(connection, found.id, None, "forgotten", "cli", {})
        return True

    def apply_event(
        self,
        kind: str,
        email: str,
        key: str | None,
        source: str,
        detail: dict,
        *,
        list_id: int | None = None,
        connection: Connection | None = None,
    ) -> int:
        """A provider's report (bounced, complained, unsubscribed) applied to memberships; return how many changed.

        With list_id, or our ledger key (campaign-subscriber), it applies to that list (the campaign's); without,
        to every list of the address. An address we do not know changes nothing. With our key, the event's detail
        names the campaign ("campaign": its id), which `newsletter delivery` ties the report to.
        """
        with self._writing(connection) as connection:
            subscriber_id = self.find_subscriber(email, connection=connection)
            if subscriber_id is None:
                return 0
            list_ids: list[int] = [list_id] if list_id is not None else []
            campaign_part = (key or "").partition("-")[0]
            if campaign_part.isdigit():
                campaign_list = connection.execute(
                    sa.select(campaigns.c.list_id).where(campaigns.c.id == int(campaign_part))
                ).scalar()
                if campaign_list is not None:  # the key is ours
                    detail = {**detail, "campaign": detail.get("campaign", int(campaign_part))}
                    list_ids = list_ids or [campaign_list]
            if not list_ids:
                list_ids = list(
                    connection.execute(
                        sa.select(memberships.c.list_id).where(memberships.c.subscriber_id == subscriber_id)
                    ).scalars()
                )
            return sum(self.set_status(subscriber_id, i, kind, source, detail, connection=connection) for i in list_ids)

    def apply_webhook(
        self,
        provider: str,
        token: str | None,
        reports: Sequence[tuple[str, str, str | None, dict]],
        *,
        keep: dt.timedelta,
        connection: Connection | None = None,
    ) -> int | None:
        """A provider's webhook: its reports (kind, address, ledger key, detail) applied as apply_event does, in one
        transaction with the reservation of its signed token; how many memberships changed, or None when that
        token was reserved before (a replay: nothing is applied).

        The reservation is a row of webhook_tokens, unique by provider and token, kept `keep` (as long as the
        provider's own check of the token's age would let it through): two requests with one token at once, on
        one server or several, and the same request after a restart, find it. On PostgreSQL the second insert
        waits for the first's transaction; on SQLite writers take turns. Reserved in the same transaction as
        the changes, so that a failure releases it with them and the provider's retry (which carries the same
        token) is applied. Without a token (the providers that sign the event itself), the reports only.
        """
        at = now()
        with self._writing(connection) as connection:
            if token is not None:
                reserved = connection.execute(
                    _insert_ignoring(connection.dialect.name, webhook_tokens).returning(webhook_tokens.c.token),
                    {"provider": provider, "token": token, "seen_at": at, "kept_until": at + keep},
                ).first()  # no row when the token was there (psycopg's rowcount is -1 for this insert)
                if reserved is None:
                    return None
            return sum(
                self.apply_event(kind, email, key, "webhook", detail, connection=connection)
                for kind, email, key, detail in reports
            )

    def forget_webhook_tokens(self, at: dt.datetime | None = None, *, connection: Connection | None = None) -> int:
        """Remove the webhook tokens whose provider would refuse them by their age anyway; return how many."""
        past = webhook_tokens.c.kept_until < (at or now())
        with self._writing(connection) as connection:
            return connection.execute(webhook_tokens.delete().where(past)).rowcount
