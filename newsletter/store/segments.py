"""A segment (newsletter/segments.py) as SQL: a condition on memberships that narrows a list to its members who match,
and the store's count, sample and stream of those members.

segment_clause() is an extra `.where(...)` for any select FROM memberships; the consent predicate (subscribed, on
that list) is the caller's, always AND-ed beside it. It reaches the other tables through EXISTS, correlated to
memberships only, so that PostgreSQL makes each a semi-join (an anti-join under not) and SQLite an index probe:

- a tag: EXISTS on subscriber_tags by (tag_key, subscriber_id), its index; tags or-ed together are one EXISTS with
  tag_key IN (…);
- fields: the largest sub-trees that name only fields become one EXISTS on subscribers (its row read once, whatever
  the number of conditions), each field read from the JSON under every name it was written with
  (`fields ->> 'Municipalité'` on PostgreSQL, SQLAlchemy's JSON index .as_string(); json_each on SQLite),
  coalesced to '' so that no condition is ever NULL (a NULL under not would drop the member SQL's way, not the
  reference's), and compared through lower() — on SQLite unicode_lower(), which store/engine.py gives each
  connection, since SQLite's own lower() folds ASCII only (see _Lower). The value's side is lower-cased in Python
  (the tree holds it so);
- the join date: memberships.joined_at, NULL matching no comparison.

A field key that no name was ever written under matches nobody (its negation everybody): folded to a constant
here, before any SQL.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class _Lower(sa.sql.expression.ColumnElement[str]):
    """lower() of a field's text, compared with values lower-cased in Python: PostgreSQL's lower() (by the
    database's LC_CTYPE: a UTF-8 locale folds every alphabet, C only ASCII); on SQLite unicode_lower() (Python's
    str.lower), or SQLite's own lower() when every value compared is ASCII: only an ASCII text can then be equal,
    and lower() folds it alike, for half the time (one Python call a row costs 0.8 s a million). The one character
    whose lower case is ASCII, the Kelvin sign, is then left as it is."""

    type = sa.String()
    inherit_cache = True

    def __init__(self, text: _FieldText, values: Sequence[str]):
        self.text, self.ascii = text, all(value.isascii() for value in values)

    def _gen_cache_key(self, anon_map: Any, bindparams: Any) -> Any:
        return (type(self), self.text._gen_cache_key(anon_map, bindparams), self.ascii)


@compiles(_Lower)
def _lower_default(element: _Lower, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.text, **kw)})"


@compiles(_Lower, "sqlite")
def _lower_sqlite(element: _Lower, compiler: Any, **kw: Any) -> str:
    function = "lower" if element.ascii else "unicode_lower"
    return f"{function}({compiler.process(element.text, **kw)})"


class _FieldText(sa.sql.expression.ColumnElement[str]):
    """A field's text under one of its names, '' when the subscriber has none: SQLAlchemy's JSON index on
    PostgreSQL (`fields ->> 'Municipalité'`). On SQLite the key is looked up by json_each: json_extract's path
    never finds a key written with escapes, which json.dumps makes of every accent (`"Municipalit\\u00e9"`, as
    SQLite 3.40 compares a path's label with the text as stored), nor spells a name holding a double quote; json_each
    reads keys decoded, for a sixth more time."""

    type = sa.String()
    inherit_cache = True

    def __init__(self, name: str):
        self.name = name

    def _gen_cache_key(self, anon_map: Any, bindparams: Any) -> Any:
        return (type(self), self.name)


@compiles(_FieldText)
def _field_text(element: _FieldText, compiler: Any, **kw: Any) -> str:
    text = subscribers.c.fields[element.name].as_string()
    return compiler.process(sa.func.coalesce(text, ""), **kw)


@compiles(_FieldText, "sqlite")
def _field_text_sqlite(element: _FieldText, compiler: Any, **kw: Any) -> str:
    fields = compiler.process(subscribers.c.fields, **kw)
    key = compiler.process(sa.literal(element.name), **kw)
    return f"coalesce((SELECT value FROM json_each({fields}) WHERE key = {key}), '')"


def segment_clause(segment: Segment, variants: Mapping[str, Sequence[str]]) -> sa.ColumnElement[bool]:
    """The segment as a condition on memberships (see the module's docstring); variants: each field key's names,
    as field_names holds them (Attributes.field_name_variants)."""
    found = _condition(segment, variants)
    if isinstance(found, bool):
        return sa.true() if found else sa.false()
    return found


def _fields_only(segment: Segment) -> bool:
    return all(not isinstance(node, Tag | Joined) for node in segment.walk())


def _condition(segment: Segment, variants: Mapping[str, Sequence[str]]) -> _Condition:
    if _fields_only(segment):
        inner = _on_subscriber(segment, variants)
        if isinstance(inner, bool):
            return inner
        return sa.exists().where(subscribers.c.id == memberships.c.subscriber_id, inner).correlate(memberships)
    if isinstance(segment, Tag):
        return _tagged([segment.key])
    if isinstance(segment, Joined):
        return _joined(segment)
    if isinstance(segment, Not):
        return _negated(_condition(segment.item, variants))
    if isinstance(segment, And | Or):
        # The field-only items together (one read of the subscriber), the tags of an `or` together (one probe).
        fields = [item for item in segment.items if _fields_only(item)]
        rest = [item for item in segment.items if not _fields_only(item)]
        parts: list[_Condition] = []
        if fields:
            parts.append(_condition(fields[0] if len(fields) == 1 else type(segment)(tuple(fields)), variants))
        if isinstance(segment, Or):
            tags = [item.key for item in rest if isinstance(item, Tag)]
            if tags:
                parts.append(_tagged(tags))
                rest = [item for item in rest if not isinstance(item, Tag)]
        parts.extend(_condition(item, variants) for item in rest)
        return _combined(isinstance(segment, And), parts)
    raise TypeError(f"not a segment: {segment!r}")


def _on_subscriber(segment: Segment, variants: Mapping[str, Sequence[str]]) -> _Condition:
    """A field-only segment as a condition on the subscribers row (never NULL)."""
    if isinstance(segment, Field):
        names = variants.get(segment.key, ())
        values = list(segment.values)
        folded = [_Lower(_FieldText(name), values) for name in names]
        return _combined(False, [text == values[0] if len(values) == 1 else text.in_(values) for text in folded])
    if isinstance(segment, Has):
        return _combined(False, [_FieldText(name) != "" for name in variants.get(segment.key, ())])
    if isinstance(segment, Not):
        return _negated(_on_subscriber(segment.item, variants))
    if isinstance(segment, And | Or):
        return _combined(isinstance(segment, And), [_on_subscriber(item, variants) for item in segment.items])
    raise TypeError(f"not a condition on fields: {segment!r}")


def _tagged(keys: Sequence[str]) -> sa.ColumnElement[bool]:
    key = subscriber_tags.c.tag_key == keys[0] if len(keys) == 1 else subscriber_tags.c.tag_key.in_(list(keys))
    return sa.exists().where(key, subscriber_tags.c.subscriber_id == memberships.c.subscriber_id).correlate(memberships)


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
        their tags: one query."""
        if limit <= 0:
            return []
        members = self.iter_segment(list_id, segment, page=limit, tags=True, connection=connection)
        return list(itertools.islice(members, limit))

    def iter_segment(
        self,
        list_id: int,
        segment: Segment,
        page: int = 2000,
        *,
        tags: bool = False,
        connection: Connection | None = None,
    ) -> Iterator[Member]:
        """The segment's subscribed members in subscriber order, a page at a time as iter_members reads them
        (memberships_by_list, each page after the last id of the one before): memory stays flat whatever the
        list's size. Without a connection each page reads on a connection of its own, as iter_members does."""
        with self._reading(connection) as reading:
            condition = self.segment_filter(segment, connection=reading)
        after = 0
        while True:
            query = (
                sa.select(
                    subscribers.c.id,
                    subscribers.c.email,
                    subscribers.c.name,
                    sa.cast(subscribers.c.fields, sa.Text).label("fields"),
                )
                .select_from(memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id))
                .where(
                    memberships.c.list_id == list_id,
                    memberships.c.status == MembershipStatus.SUBSCRIBED,
                    memberships.c.subscriber_id > after,
                    condition,
                )
                .order_by(memberships.c.subscriber_id)
                .limit(page)
            )
            with self._reading(connection) as reading:
                rows = reading.execute(query).all()
                tagged = tags_among(reading, [row.id for row in rows]) if tags else {}
            for row in rows:  # the fields as text: most members have none to parse
                fields = json.loads(row.fields) if row.fields and row.fields != "{}" else {}
                own = tuple(sorted(tagged.get(row.id, {}).values(), key=str.casefold))
                yield Member(row.id, row.email, row.name, fields, MembershipStatus.SUBSCRIBED, own)
            if len(rows) < page:
                return
            after = rows[-1].id
