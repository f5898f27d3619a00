"""The schema: every table, the numbered migrations that make a database what this version needs, and
Schema.version/upgrade, which apply them (each in its own transaction).

Migration 1 creates today's tables whole; later ones bring a database made by an earlier version up to them.
Never change a migration that has shipped: add the next one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.errors import NewsletterError
from newsletter.fields import field_key
from newsletter.slugs import LIST_SLUG, slugify
from newsletter.store.engine import StoreBase, engine_name, now
from newsletter.store.statuses import CampaignStatus

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)
subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(300)),
    sa.Column("fields", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Added by migration 11: the language they read in (fr, en); None: each list's first language.
    sa.Column("lang", sa.String(8)),
)
lists = sa.Table(
    "lists",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slug", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
list_aliases = sa.Table(
    "list_aliases",
    metadata,
    sa.Column("name", sa.String(300), primary_key=True),  # what the list was called before it had a slug
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id"), nullable=False),
)
memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Added by migration 8: when they joined the list (what a segment's `joined` compares), kept through changes.
    sa.Column("joined_at", sa.DateTime(timezone=True)),
    sa.Index("memberships_by_list", "list_id", "status", "subscriber_id"),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id")),
    sa.Column("kind", sa.String(32), nullable=False),  # subscribed, unsubscribed, bounced, complained, updated
    sa.Column("source", sa.String(32), nullable=False),  # import, cli, one-click, page, webhook, send
    sa.Column("detail", sa.JSON, nullable=False, default=dict),
    sa.Index("events_by_subscriber", "subscriber_id", "at"),
    # The sign-ups of the last day, which a server looks through for confirmations that never went.
    sa.Index(
        "events_signups_by_time",
        "at",
        sqlite_where=sa.text("kind = 'signup-requested'"),
        postgresql_where=sa.text("kind = 'signup-requested'"),
    ),
)
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id"), nullable=False),
    sa.Column("issue_slug", sa.String(200), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(998), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # Added by migration 3: the campaign as a unit of work that any sender on any host can pick up.
    # 32 since migration 7 ("awaiting-approval" is 17 characters).
    sa.Column("status", sa.String(32), nullable=False, server_default=CampaignStatus.RUNNING.value),
    sa.Column("scheduled_at", sa.DateTime(timezone=True)),  # not sent before; None: at once
    sa.Column("expires_at", sa.DateTime(timezone=True)),  # never started after (scheduled_at + max_lateness)
    sa.Column("started_at", sa.DateTime(timezone=True)),  # when its audience was fixed
    sa.Column("content", sa.JSON),  # the rendered issue and what every message shares (sending.frozen.FrozenCampaign)
    sa.Column("next_send_at", sa.DateTime(timezone=True)),  # the campaign-wide rate limit: the next free slot
    # Added by migration 12: a list's welcome email (sending/welcome.py), whose ledger gains a row per person who
    # joins; it never finishes, and no list of sends, status, archive index nor whole-list send takes it for one.
    sa.Column("welcome", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("campaigns_by_issue", "issue_slug", "list_id"),
    sa.Index("campaigns_by_status", "status"),
    sa.Index("campaigns_by_list", "list_id", "started_at"),  # added by migration 9: a list's latest campaigns
)
campaign_sends = sa.Table(  # how many messages each sender handed over, when: the campaign-wide per_hour limit
    "campaign_sends",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Index("campaign_sends_by_time", "campaign_id", "at"),
)
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), primary_key=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("provider_id", sa.String(300)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Added by migration 3: a pending row claimed by a sender is its own until lease_until (then anyone's again).
    sa.Column("lease_owner", sa.String(120)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Index("deliveries_by_status", "campaign_id", "status", "subscriber_id"),
    # Added by migration 9: one person's deliveries (a bounce's soft count, `newsletter delivery ADDRESS`).
    sa.Index("deliveries_by_subscriber", "subscriber_id", "campaign_id"),
)


suppressions = sa.Table(  # people erased at their request: a one-way hash of the address, nothing else
    "suppressions",
    metadata,
    sa.Column("email_hash", sa.String(64), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


webhook_tokens = sa.Table(  # the signed tokens of the provider webhooks acted on: the same one again is a replay
    "webhook_tokens",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("token", sa.Text, primary_key=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kept_until", sa.DateTime(timezone=True), nullable=False),  # the provider refuses it by its age after
    sa.Index("webhook_tokens_by_time", "kept_until"),
)


approval_requests = sa.Table(  # one row per approver asked to approve a campaign awaiting approval (approvals.py)
    "approval_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), nullable=False),
    sa.Column("approver", sa.String(320), nullable=False),  # the address asked
    sa.Column("requested_by", sa.Text, nullable=False),  # who asked, as the caller says it ("agent via MCP")
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("required", sa.Integer, nullable=False),  # approvals by distinct approvers that approve the campaign
    sa.Column("nonce_hash", sa.String(64), nullable=False),  # SHA-256 of the nonce the approval link carries
    sa.Column("content_digest", sa.String(128), nullable=False),  # the frozen content and audience it is bound to
    sa.Column("used_at", sa.DateTime(timezone=True)),
    sa.Column("decision", sa.String(16)),  # approved, declined; None until used
    sa.Column("decided_by", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Index("approval_requests_by_campaign", "campaign_id"),
)


campaign_events = sa.Table(  # what happened to a campaign, and who did it: approval requests, views, decisions
    "campaign_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False, default=dict),  # who, a keyed hash of their IP, a comment
    sa.Index("campaign_events_by_campaign", "campaign_id", "at"),
)


subscriber_tags = sa.Table(  # a subscriber's tags, matched by fields.tag_key: what a segment's tag:X finds
    "subscriber_tags",
    metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), primary_key=True),
    sa.Column("tag_key", sa.String(200), primary_key=True),
    sa.Column("tag", sa.String(200), nullable=False),  # as first written
    sa.Index("subscriber_tags_by_key", "tag_key", "subscriber_id"),
)


field_names = sa.Table(  # every field name ever written to a subscriber, by key: which fields a list's members have
    "field_names",
    metadata,
    sa.Column("field_key", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
)


bounce_messages = sa.Table(  # every message of the bounce mailbox a scan acted on: never acted on twice
    "bounce_messages",
    metadata,
    sa.Column("identity", sa.String(64), primary_key=True),  # SHA-256 of its bytes, the same in any folder
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("mailbox", sa.String(500), nullable=False),  # where it was read (no secret in it)
    sa.Column("kind", sa.String(32), nullable=False),  # bounce, complaint, auto-reply, challenge
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id")),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id")),
    sa.Column("detail", sa.JSON, nullable=False, default=dict),  # what was decided: status code, severity, subject
)


subscriber_fields = sa.Table(  # the values of subscribers.fields as a segment compares them: what `f = v` finds
    "subscriber_fields",
    metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), primary_key=True),
    sa.Column("field_key", sa.String, primary_key=True),  # fields.field_key of the name, through index_text
    sa.Column("value_key", sa.String, primary_key=True),  # the value lower-cased (str.lower), through index_text
    # What PostgreSQL hashes a segment's members from. SQLite's plan probes the primary key for each member instead
    # (store/segments.py), and never reads this index: it would only double the cost of an import's fields there.
    sa.Index("subscriber_fields_by_value", "field_key", "value_key", "subscriber_id").ddl_if(dialect="postgresql"),
    sqlite_with_rowid=False,  # the table is its primary key's B-tree: one structure fewer to write
)

INDEXED_CHARS = 200  # a key or value longer than this is indexed as its start and a hash of the whole


def index_text(text: str) -> str:
    """A field's key or lower-cased value as subscriber_fields holds it: whole up to INDEXED_CHARS characters, else
    its first INDEXED_CHARS and the SHA-256 of the whole (an index entry has a size limit, some 2,700 bytes on
    PostgreSQL), which is longer than any text kept whole, so that two texts have one form only if they are equal."""
    if len(text) <= INDEXED_CHARS:
        return text
    return text[:INDEXED_CHARS] + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=4096)  # an import's few names, on each of its million rows
def _indexed_key(name: str) -> str:
    return index_text(field_key(name))


def field_index_rows(subscriber_id: int, fields: Mapping[str, object]) -> list[tuple[int, str, str]]:
    """The subscriber_fields rows of one subscriber's fields: (subscriber, key, value) for each value that is not
    empty, as newsletter/segments.py's reference matches it (str.lower; every name of a key, each value once)."""
    found: dict[tuple[str, str], None] = {}
    for name, value in fields.items():
        if value is None or value == "":
            continue
        if key := _indexed_key(name):
            text = (value if isinstance(value, str) else str(value)).lower()
            found[key, text if len(text) <= INDEXED_CHARS else index_text(text)] = None
    return [(subscriber_id, key, value) for key, value in found]


