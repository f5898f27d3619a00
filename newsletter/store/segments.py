"""A segment (newsletter/segments.py) as SQL: a condition on memberships that narrows a list to its members who match,
and the store's count, sample and stream of those members.

segment_clause() is an extra `.where(...)` for any select FROM memberships; the consent predicate (subscribed, on
that list) is the caller's, always AND-ed beside it. It reaches the other tables through EXISTS, correlated to
memberships only, so that PostgreSQL makes each a semi-join (an anti-join under not) and SQLite an index probe:

- a tag: EXISTS on subscriber_tags by (tag_key, subscriber_id), its index; tags or-ed together are one EXISTS with
  tag_key IN (…);
- fields: the largest sub-trees that name only fields become one EXISTS on subscribers (its row read once, whatever
  the number of conditions), each field read from the JSON under every name it was written with and compared
  through lower() (see _FieldTest), never NULL (a NULL under not would drop the member SQL's way, not the
  reference's). The value's side is lower-cased in Python (the tree holds it so);
- the join date: memberships.joined_at, NULL matching no comparison.

On PostgreSQL the fields cost what reading a million JSON documents costs (subscribers.fields is `json`, text
parsed at each ->>): a second or more for a million, where a tag or a join date costs a few tenths (bench/
segments.py).

A field key that no name was ever written under matches nobody (its negation everybody): folded to a constant
here, before any SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles

from newsletter.segments import And, Field, Has, Joined, Not, Or, Segment, Tag
from newsletter.store.attributes import Attributes, tags_among
from newsletter.store.engine import _TIME
from newsletter.store.schema import memberships, subscriber_tags, subscribers
from newsletter.store.statuses import MembershipStatus
from newsletter.store.subscribers import Member

_Condition = sa.ColumnElement[bool] | bool  # a constant is folded away before it reaches SQL


_Window = tuple[int, int | None] | None  # (after, up to) subscriber ids: iter_segment's page, for every subquery


class _FieldTest(sa.sql.expression.ColumnElement[bool]):
    """A field, under any of the names it was written with, has one of these values (lower-cased), or (values
    None) a value other than "": never NULL.

    PostgreSQL: `lower(coalesce(fields ->> 'Municipalité', '')) IN (…) OR …` for each name, through SQLAlchemy's
    JSON index .as_string(); lower() folds by the database's LC_CTYPE (a UTF-8 locale every alphabet, C only ASCII).

    SQLite: `EXISTS (SELECT 1 FROM json_each(fields) WHERE key IN (names) AND unicode_lower(value) IN (…))`, one
    reading of the document whatever the number of names. json_extract's path would never find a key written with
    escapes, which json.dumps makes of every accent (`"Municipalit\\u00e9"`: SQLite 3.40 compares a path's label
    with the text as stored), nor spell a name holding a double quote. unicode_lower() is Python's str.lower,
    given to each connection by store/engine.py since SQLite's lower() folds ASCII only; SQLite's own lower() when
    every value is ASCII, for half the time (only an ASCII text can then be equal, and lower() folds it alike; the
    one character whose lower case is ASCII, the Kelvin sign, is then left as it is)."""

    type = sa.Boolean()
    inherit_cache = True

    def __init__(self, names: Sequence[str], values: Sequence[str] | None):
        self.names, self.values = tuple(names), tuple(values) if values is not None else None

    def _gen_cache_key(self, anon_map: Any, bindparams: Any) -> Any:
        return (type(self), self.names, self.values)


@compiles(_FieldTest)
def _field_test(element: _FieldTest, compiler: Any, **kw: Any) -> str:
    tests = []
    for name in element.names:
        text = sa.func.coalesce(subscribers.c.fields[name].as_string(), "")
        if element.values is None:
            tests.append(text != "")
        else:
            tests.append(sa.func.lower(text).in_(element.values))
    return f"({compiler.process(sa.or_(*tests), **kw)})"  # grouped: the caller's AND cannot see this OR


@compiles(_FieldTest, "sqlite")
def _field_test_sqlite(element: _FieldTest, compiler: Any, **kw: Any) -> str:
    entry = sa.table("json_each", sa.column("key"), sa.column("value"))
    found: sa.ColumnElement[bool] = entry.c.key.in_(element.names)
    if element.values is None:
        found = sa.and_(found, entry.c.value != "")
    else:
        lower = sa.func.lower if all(value.isascii() for value in element.values) else sa.func.unicode_lower
        found = sa.and_(found, lower(entry.c.value).in_(element.values))
    fields = compiler.process(subscribers.c.fields, **kw)
    return f"EXISTS (SELECT 1 FROM json_each({fields}) WHERE {compiler.process(found, **kw)})"


def segment_clause(
    segment: Segment, variants: Mapping[str, Sequence[str]], *, window: _Window = None
) -> sa.ColumnElement[bool]:
    """The segment as a condition on memberships (see the module's docstring); variants: each field key's names,
    as field_names holds them (Attributes.field_name_variants). window (after, up to), for a query of the members
    whose ids are in it: each subquery is bounded by it too, which PostgreSQL does not infer."""
    found = _condition(segment, variants, window)
    if isinstance(found, bool):
        return sa.true() if found else sa.false()
    return found


def _fields_only(segment: Segment) -> bool:
    return all(not isinstance(node, Tag | Joined) for node in segment.walk())


def _within(column: sa.ColumnElement[int], window: _Window) -> list[sa.ColumnElement[bool]]:
    if window is None:
        return []
    after, upto = window
    return [column > after] if upto is None else [column > after, column <= upto]


def _condition(segment: Segment, variants: Mapping[str, Sequence[str]], window: _Window) -> _Condition:
    if isinstance(segment, Not):  # NOT EXISTS: an anti-join against the few who match, not a semi-join on the rest
        return _negated(_condition(segment.item, variants, window))
    if _fields_only(segment):
        inner = _on_subscriber(segment, variants)
        if isinstance(inner, bool):
            return inner
        same = subscribers.c.id == memberships.c.subscriber_id
        return sa.exists().where(same, inner, *_within(subscribers.c.id, window)).correlate(memberships)
    if isinstance(segment, Tag):
        return _tagged([segment.key], window)
    if isinstance(segment, Joined):
        return _joined(segment)
    if isinstance(segment, And | Or):
        # The cheap first (SQLite stops at the first that decides; PostgreSQL orders by cost itself), the tags of
        # an `or` in one probe, the field-only items together last (one reading of the subscriber's fields).
        fields = [item for item in segment.items if _fields_only(item)]
        rest = [item for item in segment.items if not _fields_only(item)]
        parts: list[_Condition] = [_joined(item) for item in rest if isinstance(item, Joined)]
        rest = [item for item in rest if not isinstance(item, Joined)]
        if isinstance(segment, Or) and (tags := [item.key for item in rest if isinstance(item, Tag)]):
            parts.append(_tagged(tags, window))
            rest = [item for item in rest if not isinstance(item, Tag)]
        parts.extend(_condition(item, variants, window) for item in rest)
        if fields:
            together = fields[0] if len(fields) == 1 else type(segment)(tuple(fields))
            parts.append(_condition(together, variants, window))
        return _combined(isinstance(segment, And), parts)
    raise TypeError(f"not a segment: {segment!r}")


def _on_subscriber(segment: Segment, variants: Mapping[str, Sequence[str]]) -> _Condition:
    """A field-only segment as a condition on the subscribers row (never NULL)."""
    if isinstance(segment, Field | Has):
        names = variants.get(segment.key, ())
        return _FieldTest(names, segment.values if isinstance(segment, Field) else None) if names else False
    if isinstance(segment, Not):
        return _negated(_on_subscriber(segment.item, variants))
    if isinstance(segment, And | Or):
        return _combined(isinstance(segment, And), [_on_subscriber(item, variants) for item in segment.items])
    raise TypeError(f"not a condition on fields: {segment!r}")


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


def _negated(condition: _Condition) -> _Condition:
    return (not condition) if isinstance(condition, bool) else sa.not_(condition)


def _combined(conjunction: bool, parts: Sequence[_Condition]) -> _Condition:
    """and_/or_ of the parts, constants folded: true and x is x, false or x is x, false and x is false."""
    absorbing = not conjunction  # what decides alone: false for and, true for or
    if any(isinstance(part, bool) and part == absorbing for part in parts):
        return absorbing
    kept = [part for part in parts if not isinstance(part, bool)]
    if not kept:
        return conjunction
    if len(kept) == 1:
        return kept[0]
    return sa.and_(*kept) if conjunction else sa.or_(*kept)


class Segments(Attributes):
    """A list narrowed to a segment: counted, sampled and streamed (the consent predicate always with it)."""

    def segment_filter(self, segment: Segment, *, connection: Connection | None = None) -> sa.ColumnElement[bool]:
        """segment_clause with the field names looked up: a `.where()` for any select FROM memberships."""
        variants = self.field_name_variants(segment.field_keys(), connection=connection)
        return segment_clause(segment, variants)

    def list_field_keys(self, list_id: int, keys: Collection[str], *, connection: Connection | None = None) -> set[str]:
        """Which of these field keys some subscribed member of the list has a value for (`check`'s question of an
        issue's {{ placeholders }}): a `has KEY` probe each, stopping at its first member; a key never written is
        answered by the registry of field names alone."""
        found: set[str] = set()
        with self._reading(connection) as reading:
            variants = self.field_name_variants(keys, connection=reading)
            for key in sorted(variants):
                probe = sa.select(memberships.c.subscriber_id).where(
                    memberships.c.list_id == list_id,
                    memberships.c.status == MembershipStatus.SUBSCRIBED,
                    segment_clause(Has(key), variants),
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
        whole segment instead had PostgreSQL read every subscriber's fields again for each page (270 s for a
        third of a million, against one pass)."""
        with self._reading(connection) as reading:
            variants = self.field_name_variants(segment.field_keys(), connection=reading)
        after = 0
        while True:
            with self._reading(connection) as reading:
                upto = reading.execute(_window_end(list_id, after, page)).scalar()
                window = (after, upto)
                query = _members_query(list_id, segment_clause(segment, variants, window=window))
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
