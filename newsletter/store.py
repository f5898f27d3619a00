"""The store: subscribers, lists, memberships, the event log, campaigns and the deliveries ledger.

The only module that speaks SQL, through SQLAlchemy Core, so that one code runs on the embedded default (SQLite
in WAL mode, subscribers/newsletter.db) and on PostgreSQL (NEWSLETTER_DATABASE_URL=postgresql+psycopg://…).

- An address is unique case-insensitively: `email_key` is its lower-cased form; `email` keeps it as given.
- A membership's status is subscribed, unsubscribed, bounced or complained. Nothing here ever turns the last
  three back into subscribed except an explicit resubscribe by the subscriber (issue #4's undo).
- `events` is append-only: who, when, how each subscription and unsubscription happened (CASL's consent record).
- `deliveries` is the ledger: one row per (campaign, subscriber), inserted when the campaign starts (the audience
  is fixed then), moving from pending to sent, failed or skipped. A row is final once it leaves pending.
- A list is named by its slug (lowercase letters, digits, hyphens): it goes into every unsubscribe link and the
  List-Id header. Its `name` is what subscribers are shown. A list that an earlier version created under another
  name (migration 2 gave it a slug) is still found by that name in `list_aliases`, so the links already sent work.
- Migrations are numbered; `upgrade()` applies the missing ones in order, each in its own transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import heapq
import itertools
import json
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles

from newsletter.errors import NewsletterError

SUBSCRIBED, UNSUBSCRIBED, BOUNCED, COMPLAINED = "subscribed", "unsubscribed", "bounced", "complained"
UNCONFIRMED = "pending"  # signed up through a form, not yet confirmed: never mailed but the confirmation
STATUSES = (SUBSCRIBED, UNCONFIRMED, UNSUBSCRIBED, BOUNCED, COMPLAINED)
PENDING, SENT, FAILED, SKIPPED = "pending", "sent", "failed", "skipped"
SCHEDULED, RUNNING, PAUSED, FINISHED, CANCELLED, EXPIRED = (
    "scheduled", "running", "paused", "finished", "cancelled", "expired"
)  # fmt: skip
CAMPAIGN_STATUSES = (SCHEDULED, RUNNING, PAUSED, FINISHED, CANCELLED, EXPIRED)
DEFAULT_DATABASE = "subscribers/newsletter.db"
log = logging.getLogger("newsletter.store")
LIST_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
IMPORT_CACHE_KB = 16_384  # SQLite's page cache for an import's connection (its default is 2 MB)

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
    sa.Column("status", sa.String(16), nullable=False, server_default=RUNNING),
    sa.Column("scheduled_at", sa.DateTime(timezone=True)),  # not sent before; None: at once
    sa.Column("expires_at", sa.DateTime(timezone=True)),  # never started after (scheduled_at + max_lateness)
    sa.Column("started_at", sa.DateTime(timezone=True)),  # when its audience was fixed
    sa.Column("content", sa.JSON),  # the rendered issue and what every message shares (CampaignContent)
    sa.Column("next_send_at", sa.DateTime(timezone=True)),  # the campaign-wide rate limit: the next free slot
    sa.Index("campaigns_by_issue", "issue_slug", "list_id"),
    sa.Index("campaigns_by_status", "status"),
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
    connection.execute(campaigns.update().where(campaigns.c.finished_at.is_not(None)).values(status=FINISHED))
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


MIGRATIONS = [
    (1, _migration_1), (2, _migration_2), (3, _migration_3), (4, _migration_4), (5, _migration_5), (6, _migration_6)
]  # fmt: skip


def address_hash(email: str) -> str:
    """The one-way hash a suppression keeps of an address (lower-cased, as email_key)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


_LETTERS_WITHOUT_DECOMPOSITION = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "ł": "l", "đ": "d"})


def slugify(name: str) -> str:
    """'Membres 2025' -> 'membres-2025'; 'Élèves_FR' -> 'eleves-fr': a valid list slug for any name."""
    spelled = name.lower().translate(_LETTERS_WITHOUT_DECOMPOSITION)
    plain = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", plain).strip("-")[:100].rstrip("-") or "list"


class ListNameError(NewsletterError):
    """A list would be created under a name that is not a slug."""

    def __init__(self, name: str):
        self.suggestion = slugify(name)
        super().__init__(
            f"'{name}' cannot name a list: it goes into every unsubscribe link, so use lowercase letters, digits and "
            f'hyphens, e.g. --list {self.suggestion} --list-name "{name}" (the name subscribers see)'
        )