def _migration_1(connection: Connection) -> None:
    metadata.create_all(connection, tables=[subscribers, lists, memberships, events, campaigns, deliveries])


def _migration_2(connection: Connection) -> None:
    """Give a slug to every list created under another name (capitals, spaces, accents), keeping that name as its
    display name and as an alias, which the unsubscribe links already sent carry."""
    metadata.create_all(connection, tables=[list_aliases])
    rows = connection.execute(sa.select(lists.c.id, lists.c.slug).order_by(lists.c.id)).all()
    taken = {row.slug for row in rows}
    for row in rows:
        if LIST_SLUG.fullmatch(row.slug):
            continue
        slug = base = slugify(row.slug)
        number = 1
        while slug in taken:
            number += 1
            slug = f"{base[: 99 - len(str(number))]}-{number}"
        taken.add(slug)
        connection.execute(lists.update().where(lists.c.id == row.id).values(slug=slug))
        connection.execute(list_aliases.insert().values(name=row.slug, list_id=row.id))


def _add_columns(connection: Connection, table: sa.Table, names: Sequence[str]) -> None:
    """ALTER TABLE … ADD COLUMN for each named column the table lacks (migration 1 creates today's tables whole)."""
    present = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
    for name in names:
        if name not in present:
            column = sa.schema.CreateColumn(table.c[name]).compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column}")


