"""Subscribers and their memberships: subscribing one address or a whole import's batch, status changes with
their events (a click, a bounce, an unsubscribe), and reading a list's members a page at a time.

- An address is unique case-insensitively: `email_key` is its lower-cased form; `email` keeps it as given.
- Nothing here turns an unsubscribed, bounced or complained membership back into subscribed, nor subscribes a
  person erased at their request (a suppression): only the subscriber does (undo, or a confirmed sign-up).
- `events` is append-only: who, when, how each subscription and unsubscription happened (CASL's consent record).

The import's path (subscribe_many) and a group of clicks (apply_changes) cost a handful of prebuilt statements
whatever their number of rows: they are below, each beside the method that runs it.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.fields import merge_fields, tag_key
from newsletter.store.attributes import (
    Attributes,
    add_tags,
    index_fields,
    register_field_names,
    reindex_fields,
    tags_among,
)
from newsletter.store.engine import _TIME, _Among, _aware, _insert_ignoring, _Lookup, _Many, now
from newsletter.store.lists import ListRow, _list_named
from newsletter.store.schema import (
    address_hash,
    events,
    field_index_rows,
    lists,
    memberships,
    subscribers,
    suppressions,
)
from newsletter.store.statuses import MembershipStatus

IMPORT_CACHE_KB = 16_384  # SQLite's page cache for an import's connection (its default is 2 MB)


@dataclass(frozen=True)
class Member:
    subscriber_id: int
    email: str
    name: str | None
    fields: dict
    status: str
    tags: tuple[str, ...] = ()  # read only when asked for (iter_members(tags=True))
    joined_at: dt.datetime | None = None
    lang: str | None = None  # the language they read in; None: the list's first (config.reader_language)


@dataclass(frozen=True)
class Subscription:
    """One address to subscribe to a list among many (an import's row): what subscribe_many() takes."""

    email: str  # validated and normalised
    name: str | None
    fields: dict
    detail: dict  # for its event: where it came from (the file and line), and the consent it records
    status: str = MembershipStatus.SUBSCRIBED  # what the file says: subscribed, or how they left (LEAVING)
    tags: tuple[str, ...] = ()  # added to the subscriber's (an import never takes a tag off)
    joined_at: dt.datetime | None = None  # when they joined, where the file says (else now)
    status_at: dt.datetime | None = None  # when they left, where the file says: their event's time (else now)
    lang: str | None = None  # their language, where the file says (else the one held stays)


# What an imported row may say of someone instead of subscribed: never mailed, and never turned into subscribed by
# an import. NONSUBSCRIBED (never opted in) leaves a subscribed member as they are; the others unsubscribe them.
LEAVING = (
    MembershipStatus.UNSUBSCRIBED,
    MembershipStatus.BOUNCED,
    MembershipStatus.COMPLAINED,
    MembershipStatus.NONSUBSCRIBED,
)


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
class ChangeResult:
    before: str | None  # the membership's status before; None when there is no such membership
    email: str | None
    lang: str | None = None  # the person's language (the page that answers speaks it)

    @property
    def found(self) -> bool:
        return self.before is not None


# The event log's statements, which every part of the store writes with (one event, or a batch of them).
_LOG_EVENT = events.insert().values(
    at=sa.bindparam("e_at", type_=_TIME),
    subscriber_id=sa.bindparam("e_subscriber"),
    list_id=sa.bindparam("e_list"),
    kind=sa.bindparam("e_kind"),
    source=sa.bindparam("e_source"),
    detail=sa.bindparam("e_detail", type_=sa.JSON),
)
_LOG_EVENTS = _Many(
    lambda _: _LOG_EVENT,
    ["e_at", "e_subscriber", "e_list", "e_kind", "e_source", "e_detail"],
    postgresql="INSERT INTO events (at, subscriber_id, list_id, kind, source, detail) "
    "SELECT e_at, e_subscriber, e_list, e_kind, e_source, e_detail FROM json_to_recordset(%(rows)s::json) "
    "AS u(e_at timestamptz, e_subscriber int, e_list int, e_kind text, e_source text, e_detail json)",
)
# New subscribers and memberships, a batch at a time (an import's, a group of sign-ups').
_INSERT_SUBSCRIBERS = _Many(
    lambda dialect: _insert_ignoring(dialect, subscribers).values(
        email=sa.bindparam("s_email"),
        email_key=sa.bindparam("s_key"),
        name=sa.bindparam("s_name"),
        fields=sa.bindparam("s_fields", type_=sa.JSON),
        created_at=sa.bindparam("s_at", type_=_TIME),
        lang=sa.bindparam("s_lang"),
    ),
    ["s_email", "s_key", "s_name", "s_fields", "s_at", "s_lang"],
    postgresql="INSERT INTO subscribers (email, email_key, name, fields, created_at, lang) "
    "SELECT s_email, s_key, s_name, s_fields, s_at, s_lang FROM json_to_recordset(%(rows)s::json) "
    "AS u(s_email text, s_key text, s_name text, s_fields json, s_at timestamptz, s_lang text) ON CONFLICT DO NOTHING",
)
_INSERT_MEMBERSHIPS = _Many(
    lambda dialect: _insert_ignoring(dialect, memberships).values(
        subscriber_id=sa.bindparam("m_subscriber"),
        list_id=sa.bindparam("m_list"),
        status=sa.bindparam("m_status"),
        updated_at=sa.bindparam("m_at", type_=_TIME),
        joined_at=sa.bindparam("m_joined", type_=_TIME),
    ),
    ["m_subscriber", "m_list", "m_status", "m_at", "m_joined"],
    postgresql="INSERT INTO memberships (subscriber_id, list_id, status, updated_at, joined_at) "
    "SELECT m_subscriber, m_list, m_status, m_at, m_joined FROM json_to_recordset(%(rows)s::json) "
    "AS u(m_subscriber int, m_list int, m_status text, m_at timestamptz, m_joined timestamptz) ON CONFLICT DO NOTHING",
)

# subscribe_many's statements: a batch of thousands of rows costs a handful of them.
_SUBSCRIBERS_BY_KEY = (  # the fields as text: most subscribers have none to parse
    sa.select(
        subscribers.c.id,
        subscribers.c.email_key,
        subscribers.c.name,
        sa.cast(subscribers.c.fields, sa.Text).label("fields"),
        subscribers.c.lang,
    )
    .where(_Among(subscribers.c.email_key, "k_keys"))
    .with_for_update()
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
_UPDATE_SUBSCRIBERS = _Many(
    lambda _: (
        subscribers.update()
        .where(subscribers.c.id == sa.bindparam("s_id"))
        .values(
            name=sa.bindparam("s_name"), fields=sa.bindparam("s_fields", type_=sa.JSON), lang=sa.bindparam("s_lang")
        )
    ),
    ["s_name", "s_fields", "s_lang", "s_id"],
    postgresql="UPDATE subscribers SET name = u.s_name, fields = u.s_fields, lang = u.s_lang "
    "FROM json_to_recordset(%(rows)s::json) AS u(s_name text, s_fields json, s_lang text, s_id int) "
    "WHERE subscribers.id = u.s_id",
)

# apply_changes' statements (a group of clicks). A subscriber has few rows, found by the indexes that start with
# subscriber_id; neither a row-value IN nor a list_id IN, for which SQLite scans the whole table or every member
# of the list. Both sides of the join by their key: with only one, PostgreSQL hashes the whole subscribers table.
_MEMBERSHIPS_AND_ADDRESSES = _Lookup(
    "SELECT memberships.subscriber_id, memberships.list_id, memberships.status, subscribers.email, subscribers.lang "
    "FROM memberships "
    "JOIN subscribers ON subscribers.id = memberships.subscriber_id "
    "WHERE memberships.subscriber_id IN ({values}) AND subscribers.id IN ({values})"
)
_SET_MEMBERSHIP = (
    memberships.update()
    .where(
        memberships.c.subscriber_id == sa.bindparam("m_subscriber"),
        memberships.c.list_id == sa.bindparam("m_list"),
        memberships.c.status == sa.bindparam("m_before"),
    )
    .values(status=sa.bindparam("m_status"), updated_at=sa.bindparam("m_at", type_=_TIME))
)


class Subscribers(Attributes):
    def subscribe(
        self,
        list_id: int,
        email: str,
        name: str | None,
        fields: dict,
        source: str,
        detail: dict | None = None,
        *,
        tags: Sequence[str] = (),
        lang: str | None = None,
        connection: Connection | None = None,
    ) -> str:
        """Add or update one subscriber on a list (their fields merged by key, the tags added, their language set
        when `lang` is given); return added, updated, unchanged or refused.

        A member who unsubscribed, bounced, complained, or signed up without confirming yet is refused, as is a
        person erased at their request: only they can subscribe again (undo, or a confirmed sign-up).
        """
        key = email.lower()
        at = now()
        with self._writing(connection) as writing:
            row = writing.execute(
                sa.select(subscribers.c.id, subscribers.c.name, subscribers.c.fields, subscribers.c.lang).where(
                    subscribers.c.email_key == key
                )
            ).first()
            changed = False
            if row is None and self.suppressed(email, connection=writing):
                return "refused"  # erased at their request: only their own new confirmation brings them back
            if row is None:
                subscriber_id = writing.execute(
                    subscribers.insert()
                    .values(email=email, email_key=key, name=name, fields=fields, created_at=at, lang=lang)
                    .returning(subscribers.c.id)
                ).scalar_one()
                index_fields(writing, field_index_rows(subscriber_id, fields))
            else:
                subscriber_id = row.id
                merged = merge_fields(row.fields or {}, fields)
                new_name, new_lang = name or row.name, lang or row.lang
                if new_name != row.name or merged != (row.fields or {}) or new_lang != row.lang:
                    writing.execute(
                        subscribers.update()
                        .where(subscribers.c.id == subscriber_id)
                        .values(name=new_name, fields=merged, lang=new_lang)
                    )
                    if merged != (row.fields or {}):
                        reindex_fields(writing, [subscriber_id], field_index_rows(subscriber_id, merged))
                    changed = True
            register_field_names(writing, self._field_names_seen(), [fields])
            if tags and self.tag(subscriber_id, tags, connection=writing):
                changed = True
            status = writing.execute(
                sa.select(memberships.c.status).where(
                    memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id
                )
            ).scalar()
            if status is None:
                writing.execute(
                    memberships.insert().values(
                        subscriber_id=subscriber_id,
                        list_id=list_id,
                        status=MembershipStatus.SUBSCRIBED,
                        updated_at=at,
                        joined_at=at,
                    )
                )
                self._event(writing, subscriber_id, list_id, MembershipStatus.SUBSCRIBED, source, detail)
                return "added"
            if status != MembershipStatus.SUBSCRIBED:
                return "refused"
            if changed:
                self._event(writing, subscriber_id, list_id, "updated", source, detail)
                return "updated"
            return "unchanged"

    def subscribe_many(
        self, list_id: int, rows: Sequence[Subscription], source: str, *, connection: Connection | None = None
    ) -> list[str]:
        """subscribe() for many addresses at once (distinct whatever their case), each row with the status its file
        gives: for each, by the same rules, in a handful of statements whatever their number,

        - added, updated, unchanged or refused (the store records them as having left) for a subscribed row;
        - held: a leaving row (LEAVING) of someone new to the list, recorded with that status, never mailed;
        - left: a leaving row (not NONSUBSCRIBED) of a subscribed member, who now has that status;
        - updated or unchanged for a leaving row of a member who is not subscribed (their status stays).

        An address erased at its owner's request is refused whatever its row says. New subscribers and memberships
        are inserted ON CONFLICT DO NOTHING, then read back by this batch's instant, which they are stamped with:
        those that are not were added by someone else meanwhile (a sign-up, another import, on PostgreSQL), and
        are taken as they now are, so that the batch never fails on them. Existing subscribers are locked (FOR
        UPDATE) while their fields merge.
        """
        if not rows:
            return []
        with self._writing(connection) as writing:
            return self._subscribe_many(writing, list_id, rows, source)

    def _subscribe_many(
        self, connection: Connection, list_id: int, rows: Sequence[Subscription], source: str
    ) -> list[str]:
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
        inserted: set[str] = set()
        register_field_names(connection, self._field_names_seen(), (row.fields for row in rows if row.fields))
        if wanted:
            fresh = [(rows[i].email, keys[i], rows[i].name, rows[i].fields, at, rows[i].lang) for i in wanted]
            _INSERT_SUBSCRIBERS(connection, fresh)
            wanted_keys = [keys[i] for i in wanted]
            ids.update(connection.execute(_INSERTED_IDS, {"k_keys": wanted_keys, "k_at": at}).all())
            inserted = set(ids)  # subscribers this batch made: they have no tags yet, nor indexed fields
            made = [(ids[keys[i]], rows[i].fields) for i in wanted if keys[i] in ids and rows[i].fields]
            index_fields(
                connection,
                [entry for subscriber_id, fields in made for entry in field_index_rows(subscriber_id, fields)],
            )
            lost = [key for key in wanted_keys if key not in ids]  # added by someone else since we looked
            if lost:
                found.update({r.email_key: r for r in connection.execute(_SUBSCRIBERS_BY_KEY, {"k_keys": lost})})
        changed: set[int] = set()
        updates = []
        reindexed: list[int] = []  # the subscribers whose fields this batch changes, and their index's new rows
        reindexing: list[tuple[int, str, str]] = []
        for i, key in enumerate(keys):
            row = found.get(key)
            if row is None or results[i] is not None:
                continue
            before = json.loads(row.fields) if row.fields and row.fields != "{}" else {}
            merged = merge_fields(before, rows[i].fields)
            new_name, new_lang = rows[i].name or row.name, rows[i].lang or row.lang
            if new_name != row.name or merged != before or new_lang != row.lang:
                updates.append((new_name, merged, new_lang, row.id))
                changed.add(i)
            if merged != before:
                reindexed.append(row.id)
                reindexing.extend(field_index_rows(row.id, merged))
            ids[key] = row.id
        if updates:
            _UPDATE_SUBSCRIBERS(connection, updates)
            reindex_fields(connection, reindexed, reindexing)
        self._add_rows_tags(connection, rows, keys, ids, inserted, results, changed)
        statuses = self._statuses(connection, list_id, [ids[key] for key in found if key in ids])
        joining = [i for i, key in enumerate(keys) if results[i] is None and statuses.get(ids[key]) is None]
        if joining:
            _INSERT_MEMBERSHIPS(
                connection,
                [(ids[keys[i]], list_id, rows[i].status, at, rows[i].joined_at or at) for i in joining],
            )
            joining_ids = [ids[keys[i]] for i in joining]
            joined = set(connection.execute(_JOINED, {"k_list": list_id, "k_ids": joining_ids, "k_at": at}).scalars())
            # Those joined by someone else since we looked are taken as they now are.
            statuses.update(self._statuses(connection, list_id, [i for i in joining_ids if i not in joined]))
            for i in joining:
                if ids[keys[i]] in joined:
                    results[i] = "added" if rows[i].status == MembershipStatus.SUBSCRIBED else "held"
        logged: list[tuple] = []
        leaving: list[dict] = []
        for i, key in enumerate(keys):
            asked, kind, when = rows[i], "", at
            current = statuses.get(ids[key]) if key in ids else None
            if results[i] in ("added", "held"):
                kind, when = asked.status, (asked.status_at or at) if results[i] == "held" else at
            elif results[i] is not None:
                continue
            elif asked.status == MembershipStatus.SUBSCRIBED and current != MembershipStatus.SUBSCRIBED:
                results[i] = "refused"
                continue
            elif asked.status not in (MembershipStatus.SUBSCRIBED, MembershipStatus.NONSUBSCRIBED) and (
                current == MembershipStatus.SUBSCRIBED
            ):
                results[i], kind, when = "left", asked.status, asked.status_at or at
                leaving.append(
                    {
                        "m_subscriber": ids[key],
                        "m_list": list_id,
                        "m_status": asked.status,
                        "m_at": at,
                        "m_before": current,
                    }
                )
            elif i in changed:
                results[i] = kind = "updated"
            else:
                results[i] = "unchanged"
                continue
            logged.append((when, ids[key], list_id, kind, source, asked.detail))
        if leaving:
            connection.execute(_SET_MEMBERSHIP, leaving)
        if logged:
            _LOG_EVENTS(connection, logged)
        return cast(list[str], results)  # every row got its result above

    def _add_rows_tags(
        self,
        connection: Connection,
        rows: Sequence[Subscription],
        keys: list[str],
        ids: dict[str, int],
        inserted: set[str],
        results: list[str | None],
        changed: set[int],
    ) -> None:
        """Add the batch's tags each subscriber lacks (one this batch inserted has none to look up); a row that
        brings one is changed (updated)."""
        tagged = [i for i, row in enumerate(rows) if row.tags and results[i] is None and keys[i] in ids]
        if not tagged:
            return
        have = tags_among(connection, [ids[keys[i]] for i in tagged if keys[i] not in inserted])
        adding: list[tuple[int, str]] = []
        for i in tagged:
            subscriber_id = ids[keys[i]]
            own = have.get(subscriber_id, {})
            new = [tag for tag in rows[i].tags if tag_key(tag) not in own]
            if new:
                adding.extend((subscriber_id, tag) for tag in new)
                changed.add(i)
        add_tags(connection, adding)

    def _statuses(self, connection: Connection, list_id: int, subscriber_ids: Sequence[int]) -> dict[int, str]:
        if not subscriber_ids:
            return {}
        found = connection.execute(_STATUSES_AMONG, {"k_list": list_id, "k_ids": list(subscriber_ids)})
        return dict(found.all())

    def set_status(
        self,
        subscriber_id: int,
        list_id: int,
        status: str,
        source: str,
        detail: dict | None = None,
        *,
        connection: Connection | None = None,
    ) -> bool:
        """Change a membership's status and log the event; return False when it already had that status."""
        with self._writing(connection) as writing:
            current = writing.execute(
                sa.select(memberships.c.status).where(
                    memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id
                )
            ).scalar()
            if current is None or current == status:
                return False
            writing.execute(
                memberships.update()
                .where(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)
                .values(status=status, updated_at=now())
            )
            self._event(writing, subscriber_id, list_id, status, source, detail)
            return True

    def _event(
        self,
        connection: Connection,
        subscriber_id: int,
        list_id: int | None,
        kind: str,
        source: str,
        detail: dict | None,
    ) -> None:
        connection.execute(
            events.insert().values(
                at=now(), subscriber_id=subscriber_id, list_id=list_id, kind=kind, source=source, detail=detail or {}
            )
        )

    def suppressed(self, email: str, *, connection: Connection | None = None) -> bool:
        """Whether the address was erased at its owner's request (a suppression holds its hash)."""
        with self._reading(connection) as reading:
            found = reading.execute(
                sa.select(suppressions.c.email_hash).where(suppressions.c.email_hash == address_hash(email))
            ).first()
        return found is not None

    def find_subscriber(self, email: str, *, connection: Connection | None = None) -> int | None:
        with self._reading(connection) as reading:
            return reading.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == email.lower())).scalar()

    def membership(
        self, subscriber_id: int, list_slug: str, *, connection: Connection | None = None
    ) -> tuple[ListRow, str, str, str | None] | None:
        """(list, address, status, the person's language) of one membership, in one query; None if there is none."""
        with self._reading(connection) as reading:
            row = reading.execute(
                sa.select(lists.c.id, lists.c.slug, lists.c.name, subscribers.c.email)
                .add_columns(memberships.c.status, subscribers.c.lang)
                .join(memberships, memberships.c.list_id == lists.c.id)
                .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
                .where(_list_named(list_slug), memberships.c.subscriber_id == subscriber_id)
            ).first()
        return (ListRow(row.id, row.slug, row.name), row.email, row.status, row.lang) if row else None

    def set_language(
        self,
        subscriber_id: int,
        lang: str,
        source: str,
        detail: dict | None = None,
        *,
        list_id: int | None = None,
        connection: Connection | None = None,
    ) -> bool:
        """Set the language a person reads in, with an `updated` event (on list_id: the list whose page they were
        on) holding the language and the one before; False when they had it already (nothing written) or nobody
        has this id."""
        with self._writing(connection) as writing:
            found = writing.execute(
                sa.select(subscribers.c.lang).where(subscribers.c.id == subscriber_id).with_for_update()
            ).first()
            if found is None or found.lang == lang:
                return False
            writing.execute(subscribers.update().where(subscribers.c.id == subscriber_id).values(lang=lang))
            changed = {**(detail or {}), "lang": lang, "lang_before": found.lang}
            self._event(writing, subscriber_id, list_id, "updated", source, changed)
            return True

    def memberships_of(self, subscriber_id: int, *, connection: Connection | None = None) -> list[tuple[ListRow, str]]:
        """Every list this person is on, with their status there, by slug."""
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(lists.c.id, lists.c.slug, lists.c.name, memberships.c.status)
                .join(memberships, memberships.c.list_id == lists.c.id)
                .where(memberships.c.subscriber_id == subscriber_id)
                .order_by(lists.c.slug)
            ).all()
        return [(ListRow(row.id, row.slug, row.name), row.status) for row in rows]

    def apply_changes(
        self, changes: Sequence[StatusChange], *, connection: Connection | None = None
    ) -> list[ChangeResult]:
        """Clicks' changes: each membership moves if it is in one of its change's allowed states, with its event;
        returns, per change, the status it had and the address.

        One query reads the whole group, then one executemany updates and one logs: a click costs little more
        than its share of three statements.
        """
        if not changes:
            return []
        at = now()
        pairs = {(c.subscriber_id, c.list_id) for c in changes}
        people = sorted({subscriber_id for subscriber_id, _ in pairs})
        with self._writing(connection) as writing:
            current = {
                (subscriber_id, list_id): [status, email, lang]
                for subscriber_id, list_id, status, email, lang in _MEMBERSHIPS_AND_ADDRESSES(writing, people)
                if (subscriber_id, list_id) in pairs
            }
            results, updates, logged = [], [], []
            for change in changes:
                found = current.get((change.subscriber_id, change.list_id))
                if found is None:
                    results.append(ChangeResult(None, None))
                    continue
                before, address, lang = found
                results.append(ChangeResult(before, address, lang))
                if before != change.status and before in change.allowed_from:
                    found[0] = change.status  # a second change of the same membership in the group sees this one
                    updates.append(
                        {
                            "m_subscriber": change.subscriber_id,
                            "m_list": change.list_id,
                            "m_status": change.status,
                            "m_at": at,
                            "m_before": before,
                        }
                    )
                    logged.append(
                        (at, change.subscriber_id, change.list_id, change.status, change.source, change.detail)
                    )
            if updates:
                writing.execute(_SET_MEMBERSHIP, updates)
                _LOG_EVENTS(writing, logged)
        return results

    def subscribed_among(
        self, list_id: int, subscriber_ids: Sequence[int], *, connection: Connection | None = None
    ) -> set[int]:
        """Which of these subscribers are subscribed to the list at this instant."""
        with self._reading(connection) as reading:
            return set(
                reading.execute(
                    sa.select(memberships.c.subscriber_id).where(
                        memberships.c.list_id == list_id,
                        memberships.c.status == MembershipStatus.SUBSCRIBED,
                        memberships.c.subscriber_id.in_(subscriber_ids),
                    )
                ).scalars()
            )

    def count_members(
        self, list_id: int, status: str | None = MembershipStatus.SUBSCRIBED, *, connection: Connection | None = None
    ) -> int:
        query = sa.select(sa.func.count()).select_from(memberships).where(memberships.c.list_id == list_id)
        if status:
            query = query.where(memberships.c.status == status)
        with self._reading(connection) as reading:
            return reading.execute(query).scalar_one()

    def members(
        self, list_id: int, status: str | None = None, *, page: int = 1000, connection: Connection | None = None
    ) -> Iterator[Member]:
        """Stream a list's members in id order, a page at a time (never the whole list in memory): iter_members
        from the first, with pages of a thousand."""
        return self.iter_members(list_id, status, page=page, connection=connection)

    def iter_members(
        self,
        list_id: int,
        status: str | None = None,
        *,
        offset: int = 0,
        limit: int | None = None,
        page: int = 2000,
        tags: bool = False,
        connection: Connection | None = None,
    ) -> Iterator[Member]:
        """A list's members in subscriber order, from the offset-th and at most limit of them, read a page at a
        time so that memory and time per page stay flat whatever the list's size.

        Each status is read on its own, by memberships_by_list (list, status, subscriber) in subscriber order,
        each page after the last id of the one before (keyset); without a status the statuses are merged. Any
        other form (every status at once) lets the planner sort the whole list for each page, on either engine
        (ordering by subscribers.id made SQLite sort the whole list for every page, even for a dry run's five).
        Without a status, one query finds the offset-th member's id (the database counts, in one pass), from
        which the merge starts.
        """
        if status:
            yield from self._members_of(list_id, status, offset, limit, page, tags=tags, connection=connection)
            return
        after = 0
        if offset:
            with self._reading(connection) as reading:
                first = reading.execute(
                    sa.select(memberships.c.subscriber_id)
                    .where(memberships.c.list_id == list_id)
                    .order_by(memberships.c.subscriber_id)
                    .offset(offset)
                    .limit(1)
                ).scalar()
            if first is None:
                return
            after = first - 1
        merged = heapq.merge(
            *(
                self._members_of(list_id, s, 0, None, page, after, tags=tags, connection=connection)
                for s in MembershipStatus
            ),
            key=lambda member: member.subscriber_id,
        )
        yield from itertools.islice(merged, limit)

    def _members_of(
        self,
        list_id: int,
        status: str,
        offset: int,
        limit: int | None,
        page: int,
        after: int = 0,
        *,
        tags: bool = False,
        connection: Connection | None = None,
    ) -> Iterator[Member]:
        skip, left = offset, limit
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            query = (
                sa.select(
                    subscribers.c.id,
                    subscribers.c.email,
                    subscribers.c.name,
                    sa.cast(subscribers.c.fields, sa.Text).label("fields"),
                    memberships.c.joined_at,
                    subscribers.c.lang,
                )
                .select_from(memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id))
                .where(
                    memberships.c.list_id == list_id,
                    memberships.c.status == status,
                    memberships.c.subscriber_id > after,
                )
                .order_by(memberships.c.subscriber_id)
                .offset(skip)
                .limit(size)
            )
            with self._reading(connection) as reading:
                rows = reading.execute(query).all()
                tagged = tags_among(reading, [row.id for row in rows]) if tags else {}
            for row in rows:  # the fields as text: most members have none to parse
                fields = json.loads(row.fields) if row.fields and row.fields != "{}" else {}
                own = tuple(sorted(tagged.get(row.id, {}).values(), key=str.casefold))
                yield Member(row.id, row.email, row.name, fields, status, own, _aware(row.joined_at), row.lang)
            if len(rows) < size:
                return
            after, skip = rows[-1].id, 0
            if left is not None:
                left -= len(rows)

    def member_field_names(
        self, list_id: int, status: str | None = None, *, connection: Connection | None = None
    ) -> list[str]:
        """The names of the fields a list's members have, in the order they first appear (by subscriber): the
        columns of an export."""
        names: dict[str, None] = {}
        for member in self.iter_members(list_id, status, page=5000, connection=connection):
            if member.fields:
                names.update(dict.fromkeys(member.fields))
        return list(names)

    def consent_among(
        self, list_id: int, subscriber_ids: Sequence[int], *, connection: Connection | None = None
    ) -> dict[int, dict[str, str]]:
        """When each of these members opted in and confirmed (ISO 8601), as the latest evidence of it their events
        on the list hold: an import's consent (on the row of any status), or a sign-up's request and confirmation.
        What an export writes; an event that holds none (an unsubscribe) leaves the evidence as it was."""
        found: dict[int, dict[str, str]] = {}
        if not subscriber_ids:
            return found
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(events.c.subscriber_id, events.c.kind, events.c.source, events.c.at, events.c.detail)
                .where(
                    _Among(events.c.subscriber_id, "k_ids"),
                    events.c.list_id == list_id,
                    events.c.kind.in_([*MembershipStatus, "signup-requested"]),
                )
                .order_by(events.c.id),
                {"k_ids": list(subscriber_ids)},
            ).all()
        for subscriber_id, kind, source, at, detail in rows:
            at = _aware(at)
            if kind == "signup-requested":
                found[subscriber_id] = {"opted_in_at": at.isoformat()}
            elif (detail or {}).get("consent"):
                evidence = detail["consent"]
                found[subscriber_id] = {k: evidence[k] for k in ("opted_in_at", "confirmed_at") if evidence.get(k)}
            elif source == "double-opt-in":
                found[subscriber_id] = {**found.get(subscriber_id, {}), "confirmed_at": at.isoformat()}
        return {k: v for k, v in found.items() if v}

    def history(self, subscriber_id: int, *, connection: Connection | None = None) -> list[dict[str, Any]]:
        with self._reading(connection) as reading:
            rows = reading.execute(
                sa.select(events).where(events.c.subscriber_id == subscriber_id).order_by(events.c.id)
            ).all()
        return [dict(row._mapping) for row in rows]
