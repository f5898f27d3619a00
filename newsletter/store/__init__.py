"""The store: subscribers, lists, memberships, the event log, campaigns and the deliveries ledger.

The only part of newsletter that speaks SQL, through SQLAlchemy Core, so that one code runs on the embedded
default (SQLite in WAL mode, subscribers/newsletter.db) and on PostgreSQL
(NEWSLETTER_DATABASE_URL=postgresql+psycopg://…). One module per concern, each statement beside the method
that runs it:

- engine.py: opening the database, transactions, SQLite's settings, the many-rows helpers; now().
- statuses.py: MembershipStatus, DeliveryStatus, CampaignStatus (stored as their plain strings).
- schema.py: the tables and the numbered migrations (version, upgrade).
- lists.py: lists, by slug or former name.
- subscribers.py: subscribers, memberships and their events; an import's batches; a list's members.
- attributes.py: subscribers' tags, the index of their fields' values, and the registry of field names.
- signups.py: sign-ups through a form (double opt-in), their confirmations, the purge of unconfirmed ones.
- erasure.py: a person's data and its erasure (suppressions); the providers' reports and webhook tokens.
- campaigns.py: campaigns, and TRANSITIONS, the one table of allowed status changes.
- ledger.py: the deliveries ledger as a leased work queue (claim, renew, release, record, reserve, counts).
- bounces.py: the messages of the bounce mailbox acted on, and what each does to a person (soft-bounce counts).
- approvals.py: a person's approval of a campaign: requests, single-use decisions, the campaign's events.
- segments.py: a segment (newsletter/segments.py) as SQL, and a list's members in it: counted, sampled, streamed.
- deliveries.py: one person's deliveries over the latest campaigns of their lists (`newsletter delivery`).
- welcomes.py: a list's welcome emails: campaigns that never finish, a row queued for each person who joins.

Store, below, is all of them in one object: `store.claim(...)`, `store.subscribe(...)`.

The calling convention, for every method that reads or writes: it takes `connection`, keyword-only and last.
Given one, the method runs in the caller's transaction and never begins, commits or rolls back (several calls
in one transaction: `with store.transaction() as connection: store.a(..., connection=connection); store.b(...)`).
Without one (the default), a read opens a connection of its own, and a write a transaction of its own, committed
before it returns. The exceptions say so: upgrade commits each migration on its own, and lock_list needs the
caller's transaction (a lock of its own would end at once). Reads never write.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from newsletter.errors import NewsletterError
from newsletter.slugs import LIST_SLUG, slugify
from newsletter.store.approvals import ApprovalRequest, Approvals, CampaignEvent, DecisionResult
from newsletter.store.bounces import BounceEffect, BounceMail
from newsletter.store.campaigns import TRANSITIONS, CampaignRow, Campaigns, allowed_from
from newsletter.store.deliveries import Deliveries, PersonDeliveries
from newsletter.store.engine import DEFAULT_DATABASE, create_engine, database_url, engine_name, now
from newsletter.store.erasure import Erasure
from newsletter.store.ledger import Delivery, Ledger, Result
from newsletter.store.lists import ListNameError, ListRow, Lists
from newsletter.store.schema import (
    MIGRATIONS,
    Schema,
    address_hash,
    approval_requests,
    bounce_messages,
    campaign_events,
    campaign_sends,
    campaigns,
    deliveries,
    events,
    field_names,
    list_aliases,
    lists,
    memberships,
    metadata,
    schema_version,
    subscriber_fields,
    subscriber_tags,
    subscribers,
    suppressions,
    webhook_tokens,
)
from newsletter.store.segments import Segments, segment_clause
from newsletter.store.signups import (
    CLAIM_LEASE,
    SIGNUPS_COUNTED,
    AskedSignup,
    SignupConfirmation,
    SignupRequest,
    Signups,
    UnsentConfirmation,
)
from newsletter.store.statuses import CampaignStatus, DeliveryStatus, MembershipStatus
from newsletter.store.subscribers import ChangeResult, Member, StatusChange, Subscribers, Subscription
from newsletter.store.welcomes import Welcomes


class Store(Schema, Lists, Signups, Erasure, BounceMail, Welcomes, Ledger, Approvals, Segments, Deliveries):
    """Every part of the store over one engine (see the module's docstring for how its methods are called)."""

    @classmethod
    def open(cls, url: str, *, upgrade: bool | None = None) -> Store:
        """Open the store. SQLite (one host) is upgraded as it opens; PostgreSQL, which several hosts may share,
        only by `newsletter db upgrade` (upgrade=True), so that no two processes race to migrate it."""
        engine = create_engine(url)
        store = cls(engine)
        if upgrade if upgrade is not None else engine.dialect.name == "sqlite":
            store.upgrade()
        elif upgrade is None and store.missing():
            raise NewsletterError(
                f"the database {engine_name(url)} is at schema version {store.version()} and this newsletter needs "
                f"{MIGRATIONS[-1][0]}: run `newsletter db upgrade`"
            )
        return store


__all__ = [
    "CLAIM_LEASE",
    "DEFAULT_DATABASE",
    "LIST_SLUG",
    "MIGRATIONS",
    "SIGNUPS_COUNTED",
    "TRANSITIONS",
    "ApprovalRequest",
    "Approvals",
    "AskedSignup",
    "BounceEffect",
    "BounceMail",
    "CampaignEvent",
    "CampaignRow",
    "CampaignStatus",
    "Campaigns",
    "ChangeResult",
    "Connection",
    "DecisionResult",
    "Deliveries",
    "Delivery",
    "DeliveryStatus",
    "Erasure",
    "Ledger",
    "ListNameError",
    "ListRow",
    "Lists",
    "Member",
    "MembershipStatus",
    "PersonDeliveries",
    "Result",
    "Schema",
    "Segments",
    "SignupConfirmation",
    "SignupRequest",
    "Signups",
    "StatusChange",
    "Store",
    "Subscribers",
    "Subscription",
    "UnsentConfirmation",
    "Welcomes",
    "address_hash",
    "allowed_from",
    "approval_requests",
    "bounce_messages",
    "campaign_events",
    "campaign_sends",
    "campaigns",
    "database_url",
    "deliveries",
    "engine_name",
    "events",
    "field_names",
    "list_aliases",
    "lists",
    "memberships",
    "metadata",
    "now",
    "schema_version",
    "segment_clause",
    "slugify",
    "subscriber_fields",
    "subscriber_tags",
    "subscribers",
    "suppressions",
    "webhook_tokens",
]
