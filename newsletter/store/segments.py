"""A segment (newsletter/segments.py) as SQL: a condition on memberships that narrows a list to its members who match,
and the store's count, sample and stream of those members.

segment_clause() is an extra `.where(...)` for any select FROM memberships; the consent predicate (subscribed, on
that list) is the caller's, always AND-ed beside it. It reaches the other tables through EXISTS, correlated to
memberships only, so that PostgreSQL makes each a semi-join (an anti-join under not) and SQLite an index probe:

- a tag: EXISTS on subscriber_tags by (tag_key, subscriber_id), its index; tags or-ed together are one EXISTS with
  tag_key IN (…);
- a field (`f = v`, `f in […]`, `has f`): EXISTS on subscriber_fields, where each of a subscriber's values is a
  row by key and lower-cased value (schema.field_index_rows: what the reference compares, so that the SQL lowers
  nothing): PostgreSQL hashes the members it holds from its index (field_key, value_key, subscriber_id), SQLite
  probes its primary key (subscriber_id, field_key) for each member. `!=` and `not in` are NOT EXISTS, and so
  match the members without the field, as the reference does. Tests of one field or-ed together are one EXISTS;
- the join date: memberships.joined_at, NULL matching no comparison.

EXISTS is never NULL, so that not is plain negation, as the reference's. On a million members a field costs about
what a tag costs, 0.1 to 0.3 s on PostgreSQL (0.3 to 0.6 s on SQLite), and an and/or of five conditions 0.7 s
(1 s on SQLite): bench/segments.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles

from newsletter.segments import And, Field, Has, Joined, Not, Or, Segment, Tag
from newsletter.store.attributes import Attributes, field_name_variants, tags_among
from newsletter.store.engine import _TIME
from newsletter.store.schema import index_text, memberships, subscriber_fields, subscriber_tags, subscribers
from newsletter.store.statuses import MembershipStatus
from newsletter.store.subscribers import Member

_Window = tuple[int, int | None] | None  # (after, up to) subscriber ids: iter_segment's page, for every subquery


def segment_clause(segment: Segment, *, window: _Window = None) -> sa.ColumnElement[bool]:
    """The segment as a condition on memberships (see the module's docstring). window (after, up to), for a query
    of the members whose ids are in it: each subquery is bounded by it too, which PostgreSQL does not infer."""
    return _condition(segment, window)


def _within(column: sa.ColumnElement[int], window: _Window) -> list[sa.ColumnElement[bool]]:
    if window is None:
        return []
    after, upto = window
    return [column > after] if upto is None else [column > after, column <= upto]


def _condition(segment: Segment, window: _Window) -> sa.ColumnElement[bool]:
    if isinstance(segment, Not):  # NOT EXISTS: an anti-join against the few who match, not a semi-join on the rest
        return sa.not_(_condition(segment.item, window))
    if isinstance(segment, Field | Has):
        return _valued([segment], window)
    if isinstance(segment, Tag):
        return _tagged([segment.key], window)
    if isinstance(segment, Joined):
        return _joined(segment)
    if isinstance(segment, And | Or):
        # The cheap first (SQLite stops at the first that decides; PostgreSQL orders by cost itself); the tags of
        # an `or` in one probe, and its tests of one field in one probe.
        parts: list[sa.ColumnElement[bool]] = [_joined(item) for item in segment.items if isinstance(item, Joined)]
        rest = [item for item in segment.items if not isinstance(item, Joined)]
        if isinstance(segment, Or):
            if tags := [item.key for item in rest if isinstance(item, Tag)]:
                parts.append(_tagged(tags, window))
            by_key: dict[str, list[Field | Has]] = {}
            for item in rest:
                if isinstance(item, Field | Has):
                    by_key.setdefault(item.key, []).append(item)
            parts.extend(_valued(tests, window) for tests in by_key.values())
            rest = [item for item in rest if not isinstance(item, Tag | Field | Has)]
        parts.extend(_condition(item, window) for item in rest)
        return sa.and_(*parts) if isinstance(segment, And) else sa.or_(*parts)
    raise TypeError(f"not a segment: {segment!r}")


class _Compared(sa.sql.expression.ColumnElement[str]):
    """A column compared, not looked up, on SQLite: `+value_key` (SQLite's own way of keeping a term out of an
    index's search), so that a member's `f in […]` is one probe of subscriber_fields' primary key by (subscriber_id,
    field_key) rather than one by (subscriber_id, field_key, value_key) for each value (twice the time for three).
    PostgreSQL, which reads the index's range once for all members, gets the column as it is."""

    inherit_cache = True

    def __init__(self, column: sa.ColumnElement[str]):
        self.column, self.type = column, column.type

    def _gen_cache_key(self, anon_map: Any, bindparams: Any) -> Any:
        return (type(self), self.column._gen_cache_key(anon_map, bindparams))


@compiles(_Compared)
def _compared(element: _Compared, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_Compared, "sqlite")
def _compared_sqlite(element: _Compared, compiler: Any, **kw: Any) -> str:
    return f"+{compiler.process(element.column, **kw)}"


def _valued(tests: Sequence[Field | Has], window: _Window) -> sa.ColumnElement[bool]:
    """Whether the member has a value of one field that any of these tests (of that key, or-ed together) takes:
    one EXISTS on subscriber_fields, a `has` taking in every value, the values in one IN. Never several keys in
    one EXISTS: with an OR of keys inside, SQLite read a whole key's rows for each member."""
    key = index_text(tests[0].key)
    found = [subscriber_fields.c.field_key == key, subscriber_fields.c.subscriber_id == memberships.c.subscriber_id]
    if all(isinstance(test, Field) for test in tests):
        values = sorted({index_text(value) for test in tests for value in cast(Field, test).values})
        value = _Compared(subscriber_fields.c.value_key)
        found.append(value == values[0] if len(values) == 1 else value.in_(values))
    return sa.exists().where(*found, *_within(subscriber_fields.c.subscriber_id, window)).correlate(memberships)


def _tagged(keys: Sequence[str], window: _Window) -> sa.ColumnElement[bool]:
    key = subscriber_tags.c.tag_key == keys[0] if len(keys) == 1 else subscriber_tags.c.tag_key.in_(list(keys))
    same = subscriber_tags.c.subscriber_id == memberships.c.subscriber_id
    return sa.exists().where(key, same, *_within(subscriber_tags.c.subscriber_id, window)).correlate(memberships)


_COMPARE: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _joined(segment: Joined) -> sa.ColumnElement[bool]:
    at = sa.bindparam(None, segment.at, type_=_TIME, unique=True)  # in UTC: SQLite's text holds UTC, unzoned
    return sa.and_(memberships.c.joined_at.is_not(None), _COMPARE[segment.op](memberships.c.joined_at, at))


class Segments(Attributes):
    """A list narrowed to a segment: counted, sampled and streamed (the consent predicate always with it)."""

    def segment_filter(self, segment: Segment, *, connection: Connection | None = None) -> sa.ColumnElement[bool]:
        """segment_clause: a `.where()` for any select FROM memberships (the connection is not needed)."""
        return segment_clause(segment)

    def list_field_keys(self, list_id: int, keys: Collection[str], *, connection: Connection | None = None) -> set[str]:
        """Which of these field keys some subscribed member of the list has a value for (`check`'s question of an
        issue's {{ placeholders }}): a `has KEY` probe each, stopping at its first member; a key never written is
        answered by the registry of field names alone."""
        found: set[str] = set()
        with self._reading(connection) as reading:
            for key in sorted(field_name_variants(reading, keys)):
                probe = sa.select(memberships.c.subscriber_id).where(
                    memberships.c.list_id == list_id,
                    memberships.c.status == MembershipStatus.SUBSCRIBED,
                    segment_clause(Has(key)),
                )
                if reading.execute(probe.limit(1)).first() is not None:
                    found.add(key)
        return found

    def count_segment(self, list_id: int, segment: Segment, *, connection: Connection | None = None) -> int:
        """How many subscribed members of the list the segment holds."""
        with self._reading(connection) as reading:
            query = (
                sa.select(sa.func.count())
                .select_from(memberships)
                .where(
                    memberships.c.list_id == list_id,
                    memberships.c.status == MembershipStatus.SUBSCRIBED,
                    self.segment_filter(segment, connection=reading),
                )
            )
            return reading.execute(query).scalar_one()

    def segment_sample(
        self, list_id: int, segment: Segment, limit: int, *, connection: Connection | None = None
    ) -> list[Member]:
        """The first `limit` subscribed members of the segment, in subscriber order (a dry run's sample), with
        their tags: one query, however far in the list they are."""
        if limit <= 0:
            return []
        with self._reading(connection) as reading:
            condition = self.segment_filter(segment, connection=reading)
            rows = reading.execute(_members_query(list_id, condition).limit(limit)).all()
            return _members(reading, rows, tags=True)

    def iter_segment(
        self,
        list_id: int,
        segment: Segment,
        page: int = 2000,
        *,
        tags: bool = False,
        connection: Connection | None = None,
    ) -> Iterator[Member]:
        """The segment's subscribed members in subscriber order, streamed: memory stays flat whatever the list's
        size. Without a connection each page reads on a connection of its own, as iter_members does.

        A page is a window of `page` subscribed members of the list (found by memberships_by_list, after the last
        window's end), filtered by the segment with every subquery bounded by the window: a `LIMIT page` over the
        whole segment instead had PostgreSQL run the segment's subqueries over the whole list again for each page
        (270 s for a third of a million, when fields were read from each subscriber's JSON)."""
        after = 0
        while True:
            with self._reading(connection) as reading:
                upto = reading.execute(_window_end(list_id, after, page)).scalar()
                window = (after, upto)
                query = _members_query(list_id, segment_clause(segment, window=window))
                # Both sides of the join bounded: PostgreSQL carries no inequality across it, and would walk the
                # subscribers' index from its first id for each page.
                query = query.where(*_within(memberships.c.subscriber_id, window), *_within(subscribers.c.id, window))
                members = _members(reading, reading.execute(query).all(), tags=tags)
            yield from members
            if upto is None:
                return
            after = upto


def _window_end(list_id: int, after: int, size: int) -> sa.Select:
    """The id of the size-th subscribed member after `after` (None: fewer are left), by memberships_by_list."""
    return (
        sa.select(memberships.c.subscriber_id)
        .where(
            memberships.c.list_id == list_id,
            memberships.c.status == MembershipStatus.SUBSCRIBED,
            memberships.c.subscriber_id > after,
        )
        .order_by(memberships.c.subscriber_id)
        .offset(size - 1)
        .limit(1)
    )


def _members_query(list_id: int, condition: sa.ColumnElement[bool]) -> sa.Select:
    return (
        sa.select(
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            sa.cast(subscribers.c.fields, sa.Text).label("fields"),
            subscribers.c.lang,
        )
        .select_from(memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id))
        .where(
            memberships.c.list_id == list_id,
            memberships.c.status == MembershipStatus.SUBSCRIBED,
            condition,
        )
        .order_by(memberships.c.subscriber_id)
    )


def _members(connection: Connection, rows: Sequence[sa.Row], *, tags: bool) -> list[Member]:
    tagged = tags_among(connection, [row.id for row in rows]) if tags else {}
    found = []
    for row in rows:  # the fields as text: most members have none to parse
        fields = json.loads(row.fields) if row.fields and row.fields != "{}" else {}
        own = tuple(sorted(tagged.get(row.id, {}).values(), key=str.casefold))
        found.append(Member(row.id, row.email, row.name, fields, MembershipStatus.SUBSCRIBED, own, lang=row.lang))
    return found
