"""The store's side of sign-ups, on each engine: the limit on confirmations an address receives, and the
confirmations that never went, claimed by one server at a time."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from test_signup import events_of

from newsletter.store import events


def test_one_confirmation_per_window_and_another_once_it_has_passed(database_url):
    from newsletter.store import SignupRequest, Store, events

    store = Store.open(database_url)
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", connection=connection)
    request = SignupRequest(list_id, "Fenetre@Example.org", None, {"consent": "oui"})
    window = dt.timedelta(minutes=10)

    def ask(every=window):
        with store.transaction() as connection:
            return store.request_signups([request, request], every=every, connection=connection)

    first = ask()
    assert first[0] is not None and first[1] is None  # twice in one group: one email
    assert ask() == [None, None]  # again within ten minutes: nothing
    with store.transaction() as connection:  # the request as if made eleven minutes ago
        connection.execute(events.update().values(at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=11)))
    again = ask()
    assert again[0].subscriber_id == first[0].subscriber_id and again[1] is None  # the window has passed: one more
    assert again[0].request_id > first[0].request_id  # its own request, which its link confirms
    assert [a and a.subscriber_id for a in ask(every=dt.timedelta(0))] == [first[0].subscriber_id, None]
    store.close()


def test_unsent_confirmations_are_claimed_once_handed_back_and_never_sent_twice(database_url):
    """What a server finds to send again: each unsent request once, claimed so that no other server sends it too,
    handed back when it could not go, never once sent, refused for good, or its person subscribed since."""
    import concurrent.futures
    import threading

    from newsletter.store import SignupRequest, Store

    store = Store.open(database_url)
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", connection=connection)
    people = ["envoyee", "perdue", "refusee", "confirmee", "revenue"]

    def ask(*names: str) -> dict[str, int]:
        requests = [SignupRequest(list_id, f"{n}@example.org", None, {"name": n.title()}) for n in names]
        with store.transaction() as connection:
            asked = store.request_signups(requests, every=dt.timedelta(0), connection=connection)
        return {name: a.subscriber_id for name, a in zip(names, asked, strict=True)}

    ids = ask(*people)
    with store.transaction() as connection:
        store.confirmations_done(
            [(ids["envoyee"], list_id, None), (ids["refusee"], list_id, "550 non"), (ids["revenue"], list_id, None)],
            connection=connection,
        )
        store.confirm_signup(ids["confirmee"], list_id, {}, request_id=None, connection=connection)
    ask("revenue")  # asked again after their confirmation went: this request's has not

    def unsent(skip=()) -> tuple[dt.datetime, list[str]]:
        at = dt.datetime.now(dt.UTC)
        claimed_at, found = store.unsent_confirmations(at - dt.timedelta(days=1), at, skip)
        return claimed_at, sorted(u.email.split("@")[0] for u in found)

    claimed_at, first = unsent()
    assert first == ["perdue", "revenue"]  # not the one sent, refused or confirmed
    assert unsent()[1] == []  # claimed
    store.finish_claims(claimed_at, [ids["perdue"], ids["revenue"]], [(ids["revenue"], list_id, "550 non")])
    assert unsent(skip={(ids["perdue"], list_id)})[1] == []  # the caller is sending it itself
    claimed_at, again = unsent()
    assert again == ["perdue"]  # could not go: found again; the refused one is not tried again
    assert unsent()[1] == []
    with store.transaction() as connection:  # asked 20 minutes ago, claimed 11 minutes ago by a server since killed
        for kind, minutes in (("signup-requested", 20), ("confirmation-claimed", 11)):
            connection.execute(
                events.update()
                .where(events.c.kind == kind, events.c.subscriber_id == ids["perdue"])
                .values(at=claimed_at - dt.timedelta(minutes=minutes))
            )
    claimed_at, lapsed = unsent()
    assert lapsed == ["perdue"]  # the claim has lapsed
    assert unsent()[1] == []  # claimed again, by that look
    store.finish_claims(claimed_at, [ids["perdue"]], [(ids["perdue"], list_id, None)])
    assert unsent()[1] == []  # sent at last
    # the lapsed claim stays, the record of a try that never ended; the settled one went
    assert events_of(store, "perdue@example.org")[1:] == ["confirmation-claimed", "confirmation-sent"]
    _, found = store.unsent_confirmations(claimed_at - dt.timedelta(days=2), claimed_at - dt.timedelta(days=1))
    assert found == []  # older than the window: left

    many = ask(*(f"n{i:02d}" for i in range(40)))
    stores = [Store.open(database_url) for _ in range(2)]
    start = threading.Barrier(2)

    def claim(other: Store) -> set[int]:
        start.wait()
        at = dt.datetime.now(dt.UTC)
        return {u.subscriber_id for u in other.unsent_confirmations(at - dt.timedelta(days=1), at)[1]}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        one, two = pool.map(claim, stores)
    assert not one & two and one | two == set(many.values())  # two servers at once: each sign-up claimed once
    for other in (store, *stores):
        other.close()


def test_two_confirmations_of_one_link_at_once_both_say_done_and_subscribe_once(database_url):
    """Two servers confirm one link at the same instant: the second waits for the first (PostgreSQL: the
    membership's row lock; SQLite: one writer at a time) and reads its confirmation whole, so both answer done,
    one subscription is recorded and the link still says done afterwards. Without the lock, the second read the
    status from before the first and its event from after, and answered that the link was void."""
    import threading

    from newsletter.store import MembershipStatus, SignupRequest, Store

    store = Store.open(database_url)
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", connection=connection)
        (asked,) = store.request_signups(
            [SignupRequest(list_id, "ensemble@example.org", None, {})], every=dt.timedelta(0), connection=connection
        )
    person, request_id = asked.subscriber_id, asked.request_id

    def confirm(connection=None):
        return store.confirm_signup(person, list_id, {"at": "once"}, request_id=request_id, connection=connection)

    second: list = []
    other = threading.Thread(target=lambda: second.append(confirm()))
    with store.transaction() as connection:
        assert confirm(connection) is not None  # the first, not committed yet
        if store.engine.dialect.name == "postgresql":
            other.start()
            waiting = sa.text("select count(*) from pg_stat_activity where wait_event_type = 'Lock'")
            with store.engine.connect() as watching:  # the second is waiting for the first's lock: the event
                while not watching.execute(waiting).scalar() and other.is_alive():
                    watching.rollback()
    if not other.is_alive() and not second:
        other.start()  # SQLite: the second once the first committed, as its one writer would have it
    other.join()
    assert second[0] is not None and second[0].email == "ensemble@example.org"
    assert confirm() is not None  # the link again, later: done, not void
    with store.engine.connect() as reading:
        kinds = reading.execute(
            sa.select(events.c.kind).where(events.c.subscriber_id == person, events.c.list_id == list_id)
        ).scalars()
        assert [k for k in kinds if k == MembershipStatus.SUBSCRIBED] == [MembershipStatus.SUBSCRIBED]
    store.close()