def _migration_3(connection: Connection) -> None:
    """The ledger as a shared work queue: campaign statuses, schedules and frozen content; leases on rows."""
    _add_columns(
        connection, campaigns, ["status", "scheduled_at", "expires_at", "started_at", "content", "next_send_at"]
    )
    _add_columns(connection, deliveries, ["lease_owner", "lease_until"])
    metadata.create_all(connection, tables=[campaign_sends])
    next(i for i in campaigns.indexes if i.name == "campaigns_by_status").create(connection, checkfirst=True)
    connection.execute(
        campaigns.update().where(campaigns.c.finished_at.is_not(None)).values(status=CampaignStatus.FINISHED)
    )
    connection.execute(
        campaigns.update().where(campaigns.c.started_at.is_(None)).values(started_at=campaigns.c.created_at)
    )


def _migration_4(connection: Connection) -> None:
    """Suppressions: what is left of a person erased at their request (subscribers forget)."""
    metadata.create_all(connection, tables=[suppressions])


def _migration_5(connection: Connection) -> None:
    """An index of the sign-up requests by time: confirmations that never went are found and sent again."""
    next(i for i in events.indexes if i.name == "events_signups_by_time").create(connection, checkfirst=True)


def _migration_6(connection: Connection) -> None:
    """The webhook tokens acted on, so that a replay is refused by every server, and after a restart."""
    metadata.create_all(connection, tables=[webhook_tokens])


