"""Welcome emails: a list's welcome is a campaign of its own (campaigns.welcome) per version of its content, which
runs from the moment it is made and never finishes, and whose ledger gains a pending row for each person who joins
(queue_welcome), in the transaction that subscribes them: nobody is subscribed without their welcome queued, and
the senders (serve, the worker) take the rows as they take any campaign's (ledger.py's claim and record).

A person gets one welcome per list, ever: a row is queued only for a member subscribed now who has no row in any
welcome of that list (whatever became of it), and the insert ignores a row already there, so that two servers
confirming one person at once queue one row. On PostgreSQL the members' rows are locked first (FOR UPDATE), so
that the second of two transactions at once sees the first's row; SQLite's write transaction is exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.engine import _TIME, _Among, _insert_ignoring, now
from newsletter.store.ledger import Ledger
from newsletter.store.schema import campaigns, deliveries, memberships, subscribers
from newsletter.store.statuses import CampaignStatus, DeliveryStatus, MembershipStatus

# The statuses of a welcome that still takes newcomers: paused, their rows wait for `campaign resume`.
TAKING = (CampaignStatus.RUNNING, CampaignStatus.PAUSED)

_MEMBERS = (  # the members among these addresses, locked (PostgreSQL) until the welcome rows are written
    sa.select(memberships.c.subscriber_id)
    .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
    .where(memberships.c.list_id == sa.bindparam("w_list"), _Among(subscribers.c.email_key, "w_keys"))
    .with_for_update(of=memberships)
)
_WELCOMED = (  # the member already has a row in a welcome of the list: a person is welcomed once
    sa.select(deliveries.c.subscriber_id)
    .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
    .where(
        deliveries.c.subscriber_id == memberships.c.subscriber_id,
        campaigns.c.list_id == sa.bindparam("w_list"),
        campaigns.c.welcome,
    )
    .exists()
)
_NEWCOMERS = (
    sa.select(
        sa.bindparam("w_campaign", type_=sa.Integer).label("campaign_id"),
        memberships.c.subscriber_id,
        sa.literal(DeliveryStatus.PENDING.value).label("status"),
        sa.literal(0).label("attempts"),
        sa.bindparam("w_at", type_=_TIME).label("updated_at"),
    )
    .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
    .where(
        memberships.c.list_id == sa.bindparam("w_list"),
        memberships.c.status == MembershipStatus.SUBSCRIBED.value,
        _Among(subscribers.c.email_key, "w_keys"),
        ~_WELCOMED,
    )
)
_COLUMNS = ["campaign_id", "subscriber_id", "status", "attempts", "updated_at"]


class Welcomes(Ledger):
    def welcome_campaigns(
        self, list_id: int, issue_slug: str, content_hash: str, *, connection: Connection | None = None
    ) -> list[int]:
        """The list's welcome emails of this issue and content that still take newcomers, newest first (their ids:
        the caller reads the content of those it does not know, store.campaign)."""
        with self._reading(connection) as reading:
            return list(
                reading.execute(
                    sa.select(campaigns.c.id)
                    .where(
                        campaigns.c.list_id == list_id,
                        campaigns.c.issue_slug == issue_slug,
                        campaigns.c.content_hash == content_hash,
                        campaigns.c.welcome,
                        campaigns.c.status.in_(TAKING),
                    )
                    .order_by(campaigns.c.id.desc())
                ).scalars()
            )

    def create_welcome(
        self,
        list_id: int,
        issue_slug: str,
        content_hash: str,
        subject: str,
        content: dict,
        *,
        connection: Connection | None = None,
    ) -> int:
        """A new welcome email of the list: running at once, with no row yet (queue_welcome adds them); its id.
        The caller holds the list (lock_list), so that two servers at once make one."""
        return self.create_campaign(
            list_id, issue_slug, content_hash, subject, content, welcome=True, connection=connection
        )

    def queue_welcome(
        self, campaign_id: int, list_id: int, emails: Sequence[str], *, connection: Connection | None = None
    ) -> int:
        """A pending row of the welcome `campaign_id` for each of these addresses that is subscribed to the list and
        never had a welcome of it; how many were queued."""
        if not emails:
            return 0
        keys = sorted({email.lower() for email in emails})
        with self._writing(connection) as writing:
            writing.execute(_MEMBERS, {"w_list": list_id, "w_keys": keys}).all()
            insert = _insert_ignoring(writing.dialect.name, deliveries).from_select(_COLUMNS, _NEWCOMERS)
            values = {"w_campaign": campaign_id, "w_list": list_id, "w_keys": keys, "w_at": now()}
            # RETURNING the rows inserted: psycopg's rowcount of an INSERT … SELECT is not to be relied on.
            return len(writing.execute(insert.returning(deliveries.c.subscriber_id), values).all())
