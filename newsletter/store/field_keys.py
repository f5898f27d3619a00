"""Which fields a list's members have, by key (fields.field_key): what `check` asks of an issue's {{ prenom }}.

Read from the subscribed members' JSON fields: first the fields of the list's first SAMPLE members, which answer
at once when they hold every key asked about; else the distinct field names of the whole list, found by the
database (SQLite's json_each, PostgreSQL's json_object_keys), so that only those few names reach Python. A
registry of the field names written (a table kept on every write) would answer in one small query: this is the
function to point at it.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from newsletter.fields import field_key
from newsletter.store.engine import StoreBase
from newsletter.store.schema import memberships, subscribers
from newsletter.store.statuses import MembershipStatus

SAMPLE = 1000  # members read first, by subscriber: a list's fields are most often everyone's

_DISTINCT_NAMES = {
    "sqlite": sa.text(
        "SELECT DISTINCT field.key FROM memberships AS m JOIN subscribers AS s ON s.id = m.subscriber_id, "
        "json_each(CASE WHEN json_type(s.fields) = 'object' THEN s.fields ELSE '{}' END) AS field "
        "WHERE m.list_id = :list_id AND m.status = :status"
    ),
    "postgresql": sa.text(
        "SELECT DISTINCT field.key FROM memberships AS m JOIN subscribers AS s ON s.id = m.subscriber_id "
        "CROSS JOIN LATERAL json_object_keys(CASE WHEN json_typeof(s.fields::json) = 'object' "
        "THEN s.fields::json ELSE '{}'::json END) AS field(key) "
        "WHERE m.list_id = :list_id AND m.status = :status"
    ),
}


def list_field_keys(store: StoreBase, list_id: int, *, enough: Callable[[set[str]], bool] | None = None) -> set[str]:
    """The keys of the fields some subscribed member of the list has. With `enough` (say, every key wanted is
    there), the keys of the first SAMPLE members are the answer when they are enough."""
    status = MembershipStatus.SUBSCRIBED.value
    with store.engine.connect() as connection:
        if enough is not None:
            first = connection.execute(
                sa.select(subscribers.c.fields)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .where(memberships.c.list_id == list_id, memberships.c.status == status)
                .order_by(memberships.c.subscriber_id)
                .limit(SAMPLE)
            ).scalars()
            keys = {field_key(name) for fields in first if isinstance(fields, dict) for name in fields}
            if enough(keys):
                return keys
        names = connection.execute(
            _DISTINCT_NAMES[connection.dialect.name], {"list_id": list_id, "status": status}
        ).scalars()
        return {field_key(name) for name in names}