def _migration_7(connection: Connection) -> None:
    """A person's approval of a campaign: its status widened for "awaiting-approval" (PostgreSQL enforces the
    length, SQLite does not), the approval requests and the campaign events."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE campaigns ALTER COLUMN status TYPE VARCHAR(32)")
    metadata.create_all(connection, tables=[approval_requests, campaign_events])


def _migration_8(connection: Connection) -> None:
    """Tags, the registry of field names, and when each member joined (their first subscription to that list, as
    the event log has it, else the membership's last change)."""
    metadata.create_all(connection, tables=[subscriber_tags, field_names])
    _add_columns(connection, memberships, ["joined_at"])
    first_subscribed = (
        sa.select(sa.func.min(events.c.at))
        .where(
            events.c.subscriber_id == memberships.c.subscriber_id,
            events.c.list_id == memberships.c.list_id,
            events.c.kind == "subscribed",
        )
        .scalar_subquery()
    )
    connection.execute(
        memberships.update().values(joined_at=sa.func.coalesce(first_subscribed, memberships.c.updated_at))
    )
    names: set[tuple[str, str]] = set()
    for (document,) in connection.execute(sa.select(subscribers.c.fields).execution_options(yield_per=5000)):
        names.update((field_key(name), name) for name in (document or {}) if field_key(name))
    if names:
        connection.execute(field_names.insert(), [{"field_key": k, "name": n} for k, n in sorted(names)])


def _migration_9(connection: Connection) -> None:
    """Bounces read from a mailbox: the messages acted on; indexes of one person's deliveries and of a list's
    latest campaigns (a soft-bounce count, `newsletter delivery ADDRESS`, `subscribers show`)."""
    metadata.create_all(connection, tables=[bounce_messages])
    next(i for i in deliveries.indexes if i.name == "deliveries_by_subscriber").create(connection, checkfirst=True)
    next(i for i in campaigns.indexes if i.name == "campaigns_by_list").create(connection, checkfirst=True)


def _migration_10(connection: Connection) -> None:
    """The index of field values (subscriber_fields), filled from every subscriber's fields: read a few thousand
    at a time (the fields as text: most subscribers have none to parse), written a few thousand rows a statement."""
    from newsletter.store.attributes import index_fields  # attributes.py builds on these tables

    metadata.create_all(connection, tables=[subscriber_fields])
    documents = sa.select(subscribers.c.id, sa.cast(subscribers.c.fields, sa.Text)).where(
        sa.cast(subscribers.c.fields, sa.Text) != "{}"
    )
    for partition in connection.execute(documents.execution_options(yield_per=5000)).partitions():
        rows = []
        for subscriber_id, text in partition:
            rows.extend(field_index_rows(subscriber_id, json.loads(text) or {}))
        index_fields(connection, rows)
    if connection.dialect.name == "postgresql":  # the planner's statistics of the new table, before any segment
        connection.exec_driver_sql("ANALYZE subscriber_fields")


def _migration_11(connection: Connection) -> None:
    """A reader's language: subscribers.lang, None for everyone until they choose or an import says."""
    _add_columns(connection, subscribers, ["lang"])


def _migration_12(connection: Connection) -> None:
    """Welcome emails: a campaign may be a list's welcome (campaigns.welcome), every earlier one is not."""
    _add_columns(connection, campaigns, ["welcome"])


MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _migration_1),
    (2, _migration_2),
    (3, _migration_3),
    (4, _migration_4),
    (5, _migration_5),
    (6, _migration_6),
    (7, _migration_7),
    (8, _migration_8),
    (9, _migration_9),
    (10, _migration_10),
    (11, _migration_11),
    (12, _migration_12),
]


def address_hash(email: str) -> str:
    """The one-way hash a suppression keeps of an address (lower-cased, as email_key)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


class Schema(StoreBase):
    def version(self, *, connection: Connection | None = None) -> int:
        with self._reading(connection) as reading:
            if not sa.inspect(reading).has_table("schema_version"):
                return 0
            return reading.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    def missing(self, *, connection: Connection | None = None) -> list[int]:
        """The numbers of the migrations this database lacks (all of them when it has no schema yet)."""
        with self._reading(connection) as reading:
            if not sa.inspect(reading).has_table("schema_version"):
                return [number for number, _ in MIGRATIONS]
            applied = set(reading.execute(sa.select(schema_version.c.version)).scalars())
        return [number for number, _ in MIGRATIONS if number not in applied]

    def upgrade(self, to: int | None = None) -> list[int]:
        """Apply the migrations this database lacks (up to version `to`, by default all); return their numbers.

        Each migration commits on its own, so upgrade takes no caller's connection."""
        try:
            with self.transaction() as connection:
                metadata.create_all(connection, tables=[schema_version])
            applied = []
            for number, migrate in MIGRATIONS:
                if number > (to or number):
                    break
                with self.transaction() as connection:
                    if connection.dialect.name == "postgresql":  # two `db upgrade` at once: the second waits
                        connection.exec_driver_sql("LOCK TABLE schema_version IN EXCLUSIVE MODE")
                    # By number, not by the highest: a migration numbered below one applied already (a gap that
                    # two branches' numbers left, filled later) is still applied once.
                    if connection.execute(
                        sa.select(schema_version.c.version).where(schema_version.c.version == number)
                    ).first():
                        continue
                    migrate(connection)
                    connection.execute(schema_version.insert().values(version=number, applied_at=now()))
                applied.append(number)
            return applied
        except sa.exc.OperationalError as exc:
            raise NewsletterError(f"cannot open the database {engine_name(str(self.engine.url))}: {exc.orig}") from None
