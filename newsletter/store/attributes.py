"""A subscriber's tags, the index of their fields' values and the registry of field names: what segments filter on
besides the membership itself.

Tags are rows of subscriber_tags, matched by fields.tag_key (case, accents and spaces do not count) and kept as first
written. Fields live in the subscriber's JSON `fields` under the name they were written with (what messages and
exports read), and each value is also a row of subscriber_fields, by key and lower-cased value
(schema.field_index_rows), which is what a segment's `municipalite = "…"` finds: every writer of `fields` calls
index_fields or reindex_fields in the same transaction. field_names registers every (key, name) ever written, so that
`check` knows which fields no member ever had without a query per list.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.fields import distinct_tags, field_key, tag_key
from newsletter.store.engine import StoreBase, _Among, _insert_ignoring, _Many
from newsletter.store.schema import field_names, subscriber_fields, subscriber_tags

_TAGS_AMONG = sa.select(subscriber_tags.c.subscriber_id, subscriber_tags.c.tag_key, subscriber_tags.c.tag).where(
    _Among(subscriber_tags.c.subscriber_id, "k_ids")
)


def tags_among(connection: Connection, subscriber_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """Each of these subscribers' tags ({key: tag}), for those that have any."""
    found: dict[int, dict[str, str]] = {}
    if subscriber_ids:
        for subscriber_id, key, tag in connection.execute(_TAGS_AMONG, {"k_ids": list(subscriber_ids)}):
            found.setdefault(subscriber_id, {})[key] = tag
    return found


_ADD_TAGS = _Many(  # a batch's tags in one statement, without SQLAlchemy's per-row processing
    lambda dialect: _insert_ignoring(dialect, subscriber_tags).values(
        subscriber_id=sa.bindparam("t_subscriber"), tag_key=sa.bindparam("t_key"), tag=sa.bindparam("t_tag")
    ),
    ["t_subscriber", "t_key", "t_tag"],
    postgresql="INSERT INTO subscriber_tags (subscriber_id, tag_key, tag) "
    "SELECT t_subscriber, t_key, t_tag FROM json_to_recordset(%(rows)s::json) "
    "AS u(t_subscriber int, t_key text, t_tag text) ON CONFLICT DO NOTHING",
)


def add_tags(connection: Connection, tags: Iterable[tuple[int, str]]) -> None:
    """Give these (subscriber, tag) pairs; a tag a subscriber has already (by key) stays as it was."""
    rows = [(subscriber_id, tag_key(tag), tag) for subscriber_id, tag in tags]
    if rows:
        _ADD_TAGS(connection, rows)


_ADD_FIELDS = _Many(  # a batch's field values in one statement, as the tags
    lambda dialect: _insert_ignoring(dialect, subscriber_fields).values(
        subscriber_id=sa.bindparam("f_subscriber"), field_key=sa.bindparam("f_key"), value_key=sa.bindparam("f_value")
    ),
    ["f_subscriber", "f_key", "f_value"],
    postgresql="INSERT INTO subscriber_fields (subscriber_id, field_key, value_key) "
    "SELECT f_subscriber, f_key, f_value FROM json_to_recordset(%(rows)s::json) "
    "AS u(f_subscriber int, f_key text, f_value text) ON CONFLICT DO NOTHING",
)
_FORGET_FIELDS = subscriber_fields.delete().where(_Among(subscriber_fields.c.subscriber_id, "k_ids"))


def index_fields(connection: Connection, rows: Sequence[tuple[int, str, str]]) -> None:
    """Add these subscriber_fields rows (schema.field_index_rows) of subscribers that have none yet."""
    if rows:
        _ADD_FIELDS(connection, rows)


def reindex_fields(connection: Connection, subscriber_ids: Sequence[int], rows: Sequence[tuple[int, str, str]]) -> None:
    """These subscribers' fields were written anew: their rows of subscriber_fields become these."""
    if subscriber_ids:
        connection.execute(_FORGET_FIELDS, {"k_ids": list(subscriber_ids)})
    index_fields(connection, rows)


def register_field_names(connection: Connection, known: set[tuple[str, str]], documents: Iterable[Mapping]) -> None:
    """Register the field names these documents use (known: those registered already by this store object)."""
    names: set[str] = set().union(*documents)
    new = {(key, name) for name in names if (key := field_key(name))} - known
    if new:
        rows = [{"field_key": key, "name": name[:200]} for key, name in sorted(new)]
        connection.execute(_insert_ignoring(connection.dialect.name, field_names), rows)
        known.update(new)


def field_name_variants(connection: Connection, keys: Collection[str]) -> dict[str, list[str]]:
    """For each field key, the names it was ever written under."""
    found: dict[str, list[str]] = {}
    if keys:
        rows = connection.execute(
            sa.select(field_names.c.field_key, field_names.c.name)
            .where(field_names.c.field_key.in_(sorted(keys)))
            .order_by(field_names.c.field_key, field_names.c.name)
        )
        for key, name in rows:
            found.setdefault(key, []).append(name)
    return found


class Attributes(StoreBase):
    _known_field_names: set[tuple[str, str]]

    def _field_names_seen(self) -> set[tuple[str, str]]:
        if not hasattr(self, "_known_field_names"):
            self._known_field_names = set()
        return self._known_field_names

    def tag(self, subscriber_id: int, tags: Iterable[str], *, connection: Connection | None = None) -> list[str]:
        """Add tags to a subscriber; return those that are new to them."""
        with self._writing(connection) as writing:
            have = tags_among(writing, [subscriber_id]).get(subscriber_id, {})
            new = [t for t in distinct_tags(tags) if tag_key(t) not in have]
            add_tags(writing, [(subscriber_id, t) for t in new])
        return new

    def untag(self, subscriber_id: int, tags: Iterable[str], *, connection: Connection | None = None) -> list[str]:
        """Take tags off a subscriber; return those they had (as they were written)."""
        keys = {tag_key(t) for t in tags}
        with self._writing(connection) as writing:
            have = tags_among(writing, [subscriber_id]).get(subscriber_id, {})
            gone = [have[k] for k in keys if k in have]
            if gone:
                writing.execute(
                    subscriber_tags.delete().where(
                        subscriber_tags.c.subscriber_id == subscriber_id, subscriber_tags.c.tag_key.in_(list(keys))
                    )
                )
        return gone

    def tags_of(self, subscriber_id: int, *, connection: Connection | None = None) -> list[str]:
        with self._reading(connection) as reading:
            return sorted(tags_among(reading, [subscriber_id]).get(subscriber_id, {}).values(), key=str.casefold)

    def field_name_variants(
        self, keys: Collection[str], *, connection: Connection | None = None
    ) -> dict[str, list[str]]:
        """For each field key, the names it was ever written under."""
        with self._reading(connection) as reading:
            return field_name_variants(reading, keys)
