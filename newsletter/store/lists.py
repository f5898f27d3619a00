"""Lists: found by their slug or by the name an earlier version gave them (list_aliases), and created only under
a slug, which goes into every unsubscribe link and List-Id header. A list's `name` is what subscribers see."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.errors import NewsletterError
from newsletter.slugs import LIST_SLUG, slugify
from newsletter.store.engine import StoreBase, now
from newsletter.store.schema import list_aliases, lists


@dataclass(frozen=True)
class ListRow:
    id: int
    slug: str
    name: str  # shown to subscribers; the slug when none was given

    def title(self, default: str) -> str:
        """The name to show subscribers: the list's own, else default (the newsletter's name)."""
        return default if self.name == self.slug else self.name


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


class Lists(StoreBase):
    def ensure_list(self, slug: str, name: str | None = None, *, connection: Connection | None = None) -> int:
        """The list's id, creating it if needed (the only place lists are created: only under a slug).

        A name given for an existing list becomes its display name.
        """
        with self._writing(connection) as writing:
            found = writing.execute(sa.select(lists.c.id, lists.c.name).where(_list_named(slug))).first()
            if found is not None:
                if name and name != found.name:
                    writing.execute(lists.update().where(lists.c.id == found.id).values(name=name))
                return found.id
            if not LIST_SLUG.fullmatch(slug):
                raise ListNameError(slug)
            return writing.execute(
                lists.insert().values(slug=slug, name=name or slug, created_at=now()).returning(lists.c.id)
            ).scalar_one()

    def lookup_list(self, name: str, *, connection: Connection | None = None) -> ListRow | None:
        """The list with this slug (or former name), or None."""
        with self._reading(connection) as reading:
            row = reading.execute(sa.select(lists.c.id, lists.c.slug, lists.c.name).where(_list_named(name))).first()
        return ListRow(row.id, row.slug, row.name) if row else None

    def find_list(self, name: str, *, connection: Connection | None = None) -> ListRow:
        """The list with this slug (or former name); NewsletterError naming the lists there are."""
        found = self.lookup_list(name, connection=connection)
        if found is None:
            slugs = self.list_slugs(connection=connection)
            raise NewsletterError(f"no list '{name}'; lists: {', '.join(slugs) or 'none yet'}")
        return found

    def list_id(self, slug: str, *, connection: Connection | None = None) -> int:
        return self.find_list(slug, connection=connection).id

    def list_slugs(self, *, connection: Connection | None = None) -> list[str]:
        with self._reading(connection) as reading:
            return list(reading.execute(sa.select(lists.c.slug).order_by(lists.c.slug)).scalars())
