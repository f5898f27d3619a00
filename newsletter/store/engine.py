"""The store's engine: opening the database, its transactions, SQLite's settings, and the helpers that hand the
driver many rows or many values at once (_Many, _Lookup, _Among), which the hot paths' statements are made of.

StoreBase holds the engine and is what every concern's class (lists.py, subscribers.py, …) builds on; its
`_reading` and `_writing` are the calling convention of newsletter.store, in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from newsletter.errors import NewsletterError

DEFAULT_DATABASE = "subscribers/newsletter.db"
_TIME = sa.DateTime(timezone=True)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@overload
def _aware(value: dt.datetime) -> dt.datetime: ...
@overload
def _aware(value: dt.datetime | None) -> dt.datetime | None: ...
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


def engine_name(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(invalid URL)"


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
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


def create_engine(url: str, *, durable: bool = False) -> Engine:
    """An engine for the URL, SQLite's settings on each of its connections (durable: synced at every commit)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise NewsletterError(f"cannot use the database {engine_name(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        if durable:
            sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=FULL"))
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


class StoreBase:
    """The engine and its transactions, under every part of Store."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._writing_lock: AbstractContextManager[object] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._durable_engine: Engine | None = None

    def close(self) -> None:
        self.engine.dispose()
        if self._durable_engine is not None:
            self._durable_engine.dispose()

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
        with self._writing_lock, engine.connect() as connection:
            connection.execution_options(newsletter_write=True)
            with connection.begin():
                yield connection

    def _durable(self) -> Engine:
        if self.engine.dialect.name != "sqlite":
            return self.engine
        if self._durable_engine is None:
            self._durable_engine = create_engine(self.engine.url.render_as_string(hide_password=False), durable=True)
        return self._durable_engine

    # The calling convention (newsletter.store's docstring): the caller's connection, else one of the method's own.

    @contextmanager
    def _reading(self, connection: Connection | None) -> Iterator[Connection]:
        if connection is not None:
            yield connection
            return
        with self.engine.connect() as reading:
            yield reading

    @contextmanager
    def _writing(self, connection: Connection | None, *, durable: bool = False) -> Iterator[Connection]:
        if connection is not None:
            yield connection
            return
        with self.transaction(durable=durable) as writing:
            yield writing


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

    def __init__(self, build: Callable[[str], sa.ClauseElement], names: Sequence[str], *, postgresql: str):
        self.build, self.names, self.postgresql = build, tuple(names), postgresql
        self.compiled: dict[str, tuple[str, list[int] | None, list[tuple[int, Callable[[Any], Any]]]]] = {}

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
            assert isinstance(compiled, SQLCompiler)  # a DML statement's: binds and their order
            types = [compiled.binds[name].type.dialect_impl(dialect) for name in self.names]
            processors = [type_.bind_processor(dialect) for type_ in types]
            positions = compiled.positiontup or []
            order = [self.names.index(name) for name in positions] if compiled.positional else None
            active: list[tuple[int, Callable[[Any], Any]]] = [(i, p) for i, p in enumerate(processors) if p is not None]
            self.compiled[dialect.name] = (compiled.string, order, active)
        sql, order, active = self.compiled[dialect.name]
        columns: list[Sequence] = list(zip(*rows, strict=True))
        for i, process in active:
            values, first = columns[i], columns[i][0]
            if all(value is first for value in values):  # the batch's instant: made ready once
                columns[i] = (process(first),) * len(values)
            else:
                columns[i] = list(map(process, values))
        ready: list
        if order is not None:
            ready = list(zip(*(columns[i] for i in order), strict=True))
        else:
            ready = [dict(zip(self.names, row, strict=True)) for row in zip(*columns, strict=True)]
        connection.exec_driver_sql(sql, ready)


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

    def __call__(self, connection: Connection, values: list, *before: object) -> Sequence[Any]:
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


def _insert_ignoring(dialect_name: str, table: sa.Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING, in the dialect's own words (SQLite and PostgreSQL both have it)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


class _Among(sa.sql.expression.ColumnElement):
    """`column IN (the values of a list parameter)`: an expanding IN on SQLite; on PostgreSQL the list goes as one
    JSON parameter, unpacked by json_array_elements_text, since thousands of bound values cost SQLAlchemy and
    psycopg more in rendering and parsing the statement than the database spends running it."""

    type = sa.types.NullType()  # not Boolean: SQLite would be given `(… IN …) = 1`, which no index serves
    inherit_cache = True

    def __init__(self, column: sa.ColumnElement, name: str):
        self.column, self.name = column, name

    def _gen_cache_key(self, anon_map: Any, bindparams: Any) -> Any:
        return (type(self), self.column._gen_cache_key(anon_map, bindparams), self.name)


@compiles(_Among)
def _among_expanding(element: _Among, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column.in_(sa.bindparam(element.name, expanding=True)), **kw)


@compiles(_Among, "postgresql")
def _among_json(element: _Among, compiler: Any, **kw: Any) -> str:
    # = ANY (ARRAY(…)): the array is computed once and the index probed for each value, whatever the planner
    # believes of a table that this very transaction is filling (an IN (subquery) may scan it for each batch).
    values: sa.ColumnElement = sa.func.json_array_elements_text(sa.bindparam(element.name, type_=sa.JSON))
    if not isinstance(element.column.type, sa.String):
        values = sa.cast(values, element.column.type)
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY (ARRAY({compiler.process(sa.select(values), asfrom=True, **kw)}))"
