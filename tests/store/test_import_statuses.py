"""An import's rows with the status their file gives, on SQLite and PostgreSQL: nobody who left is ever subscribed,
a subscribed member the file says left is marked so, new people who left are recorded and never mailed, tags and
fields merge by key, the join date is the file's, and the same batch again changes nothing."""

from __future__ import annotations

import datetime as dt

from newsletter.store import MembershipStatus, Store, Subscription

WHEN = dt.datetime(2023, 3, 14, 18, 5, 22, tzinfo=dt.UTC)


def _row(email: str, status: str = "subscribed", **options) -> Subscription:
    return Subscription(email, None, options.pop("fields", {}), {"file": "f.csv", "line": 2}, status=status, **options)


def test_statuses_tags_fields_and_the_join_date(database_url):
    store = Store.open(database_url)
    list_id = store.ensure_list("alliances", None)
    assert store.subscribe_many(list_id, [_row("left@example.org"), _row("stays@example.org")], "import") == [
        "added",
        "added",
    ]
    store.set_status(store.find_subscriber("left@example.org"), list_id, MembershipStatus.UNSUBSCRIBED, "page")

    batch = [
        _row("left@example.org"),  # the store says they left: refused
        _row("stays@example.org", "unsubscribed", status_at=WHEN),  # the file says they left: now unsubscribed
        _row("new-bounce@example.org", "bounced", status_at=WHEN),  # new, and bounced: held, never subscribed
        _row("never@example.org", "nonsubscribed"),
        _row(
            "tagged@example.org",
            fields={"Municipalité": "Rimouski"},
            tags=("MRC Rimouski-Neigette", "Est"),
            joined_at=WHEN,
        ),
    ]
    assert store.subscribe_many(list_id, batch, "import") == ["refused", "left", "held", "held", "added"]
    statuses = {m.email: m.status for m in store.members(list_id)}
    assert statuses == {
        "left@example.org": "unsubscribed",
        "stays@example.org": "unsubscribed",
        "new-bounce@example.org": "bounced",
        "never@example.org": "nonsubscribed",
        "tagged@example.org": "subscribed",
    }
    assert store.count_members(list_id) == 1
    history = store.history(store.find_subscriber("stays@example.org"))
    assert [(e["kind"], e["at"].replace(tzinfo=dt.UTC) if e["at"].tzinfo is None else e["at"]) for e in history][
        -1
    ] == ("unsubscribed", WHEN)

    tagged = next(m for m in store.iter_members(list_id, "subscribed", tags=True))
    assert tagged.tags == ("Est", "MRC Rimouski-Neigette") and tagged.joined_at == WHEN
    # The same batch again: nothing changes.
    assert store.subscribe_many(list_id, batch, "import") == [
        "refused",
        "unchanged",
        "unchanged",
        "unchanged",
        "unchanged",
    ]
    # A field written another way replaces the first spelling; a tag of another case is the same tag.
    again = _row("tagged@example.org", fields={"municipalite": "Matane"}, tags=("mrc  rimouski-neigette", "Ouest"))
    assert store.subscribe_many(list_id, [again], "import") == ["updated"]
    member = next(m for m in store.iter_members(list_id, "subscribed", tags=True))
    assert member.fields == {"municipalite": "Matane"}
    assert member.tags == ("Est", "MRC Rimouski-Neigette", "Ouest")
    assert store.field_name_variants({"municipalite"}) == {"municipalite": ["Municipalité", "municipalite"]}
    assert store.list_field_keys(list_id, {"municipalite", "organisme"}) == {"municipalite"}
    # A name with an accent, which the JSON holds escaped ("Pr\u00e9nom"), is found too.
    store.subscribe_many(list_id, [_row("autre@example.org", fields={"Prénom": "Ève"})], "import")
    assert store.list_field_keys(list_id, {"prenom", "organisme"}) == {"prenom"}
    store.close()


def test_a_forgotten_person_is_not_recorded_again_by_a_row_that_says_they_left(database_url):
    store = Store.open(database_url)
    list_id = store.ensure_list("alliances", None)
    store.subscribe_many(list_id, [_row("gone@example.org", tags=("x",))], "import")
    assert store.forget("gone@example.org")
    assert store.subscribe_many(list_id, [_row("gone@example.org", "unsubscribed")], "import") == ["refused"]
    assert store.find_subscriber("gone@example.org") is None
    store.close()
