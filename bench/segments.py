"""Segments of a list of a million: count_segment beside count_members (the whole list's count, the reference),
and the peak memory of streaming a segment, on SQLite and on a throwaway PostgreSQL.

    .venv/bin/python bench/segments.py [--members 1000000] [--engines sqlite,postgresql] [--explain]

1. A list of `members` built through the store's import path (subscribe_many, batches of 5,000), as people have
   them: 95 % subscribed; tags on 30 % (one to three, of twelve, a few much more common, with the spellings
   Mailchimp exports mix); a municipality on 80 % (some forty of the Bas-Saint-Laurent, a few much more common,
   one in ten written in capitals, one in ten under an older import's "MUNICIPALITÉ"), an organisation on 25 %, a
   first name on 90 %; join dates over ten years.
2. count_members, then count_segment for one tag, a quoted tag, a field's equality, an `in`, a `not`, a join date,
   a field's presence and an and/or combination: each the best of three runs (the first, with the caches cold for
   that query, shown beside it), its count and its ratio to count_members' best. --explain prints PostgreSQL's
   EXPLAIN ANALYZE of each count, and of the page query of iter_members and of iter_segment that read their
   50,000th member.
3. iter_segment over a segment of about a third of the list, and iter_members over the whole list, each in a
   process of its own that reports its peak resident memory (VmHWM) as it ends, beside one that only opens the
   store: the stream's memory stays flat, a page of 2,000 at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from newsletter.segments import parse  # noqa: E402
from newsletter.store import MembershipStatus, Store, Subscription, memberships  # noqa: E402

BATCH = 5_000
TOWNS = [  # by weight: a few towns hold most of a regional list
    ("Rimouski", 30),
    ("Matane", 12),
    ("Rivière-du-Loup", 12),
    ("Mont-Joli", 6),
    ("Amqui", 4),
    ("Trois-Pistoles", 3),
    ("Sainte-Flavie", 2),
    ("Métis-sur-Mer", 2),
    ("Saint-Anaclet-de-Lessard", 2),
    ("Pohénégamook", 2),
    *((f"Saint-{name}", 1) for name in ["Fabien", "Gabriel", "Donat", "Moïse", "Ulric", "Narcisse", "Valérien"]),
    *((f"Sainte-{name}", 1) for name in ["Luce", "Angèle", "Blandine", "Irène", "Jeanne-d'Arc", "Paule"]),
    *((name, 1) for name in ["Padoue", "Causapscal", "Sayabec", "Baie-des-Sables", "Grosses-Roches", "Les Méchins"]),
    *((name, 1) for name in ["Squatec", "Dégelis", "Cabano", "Témiscouata-sur-le-Lac", "Esprit-Saint", "Biencourt"]),
    *((name, 1) for name in ["La Trinité-des-Monts", "Lac-des-Aigles", "Saint-Cyprien", "Packington", "Rimouski-Est"]),
]
TAGS = [  # Mailchimp's tags, as its exports spell them
    ("rimouski", 10),
    ("MRC Rimouski-Neigette", 8),
    ("Bénévole", 6),
    ("Membre 2024", 6),
    ("matane", 4),
    ("MRC La Matanie", 4),
    ("Conseil d'administration", 1),
    ("Partenaire", 2),
    ("Forum 2023", 3),
    ("Forum 2024", 3),
    ("Élus", 1),
    ("Médias", 1),
]
ORGANISATIONS = [
    "CRD du Bas-Saint-Laurent",
    "Cégep de Rimouski",
    "UQAR",
    "Ville de Rimouski",
    "Centre d'action bénévole",
]
FIRST_NAMES = ["Marie", "Jean", "Zoé", "François", "Noémie", "Luc", "Chloé", "Élise", "Gaëtan", "Anne"]
SEGMENTS = [
    ("one tag", "tag:rimouski"),
    ("a quoted tag", 'tag:"MRC Rimouski-Neigette"'),
    ("a field's equality", 'municipalite = "Rimouski"'),
    ("an in", 'municipalité in ["Rimouski", "Matane", "Mont-Joli"]'),
    ("a not", 'not municipalite = "Rimouski"'),
    ("a not of a tag", "not tag:benevole"),
    ("a join date", "joined >= 2024-01-01"),
    ("presence of a field", "has organisme"),
    (
        "and/or",
        '(tag:rimouski or tag:"MRC Rimouski-Neigette") and not municipalite = "Rimouski" '
        "or has organisme and joined < 2020-01-01",
    ),
]
STREAMED = 'municipalite in ["Rimouski", "Matane"] or tag:benevole'

# Streams a list or a segment in a process of its own; prints members, seconds, peak resident memory (KB).
STREAM = """
import sys, time
sys.path.insert(0, sys.argv[1])
from newsletter.segments import parse
from newsletter.store import MembershipStatus, Store
store = Store.open(sys.argv[2], upgrade=False)
list_id, what = store.list_id("mil"), sys.argv[3]
started = time.perf_counter()
if what == "open":
    members = iter(())
elif what == "list":
    members = store.iter_members(list_id, MembershipStatus.SUBSCRIBED)
else:
    members = store.iter_segment(list_id, parse(what))