def _list_named(name: str) -> sa.ColumnElement[bool]:
    """The list whose slug is name, or which was called name before it had a slug."""
    alias = sa.select(list_aliases.c.list_id).where(list_aliases.c.name == name).scalar_subquery()
    return sa.or_(lists.c.slug == name, lists.c.id == alias)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def database_url(root: Path) -> str:
    """NEWSLETTER_DATABASE_URL, else the SQLite file subscribers/newsletter.db in the workspace."""
    url = os.environ.get("NEWSLETTER_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{root / DEFAULT_DATABASE}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event below starts the transactions
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the sender's writes
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; safe with WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """Writes take SQLite's lock at BEGIN (IMMEDIATE): a deferred transaction that read first could not wait for
    it, and would fail with 'database is locked' as soon as another process wrote in between."""
    immediate = connection.get_execution_options().get("newsletter_write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass(frozen=True)
class ListRow:
    id: int
    slug: str
    name: str  # shown to subscribers; the slug when none was given

    def title(self, default: str) -> str:
        """The name to show subscribers: the list's own, else default (the newsletter's name)."""
        return default if self.name == self.slug else self.name


@dataclass(frozen=True)
class Member:
    subscriber_id: int
    email: str
    name: str | None
    fields: dict
    status: str


@dataclass(frozen=True)
class CampaignRow:
    id: int
    list_id: int
    issue_slug: str
    content_hash: str
    subject: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    status: str = RUNNING
    scheduled_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    content: dict | None = None  # what every message shares, frozen when the campaign was made


@dataclass(frozen=True)
class Delivery:
    """A ledger row still to send, with the subscriber's membership status as it is now."""

    subscriber_id: int
    email: str
    name: str | None
    fields: dict
    attempts: int
    membership: str | None


@dataclass(frozen=True)
class Result:
    """An outcome to record in the ledger."""

    subscriber_id: int
    status: str  # sent, failed, skipped, or pending (retry later)
    provider_id: str | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    attempted: bool = True  # counts as an attempt
    bounce: bool = False  # also mark the membership bounced


@dataclass(frozen=True)
class Subscription:
    """One address to subscribe to a list among many (an import's row): what subscribe() takes."""

    email: str  # validated and normalised
    name: str | None
    fields: dict
    detail: dict  # for its event: where it came from (the file and line)


@dataclass(frozen=True)
class StatusChange:
    """One membership to move to `status`, if it is now in one of allowed_from (what a click asks)."""

    subscriber_id: int
    list_id: int
    status: str
    allowed_from: tuple[str, ...]
    source: str
    detail: dict


@dataclass(frozen=True)
class SignupRequest:
    """Someone asked, through a form, to join a list."""

    list_id: int
    email: str  # as validated and normalised
    name: str | None
    detail: dict  # what they saw and agreed to: the consent sentence, the page, the user agent, a hash of the IP


@dataclass(frozen=True)
class AskedSignup:
    """A sign-up request recorded, whose confirmation email is to go: to whom, and the request its link confirms."""

    subscriber_id: int
    request_id: int  # the request's signup-requested event


@dataclass(frozen=True)
class UnsentConfirmation:
    """A sign-up whose confirmation email never went."""

    subscriber_id: int
    list_id: int
    list_slug: str
    email: str
    name: str | None
    request_id: int  # the request its link confirms


@dataclass(frozen=True)
class ChangeResult:
    before: str | None  # the membership's status before; None when there is no such membership
    email: str | None

    @property
    def found(self) -> bool:
        return self.before is not None


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._writing = threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        self._durable_engine: Engine | None = None

    @classmethod
    def open(cls, url: str, *, upgrade: bool | None = None) -> Store:
        """Open the store. SQLite (one host) is upgraded as it opens; PostgreSQL, which several hosts may share,
        only by `newsletter db upgrade` (upgrade=True), so that no two processes race to migrate it."""
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise NewsletterError(f"cannot use the database {engine_name(url)}: {exc}") from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "begin", _sqlite_begin)
        store = cls(engine)
        if upgrade if upgrade is not None else engine.dialect.name == "sqlite":
            store.upgrade()
        elif upgrade is None and (version := store.version()) < MIGRATIONS[-1][0]:
            raise NewsletterError(
                f"the database {engine_name(url)} is at schema version {version} and this newsletter needs "
                f"{MIGRATIONS[-1][0]}: run `newsletter db upgrade`"
            )
        return store

    def close(self) -> None:
        self.engine.dispose()
        if self._durable_engine is not None:
            self._durable_engine.dispose()

    # Migrations

    def version(self) -> int:
        with self.engine.connect() as connection:
            if not sa.inspect(connection).has_table("schema_version"):
                return 0
            return connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    def upgrade(self, to: int | None = None) -> list[int]:
        """Apply the migrations this database lacks (up to version `to`, by default all); return their numbers."""
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
                    current = connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
                    if number <= current:
                        continue
                    migrate(connection)
                    connection.execute(schema_version.insert().values(version=number, applied_at=now()))
                applied.append(number)
            return applied
        except sa.exc.OperationalError as exc:
            raise NewsletterError(f"cannot open the database {engine_name(str(self.engine.url))}: {exc.orig}") from None

    # Lists and subscribers

    def ensure_list(self, connection: Connection, slug: str, name: str | None = None) -> int:
        """The list's id, creating it if needed (the only place lists are created: only under a slug).

        A name given for an existing list becomes its display name.
        """
        found = connection.execute(sa.select(lists.c.id, lists.c.name).where(_list_named(slug))).first()
        if found is not None:
            if name and name != found.name:
                connection.execute(lists.update().where(lists.c.id == found.id).values(name=name))
            return found.id
        if not LIST_SLUG.fullmatch(slug):
            raise ListNameError(slug)
        return connection.execute(
            lists.insert().values(slug=slug, name=name or slug, created_at=now()).returning(lists.c.id)
        ).scalar_one()

    def lookup_list(self, name: str) -> ListRow | None:
        """The list with this slug (or former name), or None."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(lists.c.id, lists.c.slug, lists.c.name).where(_list_named(name))).first()
        return ListRow(row.id, row.slug, row.name) if row else None

    def find_list(self, name: str) -> ListRow:
        """The list with this slug (or former name); NewsletterError naming the lists there are."""
        found = self.lookup_list(name)
        if found is None:
            raise NewsletterError(f"no list '{name}'; lists: {', '.join(self.list_slugs()) or 'none yet'}")
        return found

    def list_id(self, slug: str) -> int:
        return self.find_list(slug).id

    def list_slugs(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(lists.c.slug).order_by(lists.c.slug)).scalars())

    def subscribe(
        self,
        connection: Connection,
        list_id: int,
        email: str,
        name: str | None,
        fields: dict,
        source: str,
        detail: dict | None = None,
    ) -> str:
        """Add or update one subscriber on a list; return added, updated, unchanged or refused.

        A member who unsubscribed, bounced, complained, or signed up without confirming yet is refused, as is a
        person erased at their request: only they can subscribe again (undo, or a confirmed sign-up).
        """
        key = email.lower()
        at = now()
        row = connection.execute(
            sa.select(subscribers.c.id, subscribers.c.name, subscribers.c.fields).where(subscribers.c.email_key == key)
        ).first()
        changed = False
        if row is None and self.suppressed(connection, email):
            return "refused"  # erased at their request: only their own new confirmation brings them back
        if row is None:
            subscriber_id = connection.execute(
                subscribers.insert()
                .values(email=email, email_key=key, name=name, fields=fields, created_at=at)
                .returning(subscribers.c.id)
            ).scalar_one()
        else:
            subscriber_id = row.id
            merged = {**(row.fields or {}), **fields}
            new_name = name or row.name
            if new_name != row.name or merged != (row.fields or {}):
                connection.execute(
                    subscribers.update().where(subscribers.c.id == subscriber_id).values(name=new_name, fields=merged)
                )
                changed = True
        status = connection.execute(
            sa.select(memberships.c.status).where(
                memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id
            )
        ).scalar()
        if status is None:
            connection.execute(
                memberships.insert().values(
                    subscriber_id=subscriber_id, list_id=list_id, status=SUBSCRIBED, updated_at=at
                )
            )
            self._event(connection, subscriber_id, list_id, SUBSCRIBED, source, detail)
            return "added"
        if status != SUBSCRIBED:
            return "refused"
        if changed:
            self._event(connection, subscriber_id, list_id, "updated", source, detail)
            return "updated"
        return "unchanged"

    def set_status(
        self,
        connection: Connection,
        subscriber_id: int,
        list_id: int,
        status: str,
        source: str,
        detail: dict | None = None,
    ) -> bool:
        """Change a membership's status and log the event; return False when it already had that status."""
        current = connection.execute(
            sa.select(memberships.c.status).where(
                memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id
            )
        ).scalar()
        if current is None or current == status:
            return False
        connection.execute(
            memberships.update()
            .where(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)
            .values(status=status, updated_at=now())
        )
        self._event(connection, subscriber_id, list_id, status, source, detail)
        return True

    def _event(self, connection, subscriber_id, list_id, kind, source, detail) -> None:
        connection.execute(
            events.insert().values(
                at=now(), subscriber_id=subscriber_id, list_id=list_id, kind=kind, source=source, detail=detail or {}
            )
        )

    def membership(self, subscriber_id: int, list_slug: str) -> tuple[ListRow, str, str] | None:
        """(list, address, status) of one membership, in one query; None if there is none."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(lists.c.id, lists.c.slug, lists.c.name, subscribers.c.email, memberships.c.status)
                .join(memberships, memberships.c.list_id == lists.c.id)
                .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
                .where(_list_named(list_slug), memberships.c.subscriber_id == subscriber_id)
            ).first()
        return (ListRow(row.id, row.slug, row.name), row.email, row.status) if row else None

    def suppressed(self, connection: Connection, email: str) -> bool:
        return (
            connection.execute(
                sa.select(suppressions.c.email_hash).where(suppressions.c.email_hash == address_hash(email))
            ).first()
            is not None
        )

    # Sign-ups (double opt-in)

    def request_signups(
        self, connection: Connection, requests: Sequence[SignupRequest], *, every: dt.timedelta
    ) -> list[AskedSignup | None]:
        """Sign-ups through a form, in the caller's transaction; for each, the subscriber to send a confirmation
        to and the request it confirms, or None to send nothing.

        A new address becomes a pending (unconfirmed) member; whoever left or was erased stays as they are until
        they confirm. Nothing is sent to a member already subscribed, to a bounced or complained address, or past
        the address's limit, which counts its confirmations across every list, so that nobody's address can be
        made to receive them by the dozen from the open lists: with n requests of this address in the last day
        (SIGNUPS_COUNTED), the next needs every · 2^(n-1) since the latest (10 minutes, then 20, 40, 80…: at
        most 8 in any day, about 6 a day for good). A request held back leaves no trace (the person may ask again
        later) and is counted in the log, never named. Each request is an event (signup-requested) holding what
        the person saw and agreed to; its confirmation copies it; and those events are what the limit counts, so
        that it holds across processes, restarts and servers. A handful of statements serve the whole group; the
        subscribers' rows are locked (FOR UPDATE on PostgreSQL), so that two servers never both send to one
        address, nor both count without the other.
        """
        at = now()
        keys = list({r.email.lower() for r in requests})
        ids = dict(_SUBSCRIBER_IDS(connection, keys))
        new = {r.email.lower(): r.email for r in requests if r.email.lower() not in ids}
        if new:  # one executemany, then their ids (SQLite's RETURNING would take a statement per row)
            no_fields: dict = {}  # one object for the batch: _Many writes it once
            _INSERT_SUBSCRIBERS(connection, [(email, key, None, no_fields, at) for key, email in new.items()])
            ids.update(_SUBSCRIBER_IDS(connection, list(new)))
        wanted = {(ids[r.email.lower()], r.list_id) for r in requests}
        people = sorted({subscriber_id for subscriber_id, _ in wanted})
        statuses = {
            (subscriber_id, list_id): status
            for subscriber_id, list_id, status in _STATUSES(connection, people)
            if (subscriber_id, list_id) in wanted
        }
        found = connection.execute(_ASKED_SINCE, {"k_ids": people, "k_since": at - SIGNUPS_COUNTED})
        asked = {row.subscriber_id: (row.count, _aware(row.latest)) for row in found}
        chosen: list[tuple[int, int] | None] = []
        joined, logged, held, in_group = [], [], 0, set()
        for request in requests:
            subscriber_id = ids[request.email.lower()]
            pair = (subscriber_id, request.list_id)
            count, latest = asked.get(subscriber_id, (0, None))
            if statuses.get(pair) in (SUBSCRIBED, BOUNCED, COMPLAINED) or pair in in_group:
                chosen.append(None)  # nothing to confirm, or a second request in the same group
                continue
            if latest is not None and at - latest < every * 2 ** min(count - 1, 16):
                held += 1
                chosen.append(None)
                continue
            if pair not in statuses:
                statuses[pair] = UNCONFIRMED
                joined.append((subscriber_id, request.list_id, UNCONFIRMED, at))
            asked[subscriber_id] = (count + 1, at)
            in_group.add(pair)
            logged.append((at, subscriber_id, request.list_id, "signup-requested", "form",
                           {**request.detail, "name": request.name}))  # fmt: skip
            chosen.append(pair)
        if held:
            log.info("sign-ups held back by their address's limit, no confirmation sent: %d", held)
        if joined:
            _INSERT_MEMBERSHIPS(connection, joined)
        if not logged:
            return [None] * len(requests)
        _LOG_EVENTS(connection, logged)
        # The requests' ids, for their links: the rows stamped with this group's instant (one per person and list).
        requesting = sorted({pair[0] for pair in chosen if pair})
        request_ids = {(row.subscriber_id, row.list_id): row.id
                       for row in connection.execute(_REQUESTED_AT, {"k_ids": requesting, "k_at": at})}  # fmt: skip
        return [AskedSignup(pair[0], request_ids[pair]) if pair else None for pair in chosen]

    def _confirming(
        self, connection: Connection, subscriber_id: int, list_id: int, request_id: int | None
    ) -> tuple[sa.Row, dict, bool] | None:
        """What a confirmation link for sign-up request `request_id` may do: (the membership's status, address and
        name; the request's detail; whether that request is confirmed already), or None when it may do nothing.

        A link confirms its own request, once that request is the person's latest for the list and nothing has
        changed the membership since, but that request's own confirmation: a later request, an unsubscribe (and
        a resubscribe), a bounce, a complaint, a purge or an erasure make it void. request_id None: a link made
        before links named their request, taken for the latest request on the same terms.
        """
        row = connection.execute(
            sa.select(memberships.c.status, subscribers.c.email, subscribers.c.name)
            .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
            .where(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)
        ).first()
        if row is None or row.status in (BOUNCED, COMPLAINED):
            return None
        latest = connection.execute(
            sa.select(events.c.id, events.c.detail)
            .where(events.c.subscriber_id == subscriber_id, events.c.list_id == list_id,
                   events.c.kind == "signup-requested")
            .order_by(events.c.id.desc())
            .limit(1)
        ).first()  # fmt: skip
        if latest is None or request_id not in (None, latest.id):
            return None  # another request's link, or one who never asked through a form: only undo brings them back
        since = connection.execute(
            sa.select(events.c.kind, events.c.source)
            .where(events.c.subscriber_id == subscriber_id, events.c.list_id == list_id,
                   events.c.kind.in_(STATUSES), events.c.id > latest.id)
            .order_by(events.c.id)
        ).all()  # fmt: skip
        if not since:
            return row, latest.detail, row.status == SUBSCRIBED
        if [tuple(change) for change in since] == [(SUBSCRIBED, "double-opt-in")] and row.status == SUBSCRIBED:
            return row, latest.detail, True  # confirmed by this request's link, and nothing since: done
        return None

    def confirmable(self, subscriber_id: int, list_id: int, request_id: int | None) -> str | None:
        """The address a confirmation link for this request would subscribe (or has), or None if it may not."""
        with self.engine.connect() as connection:
            found = self._confirming(connection, subscriber_id, list_id, request_id)
        return found[0].email if found else None

    def confirm_signup(
        self, connection: Connection, subscriber_id: int, list_id: int, detail: dict, *, request_id: int | None
    ) -> str | None:
        """The person confirmed by the link of sign-up request `request_id`: subscribe them (consent recorded),
        idempotently, as long as _confirming lets that link (its own request, nothing changed since).

        Returns their address, or None when the link cannot subscribe (another request's, unsubscribed since,
        bounced, complained, gone).
        """
        found = self._confirming(connection, subscriber_id, list_id, request_id)
        if found is None:
            return None
        row, requested, done = found
        if done:
            return row.email
        consent = {"requested": requested, "confirmed": detail}
        self.set_status(connection, subscriber_id, list_id, SUBSCRIBED, "double-opt-in", consent)
        if not row.name and requested.get("name"):
            connection.execute(
                subscribers.update().where(subscribers.c.id == subscriber_id).values(name=requested["name"])
            )
        connection.execute(suppressions.delete().where(suppressions.c.email_hash == address_hash(row.email)))
        return row.email

    def confirmations_done(self, connection: Connection, done: Sequence[tuple[int, int, str | None]]) -> None:
        """Record what became of confirmation emails, (subscriber, list, None once the mail server took it, else
        why it refused it for good): either way the request is not sent again (unsent_confirmations)."""
        at = now()
        _LOG_EVENTS(connection, [
            (at, subscriber_id, list_id, *(("confirmation-sent", "serve", {}) if refused is None
                                           else ("confirmation-refused", "serve", {"reason": refused[:300]})))
            for subscriber_id, list_id, refused in done
        ])  # fmt: skip

    def unsent_confirmations(
        self, since: dt.datetime, until: dt.datetime, skip: Collection[tuple[int, int]] = ()
    ) -> tuple[dt.datetime, list[UnsentConfirmation]]:
        """Sign-ups requested between `since` and `until` whose confirmation email never went (the server stopped
        before it sent it, or the mail server could not be reached), each once (its latest request), and not to
        someone since subscribed, bounced or complained; `skip`: (subscriber, list) pairs the caller is sending.

        They are claimed in the same transaction, as confirmation-claimed events stamped with the instant
        returned, so that two servers never both send one (on PostgreSQL the second waits for the first's claim,
        an advisory lock). finish_claims settles them once tried; a claim left unsettled (its server killed while
        sending) lapses after CLAIM_LEASE, and its email is found again."""
        claimed_at = now()
        with self.transaction(durable=True) as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('newsletter-unsent-confirmations'))")
            done = sa.alias(events, "done")
            rows = connection.execute(
                sa.select(events.c.id, events.c.subscriber_id, events.c.list_id, events.c.detail, lists.c.slug,
                          subscribers.c.email)
                .join(memberships, sa.and_(memberships.c.subscriber_id == events.c.subscriber_id,
                                           memberships.c.list_id == events.c.list_id))
                .join(subscribers, subscribers.c.id == events.c.subscriber_id)
                .join(lists, lists.c.id == events.c.list_id)
                .where(events.c.kind == "signup-requested", events.c.at > since, events.c.at <= until,
                       memberships.c.status.not_in((SUBSCRIBED, BOUNCED, COMPLAINED)),
                       ~sa.select(done.c.id).where(
                           done.c.subscriber_id == events.c.subscriber_id, done.c.list_id == events.c.list_id,
                           done.c.at >= events.c.at,
                           sa.or_(done.c.kind.in_(("confirmation-sent", "confirmation-refused")),
                                  sa.and_(done.c.kind == "confirmation-claimed",
                                          done.c.at > claimed_at - CLAIM_LEASE)),
                       ).exists())
                .order_by(events.c.id)
            ).all()  # fmt: skip
            latest = {
                (row.subscriber_id, row.list_id): row for row in rows if (row.subscriber_id, row.list_id) not in skip
            }
            unsent = [UnsentConfirmation(row.subscriber_id, row.list_id, row.slug, row.email, row.detail.get("name"),
                                         row.id) for row in latest.values()]  # fmt: skip
            _LOG_EVENTS(connection, [(claimed_at, u.subscriber_id, u.list_id, "confirmation-claimed", "serve", {})
                                     for u in unsent])  # fmt: skip
        return claimed_at, unsent

    def finish_claims(
        self, claimed_at: dt.datetime, claimed: Sequence[int], done: Sequence[tuple[int, int, str | None]]
    ) -> None:
        """Settle the claims that unsent_confirmations stamped claimed_at, for these subscribers, once tried: each
        claim goes, and what became of the emails that went or were refused is recorded (confirmations_done); one
        that could not go this time is found again by a later look."""
        with self.transaction(durable=True) as connection:
            for start in range(0, len(claimed), 500):
                connection.execute(events.delete().where(
                    events.c.kind == "confirmation-claimed", events.c.at == claimed_at,
                    events.c.subscriber_id.in_(claimed[start : start + 500])))  # fmt: skip
            if done:
                self.confirmations_done(connection, done)

    def unconfirmed(self, list_id: int) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """Sign-ups of a list waiting for their confirmation: (address, when first asked, when last asked: the
        link of that request is the one still valid), oldest first."""
        asked = _last_asked(list_id)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(subscribers.c.email, memberships.c.updated_at, asked.c.at)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .outerjoin(asked, asked.c.subscriber_id == subscribers.c.id)
                .where(memberships.c.list_id == list_id, memberships.c.status == UNCONFIRMED)
                .order_by(memberships.c.updated_at, subscribers.c.id)
            ).all()
        return [(row.email, _aware(row.updated_at), _aware(row.at or row.updated_at)) for row in rows]

    def purge_unconfirmed(self, list_id: int, before: dt.datetime) -> tuple[list[str], int]:
        """Sign-ups of a list never confirmed whose last request came before `before` (their link has expired):
        their membership and their requests go (what they saw, their user agent, the hash of their IP), and the
        person too when nothing else is held about them (no other list, delivery or event). Returns the addresses
        and how many people went whole. A confirmation that commits first keeps its person: the memberships are
        locked as they are read (FOR UPDATE on PostgreSQL; SQLite's write lock is whole)."""
        last_asked = _last_asked(list_id)
        erased = 0
        with self.transaction() as connection:
            rows = connection.execute(
                sa.select(subscribers.c.id, subscribers.c.email)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .outerjoin(last_asked, last_asked.c.subscriber_id == subscribers.c.id)
                .where(memberships.c.list_id == list_id, memberships.c.status == UNCONFIRMED,
                       sa.func.coalesce(last_asked.c.at, memberships.c.updated_at) < before)
                .order_by(subscribers.c.id)
                .with_for_update(of=memberships)
            ).all()  # fmt: skip
            for start in range(0, len(rows), 500):
                ids = [row.id for row in rows[start : start + 500]]
                connection.execute(
                    memberships.delete().where(memberships.c.list_id == list_id, memberships.c.subscriber_id.in_(ids))
                )
                connection.execute(
                    events.delete().where(events.c.list_id == list_id, events.c.kind.in_(_SIGNUP_KINDS),
                                          events.c.subscriber_id.in_(ids))
                )  # fmt: skip
                held = [
                    sa.select(table.c.subscriber_id).where(table.c.subscriber_id == subscribers.c.id).exists()
                    for table in (memberships, deliveries, events)
                ]
                erased += connection.execute(
                    subscribers.delete().where(subscribers.c.id.in_(ids), *(~found for found in held))
                ).rowcount
        return [row.email for row in rows], erased

    def memberships_of(self, subscriber_id: int) -> list[tuple[ListRow, str]]:
        """Every list this person is on, with their status there, by slug."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(lists.c.id, lists.c.slug, lists.c.name, memberships.c.status)
                .join(memberships, memberships.c.list_id == lists.c.id)
                .where(memberships.c.subscriber_id == subscriber_id)
                .order_by(lists.c.slug)
            ).all()
        return [(ListRow(row.id, row.slug, row.name), row.status) for row in rows]

    # A person's data (Law 25, GDPR)

    def person(self, email: str) -> dict | None:
        """Everything held about one address: the subscriber, memberships, events, deliveries. None if nobody."""
        with self.engine.connect() as connection:
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
            delivery_rows = connection.execute(
                sa.select(deliveries, campaigns.c.issue_slug)
                .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
                .where(deliveries.c.subscriber_id == row.id)
                .order_by(deliveries.c.campaign_id)
            ).all()
        return {
            "email": row.email, "name": row.name, "fields": row.fields or {}, "created_at": _aware(row.created_at),
            "memberships": [{"list": slugs.get(m.list_id), "status": m.status, "updated_at": _aware(m.updated_at)}
                            for m in member_rows],
            "events": [{"at": _aware(e.at), "list": slugs.get(e.list_id), "kind": e.kind, "source": e.source,
                        "detail": e.detail} for e in event_rows],
            "deliveries": [{"campaign": d.campaign_id, "issue": d.issue_slug, "status": d.status,
                            "attempts": d.attempts, "updated_at": _aware(d.updated_at), "error": d.last_error,
                            "provider_id": d.provider_id} for d in delivery_rows],
        }  # fmt: skip

    def forget(self, email: str) -> bool:
        """Erase a person: their name, fields, memberships and the personal content of their events and ledger
        rows go; a one-way hash of the address stays, so that no import or sign-up mails them again without their
        own new confirmation. The counts of past campaigns stay right (the rows stay, anonymous). False if nobody.
        """
        at = now()
        with self.transaction() as connection:
            found = connection.execute(
                sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.email_key == email.strip().lower())
            ).first()
            if found is None:
                return False
            stand_in = f"forgotten-{found.id}"  # unique, and no address: email_key stays unique and not null
            connection.execute(
                subscribers.update().where(subscribers.c.id == found.id)
                .values(email=stand_in, email_key=stand_in, name=None, fields={})
            )  # fmt: skip
            connection.execute(memberships.delete().where(memberships.c.subscriber_id == found.id))
            connection.execute(events.update().where(events.c.subscriber_id == found.id).values(detail={}))
            connection.execute(
                deliveries.update().where(deliveries.c.subscriber_id == found.id)
                .values(last_error=None, provider_id=None, lease_owner=None, lease_until=None)
            )  # fmt: skip
            key = address_hash(found.email)
            if (
                connection.execute(sa.select(suppressions.c.email_hash).where(suppressions.c.email_hash == key)).first()
                is None
            ):
                connection.execute(suppressions.insert().values(email_hash=key, at=at))
            self._event(connection, found.id, None, "forgotten", "cli", {})
        return True

    def change_status(self, subscriber_id: int, list_id: int, status: str, source: str, detail: dict) -> bool:
        """set_status in a transaction of its own (what one webhook event does)."""
        with self.transaction() as connection:
            return self.set_status(connection, subscriber_id, list_id, status, source, detail)

    def apply_changes(self, connection: Connection, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        """Clicks' changes, in the caller's transaction: each membership moves if it is in one of its change's
        allowed states, with its event; returns, per change, the status it had and the address.

        One query reads the whole group, then one executemany updates and one logs: a click costs little more
        than its share of three statements.
        """
        if not changes:
            return []
        at = now()
        pairs = {(c.subscriber_id, c.list_id) for c in changes}
        people = sorted({subscriber_id for subscriber_id, _ in pairs})
        current = {
            (subscriber_id, list_id): [status, email]
            for subscriber_id, list_id, status, email in _MEMBERSHIPS_AND_ADDRESSES(connection, people)
            if (subscriber_id, list_id) in pairs
        }
        results, updates, logged = [], [], []
        for change in changes:
            found = current.get((change.subscriber_id, change.list_id))
            if found is None:
                results.append(ChangeResult(None, None))
                continue
            before, address = found
            results.append(ChangeResult(before, address))
            if before != change.status and before in change.allowed_from:
                found[0] = change.status  # a second change of the same membership in the group sees this one
                updates.append({"m_subscriber": change.subscriber_id, "m_list": change.list_id,
                                "m_status": change.status, "m_at": at, "m_before": before})  # fmt: skip
                logged.append((at, change.subscriber_id, change.list_id, change.status, change.source, change.detail))
        if updates:
            connection.execute(_SET_MEMBERSHIP, updates)
            _LOG_EVENTS(connection, logged)
        return results

    def apply_event(
        self, kind: str, email: str, key: str | None, source: str, detail: dict, *, list_id: int | None = None
    ) -> int:
        """A provider's report (bounced, complained, unsubscribed) applied to memberships; return how many changed.

        With list_id, or our ledger key (campaign-subscriber), it applies to that list (the campaign's); without,
        to every list of the address. An address we do not know changes nothing.
        """
        with self.transaction() as connection:
            return self._apply_event(connection, kind, email, key, source, detail, list_id)

    def _apply_event(
        self, connection: Connection, kind: str, email: str, key: str | None, source: str, detail: dict,
        list_id: int | None = None,
    ) -> int:  # fmt: skip
        subscriber_id = self.find_subscriber(connection, email)
        if subscriber_id is None:
            return 0
        list_ids: list[int] = [list_id] if list_id is not None else []
        if not list_ids and key and key.partition("-")[0].isdigit():
            campaign_list = connection.execute(
                sa.select(campaigns.c.list_id).where(campaigns.c.id == int(key.partition("-")[0]))
            ).scalar()
            list_ids = [campaign_list] if campaign_list is not None else []
        if not list_ids:
            list_ids = list(
                connection.execute(
                    sa.select(memberships.c.list_id).where(memberships.c.subscriber_id == subscriber_id)
                ).scalars()
            )
        return sum(self.set_status(connection, subscriber_id, i, kind, source, detail) for i in list_ids)

    def apply_webhook(
        self, provider: str, token: str | None, reports: Sequence[tuple[str, str, str | None, dict]],
        *, keep: dt.timedelta,
    ) -> int | None:  # fmt: skip
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
        with self.transaction() as connection:
            if token is not None:
                reserved = connection.execute(
                    _insert_ignoring(connection.dialect.name, webhook_tokens).returning(webhook_tokens.c.token),
                    {"provider": provider, "token": token, "seen_at": at, "kept_until": at + keep},
                ).first()  # no row when the token was there (psycopg's rowcount is -1 for this insert)
                if reserved is None:
                    return None
            return sum(self._apply_event(connection, kind, email, key, "webhook", detail)
                       for kind, email, key, detail in reports)  # fmt: skip

    def forget_webhook_tokens(self, at: dt.datetime | None = None) -> int:
        """Remove the webhook tokens whose provider would refuse them by their age anyway; return how many."""
        past = webhook_tokens.c.kept_until < (at or now())
        with self.transaction() as connection:
            return connection.execute(webhook_tokens.delete().where(past)).rowcount

    def sent_issues(self) -> list[tuple[str, str, dt.datetime]]:
        """(issue slug, subject, first sent) of every issue a campaign started sending, newest first: not those
        only scheduled (nor expired unsent), which the public archive must not show before their time."""
        first_sent = sa.func.min(campaigns.c.started_at)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(campaigns.c.issue_slug, sa.func.min(campaigns.c.subject), first_sent)
                .where(campaigns.c.started_at.is_not(None))
                .group_by(campaigns.c.issue_slug)
                .order_by(first_sent.desc())
            ).all()
        return [(row[0], row[1], _aware(row[2])) for row in rows]

    def sent_content(self, issue_slug: str) -> tuple[int, dict | None] | None:
        """(campaign id, frozen content) of the issue's latest campaign that started sending: what the archive shows
        (None content: begun by a version that did not freeze it); None when no campaign of it started."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(campaigns.c.id, campaigns.c.content)
                .where(campaigns.c.issue_slug == issue_slug, campaigns.c.started_at.is_not(None))
                .order_by(campaigns.c.started_at.desc(), campaigns.c.id.desc())
                .limit(1)
            ).first()
        return (row[0], row[1]) if row is not None else None

    def find_subscriber(self, connection: Connection, email: str) -> int | None:
        return connection.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == email.lower())).scalar()

    def members(self, list_id: int, status: str | None = None, *, page: int = 1000) -> Iterator[Member]:
        """Stream a list's members in id order, a page at a time (never the whole list in memory).

        iter_members' queries, which read memberships_by_list in order: ordering by subscribers.id made SQLite
        sort the whole list for every page (even for a dry run's five).
        """
        return self.iter_members(list_id, status, page=page)

    def count_members(self, list_id: int, status: str | None = SUBSCRIBED, connection: Connection | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(memberships).where(memberships.c.list_id == list_id)
        if status:
            query = query.where(memberships.c.status == status)
        if connection is not None:
            return connection.execute(query).scalar_one()
        with self.engine.connect() as reading:
            return reading.execute(query).scalar_one()

    def subscribe_many(
        self, connection: Connection, list_id: int, rows: Sequence[Subscription], source: str
    ) -> list[str]:
        """subscribe() for many addresses at once (distinct whatever their case), in the caller's transaction: for
        each, added, updated, unchanged or refused, by the same rules, in a handful of statements whatever their
        number.

        New subscribers and memberships are inserted ON CONFLICT DO NOTHING, then read back by this batch's
        instant, which they are stamped with: those that are not were added by someone else meanwhile (a sign-up,
        another import, on PostgreSQL), and are taken as they now are, so that the batch never fails on them.
        Existing subscribers are locked (FOR UPDATE) while their fields merge.
        """
        if not rows:
            return []
        at = now()
        if connection.dialect.name == "sqlite":  # thousands of lookups by key a batch: keep more of the indexes
            connection.exec_driver_sql(f"PRAGMA cache_size = -{IMPORT_CACHE_KB}")
        keys = [row.email.lower() for row in rows]
        found = {r.email_key: r for r in connection.execute(_SUBSCRIBERS_BY_KEY, {"k_keys": keys})}
        results: list[str | None] = [None] * len(rows)
        new = [i for i, key in enumerate(keys) if key not in found]
        if new and connection.execute(_ANY_SUPPRESSED).first() is not None:
            hashes = {address_hash(rows[i].email): i for i in new}
            for erased in connection.execute(_SUPPRESSED_AMONG, {"k_hashes": list(hashes)}).scalars():
                results[hashes[erased]] = "refused"  # erased at their request: only their own confirmation
        wanted = [i for i in new if results[i] is None]
        ids: dict[str, int] = {}
        if wanted:
            fresh = [(rows[i].email, keys[i], rows[i].name, rows[i].fields, at) for i in wanted]
            _INSERT_SUBSCRIBERS(connection, fresh)
            wanted_keys = [keys[i] for i in wanted]
            ids.update(connection.execute(_INSERTED_IDS, {"k_keys": wanted_keys, "k_at": at}).all())
            lost = [key for key in wanted_keys if key not in ids]  # added by someone else since we looked
            if lost:
                found.update({r.email_key: r for r in connection.execute(_SUBSCRIBERS_BY_KEY, {"k_keys": lost})})
        changed: set[int] = set()
        updates = []
        for i, key in enumerate(keys):
            row = found.get(key)
            if row is None or results[i] is not None:
                continue
            before = json.loads(row.fields) if row.fields and row.fields != "{}" else {}
            merged = {**before, **rows[i].fields}
            new_name = rows[i].name or row.name
            if new_name != row.name or merged != before:
                updates.append((new_name, merged, row.id))
                changed.add(i)
            ids[key] = row.id
        if updates:
            _UPDATE_SUBSCRIBERS(connection, updates)
        statuses = self._statuses(connection, list_id, [ids[key] for key in found if key in ids])
        joining = [i for i, key in enumerate(keys) if results[i] is None and statuses.get(ids[key]) is None]
        if joining:
            _INSERT_MEMBERSHIPS(connection, [(ids[keys[i]], list_id, SUBSCRIBED, at) for i in joining])
            joining_ids = [ids[keys[i]] for i in joining]
            joined = set(connection.execute(_JOINED, {"k_list": list_id, "k_ids": joining_ids, "k_at": at}).scalars())
            # Those joined by someone else since we looked are taken as they now are.
            statuses.update(self._statuses(connection, list_id, [i for i in joining_ids if i not in joined]))
            for i in joining:
                if ids[keys[i]] in joined:
                    results[i] = "added"
        logged = []
        for i, key in enumerate(keys):
            if results[i] == "added":
                kind = SUBSCRIBED
            elif results[i] is not None:
                continue
            elif statuses.get(ids[key]) != SUBSCRIBED:
                results[i] = "refused"
                continue
            elif i in changed:
                results[i] = kind = "updated"
            else:
                results[i] = "unchanged"
                continue
            logged.append((at, ids[key], list_id, kind, source, rows[i].detail))
        if logged:
            _LOG_EVENTS(connection, logged)
        return results  # type: ignore[return-value]  # every row got its result above

    def _statuses(self, connection: Connection, list_id: int, subscriber_ids: Sequence[int]) -> dict[int, str]:
        if not subscriber_ids:
            return {}
        return dict(connection.execute(_STATUSES_AMONG, {"k_list": list_id, "k_ids": list(subscriber_ids)}).all())

    def iter_members(
        self, list_id: int, status: str | None = None, *, offset: int = 0, limit: int | None = None, page: int = 2000
    ) -> Iterator[Member]:
        """A list's members in subscriber order, from the offset-th and at most limit of them, read a page at a
        time so that memory and time per page stay flat whatever the list's size.

        Each status is read on its own, by memberships_by_list (list, status, subscriber) in subscriber order,
        each page after the last id of the one before (keyset); without a status the statuses are merged. Any
        other form (every status at once) lets the planner sort the whole list for each page, on either engine.
        Without a status, one query finds the offset-th member's id (the database counts, in one pass), from
        which the merge starts.
        """
        if status:
            yield from self._members_of(list_id, status, offset, limit, page)
            return
        after = 0
        if offset:
            with self.engine.connect() as connection:
                first = connection.execute(
                    sa.select(memberships.c.subscriber_id)
                    .where(memberships.c.list_id == list_id)
                    .order_by(memberships.c.subscriber_id)
                    .offset(offset)
                    .limit(1)
                ).scalar()
            if first is None:
                return
            after = first - 1
        merged = heapq.merge(*(self._members_of(list_id, s, 0, None, page, after) for s in STATUSES),
                             key=lambda member: member.subscriber_id)  # fmt: skip
        yield from itertools.islice(merged, limit)

    def _members_of(
        self, list_id: int, status: str, offset: int, limit: int | None, page: int, after: int = 0
    ) -> Iterator[Member]:
        skip, left = offset, limit
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            query = (
                sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.name,
                          sa.cast(subscribers.c.fields, sa.Text).label("fields"))
                .select_from(memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id))
                .where(memberships.c.list_id == list_id, memberships.c.status == status,
                       memberships.c.subscriber_id > after)
                .order_by(memberships.c.subscriber_id)
                .offset(skip)
                .limit(size)
            )  # fmt: skip
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
            for row in rows:  # the fields as text: most members have none to parse
                fields = json.loads(row.fields) if row.fields and row.fields != "{}" else {}
                yield Member(row.id, row.email, row.name, fields, status)
            if len(rows) < size:
                return
            after, skip = rows[-1].id, 0
            if left is not None:
                left -= len(rows)

    def member_field_names(self, list_id: int, status: str | None = None) -> list[str]:
        """The names of the fields a list's members have, in the order they first appear (by subscriber): the
        columns of an export."""
        names: dict[str, None] = {}
        for member in self.iter_members(list_id, status, page=5000):
            if member.fields:
                names.update(dict.fromkeys(member.fields))
        return list(names)

    def history(self, subscriber_id: int) -> list[dict]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events).where(events.c.subscriber_id == subscriber_id).order_by(events.c.id)
            ).all()
        return [dict(row._mapping) for row in rows]

    # Campaigns

    def latest_campaign(
        self, issue_slug: str, list_id: int, connection: Connection | None = None
    ) -> CampaignRow | None:
        query = (
            sa.select(campaigns)
            .where(campaigns.c.issue_slug == issue_slug, campaigns.c.list_id == list_id)
            .order_by(campaigns.c.id.desc())
            .limit(1)
        )
        if connection is not None:
            return _campaign(connection.execute(query).first())
        with self.engine.connect() as reading:
            return _campaign(reading.execute(query).first())

    def campaign(self, campaign_id: int) -> CampaignRow | None:
        with self.engine.connect() as connection:
            return _campaign(connection.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first())

    def lock_list(self, connection: Connection, list_id: int) -> None:
        """Hold the list until the transaction ends, so that two senders starting at once agree on one campaign.

        PostgreSQL locks the row; SQLite's write transaction (BEGIN IMMEDIATE) already excludes every other writer.
        """
        connection.execute(sa.select(lists.c.id).where(lists.c.id == list_id).with_for_update())

    def create_campaign(
        self,
        connection: Connection,
        list_id: int,
        issue_slug: str,
        content_hash: str,
        subject: str,
        content: dict,
        *,
        scheduled_at: dt.datetime | None = None,
        expires_at: dt.datetime | None = None,
    ) -> int:
        """A new campaign: scheduled (its audience fixed when it starts), or running with its ledger at once."""
        at = now()
        campaign_id = connection.execute(
            campaigns.insert()
            .values(
                list_id=list_id, issue_slug=issue_slug, content_hash=content_hash, subject=subject, created_at=at,
                content=content, status=SCHEDULED if scheduled_at else RUNNING, scheduled_at=scheduled_at,
                expires_at=expires_at, started_at=None if scheduled_at else at,
            )
            .returning(campaigns.c.id)
        ).scalar_one()  # fmt: skip
        if scheduled_at is None:
            self._fix_audience(connection, campaign_id, list_id, at)
        return campaign_id

    def start_campaign(
        self, list_id: int, issue_slug: str, content_hash: str, subject: str, content: dict | None = None
    ) -> CampaignRow:
        """create_campaign in a transaction of its own: a running campaign, its ledger fixed now."""
        with self.transaction() as connection:
            campaign_id = self.create_campaign(connection, list_id, issue_slug, content_hash, subject, content or {})
        found = self.campaign(campaign_id)
        assert found is not None
        return found

    def _fix_audience(self, connection: Connection, campaign_id: int, list_id: int, at: dt.datetime) -> None:
        """The ledger: a pending row for every member subscribed at this instant."""
        audience = sa.select(
            sa.literal(campaign_id).label("campaign_id"),
            memberships.c.subscriber_id,
            sa.literal(PENDING).label("status"),
            sa.literal(0).label("attempts"),
            sa.literal(at, sa.DateTime(timezone=True)).label("updated_at"),
        ).where(memberships.c.list_id == list_id, memberships.c.status == SUBSCRIBED)
        connection.execute(
            deliveries.insert().from_select(
                ["campaign_id", "subscriber_id", "status", "attempts", "updated_at"], audience
            )
        )

    def set_content(self, campaign_id: int, content: dict) -> None:
        """Freeze the content of a campaign an earlier version started without it."""
        with self.transaction() as connection:
            connection.execute(
                campaigns.update()
                .where(campaigns.c.id == campaign_id, campaigns.c.content.is_(None))
                .values(content=content)
            )

    def expire_overdue(self, at: dt.datetime | None = None) -> list[int]:
        """Scheduled campaigns that nobody started before expires_at become expired, never to be sent."""
        at = at or now()
        with self.transaction() as connection:
            return list(
                connection.execute(
                    campaigns.update()
                    .where(
                        campaigns.c.status == SCHEDULED,
                        campaigns.c.expires_at.is_not(None),
                        campaigns.c.expires_at <= at,
                    )
                    .values(status=EXPIRED, finished_at=at)
                    .returning(campaigns.c.id)
                ).scalars()
            )

    def start_due(self, at: dt.datetime | None = None) -> list[int]:
        """Start every scheduled campaign whose time has come: running, its audience fixed, in one transaction each.

        Only one of the senders polling at once wins each campaign (the status changes from scheduled only once).
        """
        at = at or now()
        self.expire_overdue(at)
        with self.engine.connect() as connection:
            due = connection.execute(
                sa.select(campaigns.c.id, campaigns.c.list_id).where(
                    campaigns.c.status == SCHEDULED, campaigns.c.scheduled_at <= at
                )
            ).all()
        started = []
        for campaign_id, list_id in due:
            with self.transaction() as connection:
                won = connection.execute(
                    campaigns.update()
                    .where(campaigns.c.id == campaign_id, campaigns.c.status == SCHEDULED)
                    .values(status=RUNNING, started_at=at)
                ).rowcount
                if won:
                    self._fix_audience(connection, campaign_id, list_id, at)
                    started.append(campaign_id)
        return started

    def campaign_ids(self, *statuses: str) -> list[int]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    sa.select(campaigns.c.id).where(campaigns.c.status.in_(statuses)).order_by(campaigns.c.id)
                ).scalars()
            )

    def is_running(self, campaign_id: int) -> bool:
        """Whether the campaign is running now: what a sender asks between two messages of a batch."""
        with self.engine.connect() as connection:
            status = connection.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar()
        return status == RUNNING

    def change_campaign_status(self, campaign_id: int, to: str, allowed_from: Sequence[str]) -> bool:
        """Move a campaign to status `to` if it is in one of allowed_from; False when it was not."""
        values: dict = {"status": to}
        if to in (FINISHED, CANCELLED, EXPIRED):
            values["finished_at"] = now()
        with self.transaction() as connection:
            return bool(
                connection.execute(
                    campaigns.update()
                    .where(campaigns.c.id == campaign_id, campaigns.c.status.in_(allowed_from))
                    .values(**values)
                ).rowcount
            )

    def finish_if_done(self, campaign_id: int) -> bool:
        """A running campaign with no pending row left is finished; True when it is (now or already)."""
        still_pending = sa.exists().where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == PENDING)
        with self.transaction() as connection:
            connection.execute(
                campaigns.update()
                .where(campaigns.c.id == campaign_id, campaigns.c.status == RUNNING, ~still_pending)
                .values(status=FINISHED, finished_at=now())
            )
            return (
                connection.execute(sa.select(campaigns.c.status).where(campaigns.c.id == campaign_id)).scalar()
                == FINISHED
            )

    def campaign_list(self, list_id: int | None = None) -> list[tuple[CampaignRow, str, dict[str, int]]]:
        """Every campaign (of one list, or all), newest first, with its list's slug and its ledger counts."""
        self.expire_overdue()
        query = sa.select(campaigns, lists.c.slug.label("list_slug")).join(lists, lists.c.id == campaigns.c.list_id)
        if list_id is not None:
            query = query.where(campaigns.c.list_id == list_id)
        tally = sa.select(deliveries.c.campaign_id, deliveries.c.status, sa.func.count()).group_by(
            deliveries.c.campaign_id, deliveries.c.status
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(campaigns.c.id.desc())).all()
            if list_id is not None:
                tally = tally.where(deliveries.c.campaign_id.in_([row.id for row in rows]))
            counted: dict[int, dict[str, int]] = {}
            for campaign_id, status, count in connection.execute(tally):
                counted.setdefault(campaign_id, {})[status] = count
        return [(_campaign(row), row.list_slug, _counts(counted.get(row.id, {}))) for row in rows]

    # The ledger as a work queue

    def claim(
        self, campaign_id: int, list_id: int, owner: str, limit: int, lease: float, at: dt.datetime | None = None
    ) -> list[Delivery] | None:
        """Lease up to `limit` due pending rows of a running campaign to `owner` (one claim of a sender: "sender#n")
        until now + lease, in subscriber order, with each subscriber's membership as it is now. None when the
        campaign is not running.

        One UPDATE picks and marks the rows (_CLAIM); on PostgreSQL its CTE locks them FOR UPDATE SKIP LOCKED, so
        two senders claiming at once take different rows; on SQLite the write transaction is exclusive.
        """
        at = at or now()
        with self.transaction() as connection:
            if connection.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar() != RUNNING:
                return None
            lease_until = at + dt.timedelta(seconds=lease)
            values = {"c_id": campaign_id, "c_at": at, "c_limit": limit, "c_owner": owner, "c_until": lease_until}
            claimed = list(connection.execute(_CLAIM, values).scalars())
            if not claimed:
                return []
            rows = connection.execute(_CLAIMED, {"c_id": campaign_id, "c_list": list_id, "c_ids": claimed}).all()
        return [Delivery(r.subscriber_id, r.email, r.name, r.fields or {}, r.attempts, r.membership) for r in rows]

    def renew(self, campaign_id: int, sender: str, lease: float) -> int:
        """Push back the lease of every row this sender's claims still hold in the campaign; return how many."""
        with self.transaction() as connection:
            return connection.execute(
                deliveries.update()
                .where(deliveries.c.campaign_id == campaign_id, _held_by(sender), deliveries.c.status == PENDING)
                .values(lease_until=now() + dt.timedelta(seconds=lease))
            ).rowcount

    def release(self, campaign_id: int, holder: str, subscriber_ids: Sequence[int] | None = None) -> int:
        """Give back pending rows that a claim (or all of a sender's claims) holds but will not send."""
        query = deliveries.update().where(
            deliveries.c.campaign_id == campaign_id, _held_by(holder), deliveries.c.status == PENDING
        )
        if subscriber_ids is not None:
            query = query.where(deliveries.c.subscriber_id.in_(subscriber_ids))
        with self.transaction() as connection:
            return connection.execute(query.values(lease_owner=None, lease_until=None)).rowcount

    def next_claimable(self, campaign_id: int, at: dt.datetime | None = None) -> dt.datetime | None:
        """When a pending row of the campaign can next be claimed: `at` if one can now, else the earliest retry or
        lease expiry; None when nothing is pending."""
        at = at or now()
        free = sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < at)
        pending = sa.and_(deliveries.c.campaign_id == campaign_id, deliveries.c.status == PENDING)
        with self.engine.connect() as connection:
            total, ready, retry_at, lease_at = connection.execute(
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

    def held(self, campaign_id: int, at: dt.datetime | None = None) -> tuple[int, dt.datetime | None]:
        """Pending rows of the campaign under a lease that has not run out: how many, and when the last lease ends
        (the time a sender that died gives them up)."""
        at = at or now()
        with self.engine.connect() as connection:
            count, until = connection.execute(
                sa.select(sa.func.count(), sa.func.max(deliveries.c.lease_until)).where(
                    deliveries.c.campaign_id == campaign_id, deliveries.c.status == PENDING,
                    deliveries.c.lease_until >= at,
                )
            ).one()  # fmt: skip
        return count, _aware(until)

    def reserve(self, campaign_id: int, count: int, rate: float | None, per_hour: int | None) -> dt.datetime:
        """Book `count` messages against the campaign's limits, shared by every sender; return when they may go.

        rate: slots are handed out one after another, count/rate seconds apart (campaigns.next_send_at).
        per_hour: at most per_hour messages in any hour, counted in campaign_sends; a booking never goes before
        the latest one, so the hour ending at the booked instant is the only one to check.
        """
        at = now()
        with self.transaction() as connection:
            row = connection.execute(
                sa.select(campaigns.c.next_send_at).where(campaigns.c.id == campaign_id).with_for_update()
            ).one()
            start = max(at, _aware(row.next_send_at) or at) if rate else at
            if per_hour:
                count = min(count, per_hour)
                connection.execute(
                    campaign_sends.delete().where(
                        campaign_sends.c.campaign_id == campaign_id, campaign_sends.c.at <= at - _HOUR
                    )
                )
                booked = [
                    (_aware(when), n)
                    for when, n in connection.execute(
                        sa.select(campaign_sends.c.at, campaign_sends.c.count)
                        .where(campaign_sends.c.campaign_id == campaign_id)
                        .order_by(campaign_sends.c.at)
                    )
                ]
                if booked:
                    start = max(start, booked[-1][0])
                while sum(n for when, n in booked if when > start - _HOUR) + count > per_hour:
                    start = next(when for when, _ in booked if when > start - _HOUR) + _HOUR
                connection.execute(campaign_sends.insert().values(campaign_id=campaign_id, at=start, count=count))
            if rate:
                connection.execute(
                    campaigns.update()
                    .where(campaigns.c.id == campaign_id)
                    .values(next_send_at=start + dt.timedelta(seconds=count / rate))
                )
        return start

    def pending(self, campaign_id: int, limit: int) -> list[Delivery]:
        """The first pending rows of a campaign, claimed or not (what a dry run shows)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(deliveries.c.subscriber_id, deliveries.c.attempts, subscribers.c.email, subscribers.c.name,
                          subscribers.c.fields)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == PENDING)
                .order_by(deliveries.c.subscriber_id)
                .limit(limit)
            ).all()  # fmt: skip
        return [Delivery(r.subscriber_id, r.email, r.name, r.fields or {}, r.attempts, None) for r in rows]

    def subscribed_among(self, list_id: int, subscriber_ids: Sequence[int]) -> set[int]:
        """Which of these subscribers are subscribed to the list at this instant."""
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    sa.select(memberships.c.subscriber_id).where(
                        memberships.c.list_id == list_id,
                        memberships.c.status == SUBSCRIBED,
                        memberships.c.subscriber_id.in_(subscriber_ids),
                    )
                ).scalars()
            )

    def record(self, campaign_id: int, list_id: int, results: Sequence[Result], source: str = "send") -> bool:
        """Write outcomes to the ledger in one transaction, releasing their leases (and mark hard bounces); return
        whether the campaign is still running, read in the same transaction: a sender stops at a pause or a cancel
        without asking the store again for each message."""
        if not results:
            return self.is_running(campaign_id)
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
        with self.transaction() as connection:
            connection.execute(_RECORD, rows)  # one executemany for the batch
            for result in results:
                if result.bounce:
                    self.set_status(
                        connection, result.subscriber_id, list_id, BOUNCED, source, {"reason": result.error or ""}
                    )
            status = connection.execute(_CAMPAIGN_STATUS, {"c_id": campaign_id}).scalar()
        return status == RUNNING

    def counts(self, campaign_id: int) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(deliveries.c.status, sa.func.count())
                .where(deliveries.c.campaign_id == campaign_id)
                .group_by(deliveries.c.status)
            ).all()
        return _counts(dict(rows))

    def failures(self, campaign_id: int, limit: int = 20) -> list[tuple[str, str]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(subscribers.c.email, deliveries.c.last_error)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == FAILED)
                .order_by(deliveries.c.subscriber_id)
                .limit(limit)
            ).all()
        return [(row.email, row.last_error or "") for row in rows]

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[Connection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite, so that writers queue for the lock (busy_timeout) rather
        than fail when another process wrote since they began; an ordinary transaction on PostgreSQL.

        On SQLite the threads of one process also take turns on a lock of their own first: waiting for SQLite's
        lock means sleeping in steps of milliseconds, which would pace a send by the ledger's writes. durable:
        synced to disk at commit (SQLite's synchronous=FULL, set on connections of their own since it cannot
        change inside a transaction); PostgreSQL's commits always are.
        """
        engine = self._durable() if durable else self.engine
        with self._writing, engine.connect() as connection:
            connection.execution_options(newsletter_write=True)
            with connection.begin():
                yield connection

    def _durable(self) -> Engine:
        if self.engine.dialect.name != "sqlite":
            return self.engine
        if self._durable_engine is None:
            self._durable_engine = sa.create_engine(self.engine.url)
            sa.event.listen(self._durable_engine, "connect", _sqlite_pragmas)
            sa.event.listen(self._durable_engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=FULL"))
            sa.event.listen(self._durable_engine, "begin", _sqlite_begin)
        return self._durable_engine


_HOUR = dt.timedelta(hours=1)
CLAIM_LEASE = dt.timedelta(minutes=10)  # a claimed confirmation still unsettled after this is found again
SIGNUPS_COUNTED = dt.timedelta(days=1)  # an address's sign-up limit counts its requests of this long back
# Built once, as the statements below: they run for every few messages, and building one costs more than running it.
# Built once: claim asks it, and a sender with every write of outcomes (a select built each time was a fifth of the
# cost of a send).
_CAMPAIGN_STATUS = sa.select(campaigns.c.status).where(campaigns.c.id == sa.bindparam("c_id"))
_LOG_EVENT = events.insert().values(
    at=sa.bindparam("e_at", type_=sa.DateTime(timezone=True)),
    subscriber_id=sa.bindparam("e_subscriber"),
    list_id=sa.bindparam("e_list"),
    kind=sa.bindparam("e_kind"),
    source=sa.bindparam("e_source"),
    detail=sa.bindparam("e_detail", type_=sa.JSON),
)
_SET_MEMBERSHIP = (
    memberships.update()
    .where(
        memberships.c.subscriber_id == sa.bindparam("m_subscriber"),
        memberships.c.list_id == sa.bindparam("m_list"),
        memberships.c.status == sa.bindparam("m_before"),
    )
    .values(status=sa.bindparam("m_status"), updated_at=sa.bindparam("m_at", type_=sa.DateTime(timezone=True)))
)


class _Many:
    """A statement for many rows at once, handed to the driver's executemany with each value made ready as
    SQLAlchemy would make it (times, JSON), but without its per-row machinery: that machinery cost an import
    more than the database's own work (most of a million rows' time). Compiled once per dialect; rows are tuples
    in the order of `names`.

    On PostgreSQL, where psycopg's executemany still costs a round of its protocol per row (and its arrays a
    regular expression per value), `postgresql` is the same statement reading the whole batch from one JSON
    document, `json_to_recordset(%(rows)s::json) AS u(name type, …)`: one statement, and json.dumps (in C) does
    the work. Nested JSON (fields) keeps json.dumps' text, as SQLAlchemy would write it; times go as ISO 8601.
    """

    def __init__(self, build: Callable[[str], sa.Executable], names: Sequence[str], *, postgresql: str):
        self.build, self.names, self.postgresql = build, tuple(names), postgresql
        self.compiled: dict[str, tuple[str, list[int] | None, list[tuple[int, Callable]]]] = {}

    def __call__(self, connection: Connection, rows: Sequence[tuple]) -> None:
        if not rows:
            return
        dialect = connection.dialect
        if dialect.name == "postgresql":
            document = json.dumps([dict(zip(self.names, row, strict=True)) for row in rows], default=_iso)
            connection.exec_driver_sql(self.postgresql, {"rows": document})
            return
        if dialect.name not in self.compiled:
            compiled = self.build(dialect.name).compile(dialect=dialect, for_executemany=True)
            types = [compiled.binds[name].type.dialect_impl(dialect) for name in self.names]
            processors = [type_.bind_processor(dialect) for type_ in types]
            order = [self.names.index(name) for name in compiled.positiontup] if compiled.positional else None
            active = [(i, p) for i, p in enumerate(processors) if p is not None]
            self.compiled[dialect.name] = (compiled.string, order, active)
        sql, order, active = self.compiled[dialect.name]
        columns: list[Sequence] = list(zip(*rows, strict=True))
        for i, process in active:
            values, first = columns[i], columns[i][0]
            if all(value is first for value in values):  # the batch's instant: made ready once
                columns[i] = (process(first),) * len(values)
            else:
                columns[i] = list(map(process, values))
        if order is not None:
            ready: list = list(zip(*(columns[i] for i in order), strict=True))
        else:
            ready = [dict(zip(self.names, row, strict=True)) for row in zip(*columns, strict=True)]
        connection.exec_driver_sql(sql, ready)


def _last_asked(list_id: int) -> sa.Subquery:
    """(subscriber_id, at) of each person's last sign-up request for a list."""
    return (
        sa.select(events.c.subscriber_id, sa.func.max(events.c.at).label("at"))
        .where(events.c.list_id == list_id, events.c.kind == "signup-requested")
        .group_by(events.c.subscriber_id)
        .subquery()
    )


class _Lookup:
    """A select of rows whose `column IN (values)`, handed to the driver as written, with placeholders made for
    the number of values (kept per number): for the few dozen values of a group of clicks or sign-ups,
    SQLAlchemy's expanding IN and its result machinery cost more than the database's own work. In `sql`,
    `{values}` is where the values go (each time it is written), `{p}` a parameter before them (a time is made
    ready as SQLAlchemy would write it) and `{lock}` FOR UPDATE on PostgreSQL."""

    def __init__(self, sql: str):
        self.sql, self.repeats = sql, sql.count("{values}")
        self.ready: dict[tuple[str, int], str] = {}
        self.times: dict[str, Callable] = {}

    def __call__(self, connection: Connection, values: Sequence, *before: object) -> list[tuple]:
        if not values:
            return []
        dialect = connection.dialect
        key = (dialect.name, len(values))
        if key not in self.ready:
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            lock = " FOR UPDATE" if dialect.name == "postgresql" else ""
            self.ready[key] = self.sql.format(p=mark, values=", ".join([mark] * len(values)), lock=lock)
            self.times[dialect.name] = _TIME.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
        time = self.times[dialect.name]
        ready = [time(value) if isinstance(value, dt.datetime) else value for value in before]
        return connection.exec_driver_sql(self.ready[key], (*ready, *values * self.repeats)).all()


@functools.lru_cache(maxsize=8)  # the batch's instant, once per batch
def _iso(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _insert_ignoring(dialect_name: str, table: sa.Table):
    """INSERT … ON CONFLICT DO NOTHING, in the dialect's own words (SQLite and PostgreSQL both have it)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


class _Among(sa.sql.expression.ColumnElement):
    """`column IN (the values of a list parameter)`: an expanding IN on SQLite; on PostgreSQL the list goes as one
    JSON parameter, unpacked by json_array_elements_text, since thousands of bound values cost SQLAlchemy and
    psycopg more in rendering and parsing the statement than the database spends running it."""

    type = sa.types.NullType()  # not Boolean: SQLite would be given `(… IN …) = 1`, which no index serves
    inherit_cache = True

    def __init__(self, column: sa.ColumnElement, name: str):
        self.column, self.name = column, name

    def _gen_cache_key(self, anon_map, bindparams):
        return (type(self), self.column._gen_cache_key(anon_map, bindparams), self.name)


@compiles(_Among)
def _among_expanding(element: _Among, compiler, **kw) -> str:
    return compiler.process(element.column.in_(sa.bindparam(element.name, expanding=True)), **kw)


@compiles(_Among, "postgresql")
def _among_json(element: _Among, compiler, **kw) -> str:
    # = ANY (ARRAY(…)): the array is computed once and the index probed for each value, whatever the planner
    # believes of a table that this very transaction is filling (an IN (subquery) may scan it for each batch).
    values = sa.func.json_array_elements_text(sa.bindparam(element.name, type_=sa.JSON))
    if not isinstance(element.column.type, sa.String):
        values = sa.cast(values, element.column.type)
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY (ARRAY({compiler.process(sa.select(values), asfrom=True, **kw)}))"


# An import's statements: a batch of thousands of rows costs a handful of them.
_SUBSCRIBERS_BY_KEY = (  # the fields as text: most subscribers have none to parse
    sa.select(
        subscribers.c.id,
        subscribers.c.email_key,
        subscribers.c.name,
        sa.cast(subscribers.c.fields, sa.Text).label("fields"),
    )
    .where(_Among(subscribers.c.email_key, "k_keys"))
    .with_for_update()
)
_TIME = sa.DateTime(timezone=True)
# A sign-up's own events: what the person asked, and what became of their confirmation email.
_SIGNUP_KINDS = ("signup-requested", "confirmation-claimed", "confirmation-sent", "confirmation-refused")
# A group of clicks' and of sign-ups' statements. A subscriber has few rows, found by the indexes that start with
# subscriber_id; neither a row-value IN nor a list_id IN, for which SQLite scans the whole table or every member
# of the list. Both sides of the join by their key: with only one, PostgreSQL hashes the whole subscribers table.
_MEMBERSHIPS_AND_ADDRESSES = _Lookup(
    "SELECT memberships.subscriber_id, memberships.list_id, memberships.status, subscribers.email FROM memberships "
    "JOIN subscribers ON subscribers.id = memberships.subscriber_id "
    "WHERE memberships.subscriber_id IN ({values}) AND subscribers.id IN ({values})"
)
_SUBSCRIBER_IDS = _Lookup("SELECT email_key, id FROM subscribers WHERE email_key IN ({values}){lock}")
_STATUSES = _Lookup("SELECT subscriber_id, list_id, status FROM memberships WHERE subscriber_id IN ({values})")
_ASKED_SINCE = (  # per person, their sign-up requests since k_since, on every list: how many, the latest when
    sa.select(events.c.subscriber_id, sa.func.count().label("count"), sa.func.max(events.c.at).label("latest"))
    .where(_Among(events.c.subscriber_id, "k_ids"), events.c.kind == "signup-requested",
           events.c.at > sa.bindparam("k_since", type_=_TIME))
    .group_by(events.c.subscriber_id)
)  # fmt: skip
_REQUESTED_AT = sa.select(events.c.id, events.c.subscriber_id, events.c.list_id).where(
    _Among(events.c.subscriber_id, "k_ids"),
    events.c.kind == "signup-requested",
    events.c.at == sa.bindparam("k_at", type_=_TIME),
)
# What this batch inserted: the rows stamped with its instant (another writer's have theirs).
_INSERTED_IDS = sa.select(subscribers.c.email_key, subscribers.c.id).where(
    _Among(subscribers.c.email_key, "k_keys"),
    subscribers.c.created_at == sa.bindparam("k_at", type_=_TIME),
)
_JOINED = sa.select(memberships.c.subscriber_id).where(
    memberships.c.list_id == sa.bindparam("k_list"),
    _Among(memberships.c.subscriber_id, "k_ids"),
    memberships.c.updated_at == sa.bindparam("k_at", type_=_TIME),
)
_ANY_SUPPRESSED = sa.select(suppressions.c.email_hash).limit(1)
_SUPPRESSED_AMONG = sa.select(suppressions.c.email_hash).where(_Among(suppressions.c.email_hash, "k_hashes"))
_STATUSES_AMONG = sa.select(memberships.c.subscriber_id, memberships.c.status).where(
    memberships.c.list_id == sa.bindparam("k_list"),
    _Among(memberships.c.subscriber_id, "k_ids"),
)
_INSERT_SUBSCRIBERS = _Many(
    lambda dialect: _insert_ignoring(dialect, subscribers).values(
        email=sa.bindparam("s_email"), email_key=sa.bindparam("s_key"), name=sa.bindparam("s_name"),
        fields=sa.bindparam("s_fields", type_=sa.JSON), created_at=sa.bindparam("s_at", type_=_TIME),
    ),
    ["s_email", "s_key", "s_name", "s_fields", "s_at"],
    postgresql="INSERT INTO subscribers (email, email_key, name, fields, created_at) "
               "SELECT s_email, s_key, s_name, s_fields, s_at FROM json_to_recordset(%(rows)s::json) "
               "AS u(s_email text, s_key text, s_name text, s_fields json, s_at timestamptz) ON CONFLICT DO NOTHING",
)  # fmt: skip
_UPDATE_SUBSCRIBERS = _Many(
    lambda _: (
        subscribers.update()
        .where(subscribers.c.id == sa.bindparam("s_id"))
        .values(name=sa.bindparam("s_name"), fields=sa.bindparam("s_fields", type_=sa.JSON))
    ),
    ["s_name", "s_fields", "s_id"],
    postgresql="UPDATE subscribers SET name = u.s_name, fields = u.s_fields "
               "FROM json_to_recordset(%(rows)s::json) AS u(s_name text, s_fields json, s_id int) "
               "WHERE subscribers.id = u.s_id",
)  # fmt: skip
_INSERT_MEMBERSHIPS = _Many(
    lambda dialect: _insert_ignoring(dialect, memberships).values(
        subscriber_id=sa.bindparam("m_subscriber"), list_id=sa.bindparam("m_list"), status=sa.bindparam("m_status"),
        updated_at=sa.bindparam("m_at", type_=_TIME),
    ),
    ["m_subscriber", "m_list", "m_status", "m_at"],
    postgresql="INSERT INTO memberships (subscriber_id, list_id, status, updated_at) "
               "SELECT m_subscriber, m_list, m_status, m_at FROM json_to_recordset(%(rows)s::json) "
               "AS u(m_subscriber int, m_list int, m_status text, m_at timestamptz) ON CONFLICT DO NOTHING",
)  # fmt: skip
_LOG_EVENTS = _Many(
    lambda _: _LOG_EVENT,
    ["e_at", "e_subscriber", "e_list", "e_kind", "e_source", "e_detail"],
    postgresql="INSERT INTO events (at, subscriber_id, list_id, kind, source, detail) "
               "SELECT e_at, e_subscriber, e_list, e_kind, e_source, e_detail FROM json_to_recordset(%(rows)s::json) "
               "AS u(e_at timestamptz, e_subscriber int, e_list int, e_kind text, e_source text, e_detail json)",
)  # fmt: skip


_AT = sa.bindparam("c_at", type_=sa.DateTime(timezone=True))
# A CTE, computed once: an IN (subquery … LIMIT n FOR UPDATE SKIP LOCKED) may be run again for each row
# PostgreSQL considers, each run locking other rows, and so claim more than n.
_PICKED = (
    sa.select(deliveries.c.subscriber_id)
    .where(
        deliveries.c.campaign_id == sa.bindparam("c_id"),
        deliveries.c.status == PENDING,
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
    .values(lease_owner=sa.bindparam("c_owner"), lease_until=sa.bindparam("c_until", type_=sa.DateTime(timezone=True)))
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
_RECORD = (
    deliveries.update()
    .where(
        deliveries.c.campaign_id == sa.bindparam("b_campaign"),
        deliveries.c.subscriber_id == sa.bindparam("b_subscriber"),
        deliveries.c.status == PENDING,  # a final row is never rewritten
    )
    .values(
        status=sa.bindparam("b_status"),
        updated_at=sa.bindparam("b_at", type_=sa.DateTime(timezone=True)),
        next_attempt_at=sa.bindparam("b_next", type_=sa.DateTime(timezone=True)),
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


def _counts(found: dict[str, int]) -> dict[str, int]:
    return {PENDING: 0, SENT: 0, FAILED: 0, SKIPPED: 0, **found}


def _campaign(row) -> CampaignRow | None:
    if row is None:
        return None
    return CampaignRow(
        row.id, row.list_id, row.issue_slug, row.content_hash, row.subject, _aware(row.created_at),
        _aware(row.finished_at), row.status, _aware(row.scheduled_at), _aware(row.expires_at), _aware(row.started_at),
        row.content,
    )  # fmt: skip


def engine_name(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(invalid URL)"