count = sum(1 for _ in members)
seconds = time.perf_counter() - started
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(count, seconds, line.split()[1])
"""


def weighted(pairs: list[tuple[str, int]]) -> tuple[list[str], list[int]]:
    return [name for name, _ in pairs], [weight for _, weight in pairs]


def people(count: int) -> Iterator[list[Subscription]]:
    """The list, the same every run, a batch at a time."""
    rng = random.Random(21)
    towns, town_weights = weighted(TOWNS)
    tags, tag_weights = weighted(TAGS)
    start = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    span = (dt.datetime(2025, 6, 1, tzinfo=dt.UTC) - start).total_seconds()
    rows: list[Subscription] = []
    for number in range(count):
        fields: dict[str, str] = {}
        if rng.random() < 0.9:
            fields["Prénom"] = rng.choice(FIRST_NAMES)
        if rng.random() < 0.8:
            town = rng.choices(towns, town_weights)[0]
            name = "MUNICIPALITÉ" if rng.random() < 0.1 else "Municipalité"
            fields[name] = town.upper() if rng.random() < 0.1 else town
        if rng.random() < 0.25:
            fields["Organisme"] = rng.choice(ORGANISATIONS)
        own = tuple(set(rng.choices(tags, tag_weights, k=rng.randint(1, 3)))) if rng.random() < 0.3 else ()
        status = MembershipStatus.SUBSCRIBED if rng.random() < 0.95 else MembershipStatus.UNSUBSCRIBED
        joined = start + dt.timedelta(seconds=rng.random() * span)
        address = f"membre{number}@domaine{number % 300}.example.org"
        rows.append(Subscription(address, None, fields, {}, status, own, joined))
        if len(rows) == BATCH:
            yield rows
            rows = []
    if rows:
        yield rows


def build(store: Store, members: int) -> int:
    list_id = store.ensure_list("mil", "Un million")
    started = time.perf_counter()
    for batch in people(members):
        store.subscribe_many(list_id, batch, "bench")
    print(f"built {members:,} members through subscribe_many in {time.perf_counter() - started:.0f} s")
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return list_id


def timed(run, repeat: int = 3) -> tuple[float, float, int]:
    """(first, best of `repeat`, result)."""
    times, result = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return times[0], min(times), result


def explain(store: Store, list_id: int, text: str) -> None:
    condition = store.segment_filter(parse(text))
    query = (
        sa.select(sa.func.count())
        .select_from(memberships)
        .where(memberships.c.list_id == list_id, memberships.c.status == MembershipStatus.SUBSCRIBED, condition)
    )
    compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as connection:
        for (line,) in connection.exec_driver_sql(f"EXPLAIN ANALYZE {compiled}"):
            print(f"    {line}")


def explain_last_page(store: Store, label: str, members: Iterator[object]) -> None:
    """EXPLAIN ANALYZE of the page query that read a stream's 50,000th member (or its last): a plan that walks a
    table from its start costs more with each page."""
    statements: list[tuple[str, Any]] = []

    def keep(_connection, _cursor, statement, parameters, _context, _many) -> None:
        statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    try:
        for count, _ in enumerate(members):
            if count == 50_000:
                break
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", keep)
    statement, parameters = next(item for item in reversed(statements) if "subscribers.email" in item[0])
    print(f"  the page query that read the 50,000th member of {label}:")
    with store.engine.connect() as connection:
        for (line,) in connection.exec_driver_sql(f"EXPLAIN ANALYZE {statement}", parameters):
            print(f"    {line}")


def stream(url: str, what: str) -> tuple[int, float, int]:
    done = subprocess.run(
        [sys.executable, "-c", STREAM, str(ROOT), url, what], capture_output=True, text=True, check=True
    )
    count, seconds, peak = done.stdout.split()
    return int(count), float(seconds), int(peak)


def measure(engine: str, url: str, members: int, show_plans: bool) -> None:
    print(f"\n== {engine}")
    store = Store.open(url, upgrade=True)
    try:
        list_id = build(store, members)
        first, best, whole = timed(lambda: store.count_members(list_id))
        print(f"count_members (the reference): {whole:,} in {best * 1000:.0f} ms (first {first * 1000:.0f} ms)")
        for label, text in SEGMENTS:
            segment = parse(text)
            first, mine, count = timed(lambda segment=segment: store.count_segment(list_id, segment))
            print(
                f"count_segment, {label}: {count:,} in {mine * 1000:.0f} ms (first {first * 1000:.0f} ms), "
                f"{mine / best:.1f} × count_members   [{segment}]"
            )
            if show_plans and engine == "PostgreSQL":
                explain(store, list_id, text)
        if show_plans and engine == "PostgreSQL":
            explain_last_page(store, "iter_members", store.iter_members(list_id, MembershipStatus.SUBSCRIBED))
            explain_last_page(store, "iter_segment", store.iter_segment(list_id, parse(STREAMED)))
    finally:
        store.close()
    _, _, opened = stream(url, "open")
    print(f"a process that opens the store: peak {opened / 1024:.0f} MB")
    count, seconds, peak = stream(url, "list")
    print(f"iter_members, the whole list: {count:,} in {seconds:.1f} s, peak {peak / 1024:.0f} MB")
    count, seconds, peak = stream(url, STREAMED)
    print(f"iter_segment [{parse(STREAMED)}]: {count:,} in {seconds:.1f} s, peak {peak / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--explain", action="store_true", help="print PostgreSQL's plan of each count")
    arguments = parser.parse_args()
    os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    engines = arguments.engines.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        if "sqlite" in engines:
            measure("SQLite", f"sqlite:///{Path(scratch) / 'segments.db'}", arguments.members, arguments.explain)
        if "postgresql" in engines:
            sys.path.insert(0, str(ROOT / "tests"))
            from postgres_server import PostgresServer

            try:
                server = PostgresServer().start()
            except FileNotFoundError as exc:
                print(f"PostgreSQL: skipped ({exc})")
                return
            try:
                measure("PostgreSQL", server.new_database(), arguments.members, arguments.explain)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
