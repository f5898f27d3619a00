"""Segments: the language (every form, precedence, the canonical text, each error at its column), the named segments
of newsletter.toml, and the store's SQL held to the brute-force reference (Segment.matches) on random members and
random segments, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace as dc_replace
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conftest import CONFIG
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.config import load_config
from newsletter.errors import ConfigError, NewsletterError
from newsletter.fields import merge_fields
from newsletter.segments import And, Field, Has, Joined, Not, Or, Segment, SegmentError, Tag, parse, resolve
from newsletter.store import (
    MembershipStatus,
    Store,
    Subscription,
    events,
    memberships,
    subscriber_fields,
    subscriber_tags,
    subscribers,
)

UTC = dt.UTC


def day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# The language


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("tag:rimouski", Tag("rimouski")),
        ("TAG:Rimouski", Tag("rimouski")),
        ('tag:"MRC  Rimouski-Neigette"', Tag("mrc rimouski-neigette")),
        ("tag:'Bénévoles 2024'", Tag("benevoles 2024")),
        ("tag:not", Tag("not")),
        ('municipalite = "Rimouski"', Field("municipalite", ("rimouski",))),
        ("Municipalité = Rimouski", Field("municipalite", ("rimouski",))),
        ('MUNICIPALITE == "RIMOUSKI"', Field("municipalite", ("rimouski",))),
        ('municipalite != "Rimouski"', Not(Field("municipalite", ("rimouski",)))),
        ('municipalité in ["Rimouski", "Matane"]', Field("municipalite", ("matane", "rimouski"))),
        ('municipalite in ["Matane", "matane",]', Field("municipalite", ("matane",))),
        ('municipalite not in ["Rimouski", "Matane"]', Not(Field("municipalite", ("matane", "rimouski")))),
        ('"First Name" = "Zoé"', Field("first_name", ("zoé",))),
        ('"joined" = oui', Field("joined", ("oui",))),
        ("has organisme", Has("organisme")),
        ("not has Organisme", Not(Has("organisme"))),
        ("joined >= 2024-01-01", Joined(">=", day("2024-01-01"))),
        ("joined > 2024-01-01", Joined(">=", day("2024-01-02"))),
        ("joined < 2024-01-01", Joined("<", day("2024-01-01"))),
        ("joined <= 2024-01-01", Joined("<", day("2024-01-02"))),
        ('joined >= "2024-01-01"', Joined(">=", day("2024-01-01"))),
        ("joined > 2024-03-01T09:30:00-05:00", Joined(">", day("2024-03-01T14:30:00"))),
        ("joined <= 2024-03-01T09:30Z", Joined("<=", day("2024-03-01T09:30:00"))),
        ("joined < 2024-03-01T09:30:00", Joined("<", day("2024-03-01T09:30:00"))),
        ("tag:a and tag:b", And((Tag("a"), Tag("b")))),
        ("tag:a et tag:b ou tag:c", Or((And((Tag("a"), Tag("b"))), Tag("c")))),
        ("non tag:a", Not(Tag("a"))),
    ],
)
def test_every_form(text, tree):
    assert parse(text) == tree
    assert parse(str(tree)) == tree


def test_not_binds_tighter_than_and_and_and_than_or():
    a, b, c, d = (Tag(x) for x in "abcd")
    assert parse("tag:a or tag:b and tag:c") == Or((a, And((b, c))))
    assert parse("tag:a and tag:b or tag:c and tag:d") == Or((And((a, b)), And((c, d))))
    assert parse("not tag:a and tag:b") == And((Not(a), b))
    assert parse("not tag:a or tag:b") == Or((Not(a), b))
    assert parse("not (tag:a or tag:b)") == Not(Or((a, b)))
    assert parse("(tag:a or tag:b) and tag:c") == And((Or((a, b)), c))
    assert parse("tag:a and (tag:b and tag:c)") == parse("(tag:a and tag:b) and tag:c") == And((a, b, c))
    assert parse("not not tag:a") == Not(Not(a))
    assert str(parse("(tag:a or tag:b) and not (tag:c and tag:d)")) == "(tag:a or tag:b) and not (tag:c and tag:d)"
    assert str(parse("((tag:a)) or (tag:b and tag:c)")) == "tag:a or tag:b and tag:c"


def test_the_canonical_text():
    assert str(parse('Municipalité IN ["Rimouski","MATANE" , "rimouski"] ET Tag:"MRC  Rimouski-Neigette"')) == (
        'municipalite in ["matane", "rimouski"] and tag:"mrc rimouski-neigette"'
    )
    assert str(parse("municipalite != Lévis")) == 'municipalite != "lévis"'  # accents are kept in values
    assert str(parse("joined > 2024-01-01")) == "joined >= 2024-01-02T00:00:00Z"
    assert str(parse('note = "a \\"b\\" \\\\ c"')) == 'note = "a \\"b\\" \\\\ c"'
    assert str(parse('"in" in [x, y]')) == '"in" in ["x", "y"]'
    assert str(parse('tag:"l\'est"')) == 'tag:"l\'est"'


def test_a_date_is_that_day_in_the_zone_given_else_utc():
    toronto = ZoneInfo("America/Toronto")
    assert parse("joined >= 2024-01-01", zone=toronto) == Joined(">=", day("2024-01-01T05:00:00"))
    assert parse("joined <= 2024-07-01", zone=toronto) == Joined("<", day("2024-07-02T04:00:00"))
    assert parse("joined < 2024-07-01T12:00:00", zone=toronto) == Joined("<", day("2024-07-01T16:00:00"))
    assert parse("joined < 2024-07-01T12:00:00+00:00", zone=toronto) == Joined("<", day("2024-07-01T12:00:00"))
    # The canonical text is an instant: it means the same whatever zone reads it again.
    text = str(parse("joined >= 2024-01-01", zone=toronto))
    assert parse(text) == parse(text, zone=ZoneInfo("Asia/Tokyo")) == Joined(">=", day("2024-01-01T05:00:00"))


def test_what_a_segment_names():
    segment = parse(
        '(tag:Rimouski or Municipalité = x) and not has "Organisme" and tag:"MRC Matane" or joined < 2024-01-01'
    )
    assert segment.field_keys() == {"municipalite", "organisme"}
    assert segment.tag_keys() == {"rimouski", "mrc matane"}
    assert parse("joined < 2024-01-01").field_keys() == frozenset()


def test_the_reference_matches_by_key_value_case_and_join_date():
    fields = {"Municipalité": "LÉVIS", "Organisme": "", "First Name": "Zoé"}
    tags = ["MRC  Rimouski-Neigette", "Bénévole"]
    joined = day("2024-03-01T12:00:00")

    def matches(text: str) -> bool:
        return parse(text).matches(fields, tags, joined)

    assert matches('municipalite = "lévis"') and matches("MUNICIPALITE in [Matane, Lévis]")
    assert not matches('municipalite = "levis"')  # accents count in values
    assert matches('tag:"mrc rimouski-neigette"') and matches("tag:benevole") and not matches("tag:matane")
    assert matches("has first_name") and not matches("has organisme") and not matches("has nope")
    assert matches("municipalite != Matane") and matches("nope != x") and not matches("nope = x")
    assert matches("joined >= 2024-03-01") and matches("joined <= 2024-03-01") and not matches("joined > 2024-03-01")
    assert not parse("joined >= 2000-01-01").matches(fields, tags, None)
    assert parse("not joined >= 2000-01-01").matches(fields, tags, None)  # unknown: matches no comparison
    assert parse("joined >= 2024-03-01").matches({}, (), dt.datetime(2024, 3, 1, 12))  # naive: UTC, as stored


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ('tag:"est', 5, 'a quoted tag is not closed; end it with "'),
        ("", 1, "the segment is empty"),
        ("tag:", 5, "a tag is missing after tag:"),
        ('tag:"—"', 5, "the tag '—' has no letter or digit"),
        ("tag = x", 1, 'a field named tag is quoted: "tag"'),
        ("tags:x", 5, "only tag takes a colon"),
        ("tag:a and", 10, "the segment ends after 'and'; add a condition"),
        ("tag:a tag:b", 7, "two conditions need and or or between them"),
        ("tag:a && tag:b", 7, "write and"),
        ("tag:a || tag:b", 7, "write or"),
        ("!tag:a", 1, "write not"),
        ("and tag:a", 1, "a condition is missing before 'and'"),
        ("tag:a)", 6, "a ) with no ( before it"),
        ("(tag:a or (tag:b)", 1, "this parenthesis is not closed; add )"),
        ("(tag:a tag:b)", 8, "two conditions need and or or"),
        ("municipalite", 13, "expected =, !=, in or not in after the field 'municipalite'"),
        ("municipalite >= 3", 14, "only joined takes >="),
        ('municipalite = "Rim', 16, "a quoted value is not closed"),
        ('"Municipalité = x', 1, "a quoted field name is not closed"),
        ("municipalite =", 15, "a value is missing after ="),
        ("municipalite = and", 16, "a value is missing after ="),
        ('municipalite = ""', 16, "for the members without a municipalite, write not has municipalite"),
        ('municipalite != ""', 17, "for the members who have a municipalite, write has municipalite"),
        ('municipalite in "a"', 17, 'in takes a list in brackets: in ["Rimouski", "Matane"]'),
        ('municipalite in ["a"', 17, "this list is not closed; add ]"),
        ('municipalite in ["a" "b"]', 22, "values in a list are separated by commas"),
        ("municipalite in []", 18, "the list is empty"),
        ('in ["a"]', 1, "a field name is missing before in"),
        ("has", 4, "a field name is missing after has"),
        ("has and", 5, 'and is a keyword; a field of that name is quoted: "and"'),
        ('"—" = x', 1, "the field name '—' has no letter or digit"),
        ("joined = 2024-01-01", 8, "for one day: joined >= 2024-01-01 and joined < 2024-01-02"),
        ("joined 2024-01-01", 8, "joined is compared with a date"),
        ("joined >= hier", 11, "joined takes a date (2024-01-01) or an ISO time"),
        ("joined >= 2024-02-30", 11, "'2024-02-30' is not a date"),
        ("tag:a\nor", 9, "the segment ends after 'or'"),
    ],
)
def test_every_error_is_one_line_at_its_column(text, column, message):
    with pytest.raises(SegmentError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, NewsletterError)
    assert error.column == column
    shown = text.replace("\n", " ")
    assert str(error).startswith(f"segment '{shown}': column {column}: "), str(error)
    assert message in str(error)
    assert "\n" not in str(error)


# Trees, for the canonical round trip and the property test: every form, nested.

FIELD_KEYS = ["municipalite", "organisme", "first_name", "code_postal", "absent", "joined", "tag"]
# Few values, in the spellings people mix (case, accents), so that random members and segments often meet.
VALUES = ["Rimouski", "RIMOUSKI", "Lévis", "LÉVIS", "lévis", "Levis", "ŒUVRE", "œuvre", 'a "b" \\']
TAGS = ["Rimouski", "rimouski ", "MRC  Rimouski-Neigette", "mrc rimouski-neigette", "Bénévole", "benevole", "Matane"]
INSTANTS = [day(f"2024-01-0{n}T{h:02}:00:00") for n in range(1, 5) for h in (0, 5, 23)]
OPS = [">=", ">", "<", "<="]
# Values written at random, with the letters whose lower case only Python's str.lower gives (İ, the Kelvin sign):
# the store lower-cases in Python too (the index of field values), never through an engine's lower().
SOME_TEXT = st.text(st.sampled_from("aAbBéÉèÈçÇœŒôÔİ\u212a -'\""), min_size=1, max_size=6)

atoms = st.one_of(
    st.builds(Tag, st.sampled_from(TAGS)),
    st.builds(
        Field,
        st.sampled_from(FIELD_KEYS),
        st.lists(st.sampled_from(VALUES) | SOME_TEXT, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Has, st.sampled_from(FIELD_KEYS)),
    st.builds(Joined, st.sampled_from(OPS), st.sampled_from(INSTANTS)),
)
segments: st.SearchStrategy[Segment] = st.recursive(
    atoms,
    lambda children: st.one_of(
        st.builds(Not, children),
        st.lists(children, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(segments)
def test_the_canonical_text_reads_back_as_the_same_segment(segment):
    text = str(segment)
    assert parse(text) == segment
    assert str(parse(text)) == text


# Named segments


def write_config(tmp_path, segments_table: str):
    (tmp_path / "newsletter.toml").write_text(CONFIG + segments_table, encoding="utf-8")
    return load_config(tmp_path)


def test_named_segments_and_inline_ones(tmp_path):
    config = write_config(tmp_path, "")
    with pytest.raises(SegmentError, match="no segment named 'est'.*defines none for it"):
        resolve(config, "alliances", "est")
    config = write_config(
        tmp_path,
        '[lists.alliances.segments]\nest = "tag:rimouski or tag:matane"\nnouveaux = "joined >= 2024-01-01"\n',
    )
    assert resolve(config, "alliances", "est") == ("est", Or((Tag("rimouski"), Tag("matane"))))
    assert resolve(config, "alliances", " est ")[0] == "est"
    assert resolve(config, "alliances", "tag:rimouski") == (None, Tag("rimouski"))
    with pytest.raises(SegmentError) as caught:
        resolve(config, "alliances", "ouest")
    assert "the list alliances has no segment named 'ouest' (its segments are est, nouveaux" in str(caught.value)
    assert "tag:ouest" in str(caught.value)
    with pytest.raises(SegmentError, match="has no segment named 'est'"):
        resolve(config, "autre", "est")  # a name is the list's own
    with pytest.raises(SegmentError, match="column 5"):
        resolve(config, "alliances", 'tag:"est')


def test_a_named_segments_date_is_in_newsletter_tomls_zone(tmp_path):
    toml = CONFIG.replace('lang = "fr"\n', 'lang = "fr"\ntimezone = "America/Toronto"\n')
    (tmp_path / "newsletter.toml").write_text(
        toml + '[lists.alliances.segments]\nnouveaux = "joined >= 2024-01-01"\n', encoding="utf-8"
    )
    config = load_config(tmp_path)
    assert resolve(config, "alliances", "nouveaux")[1] == Joined(">=", day("2024-01-01T05:00:00"))
    assert resolve(config, "alliances", "joined < 2024-07-01")[1] == Joined("<", day("2024-07-01T04:00:00"))


def test_a_bad_named_segment_is_refused_as_newsletter_toml_loads(tmp_path):
    table = '[lists.alliances.segments]\nest = "tag:rimouski"\nouest = \'tag:"est\'\n'
    with pytest.raises(ConfigError) as caught:
        write_config(tmp_path, table)
    line = CONFIG.count("\n") + 3
    assert str(caught.value) == (
        f"{tmp_path / 'newsletter.toml'}:{line}: lists.alliances.segments.ouest: Value error, "
        "segment 'tag:\"est': column 5: a quoted tag is not closed; end it with \""
    )
    with pytest.raises(ConfigError, match="lists.alliances.segments: Value error, 'le nord' cannot name a segment"):
        write_config(tmp_path, '[lists.alliances.segments]\n"le nord" = "tag:nord"\n')


# The store, held to the reference

NAMES = {  # each field key under the names people wrote it with
    "municipalite": ["Municipalité", "municipalite", "MUNICIPALITÉ", "Municipalite"],
    "organisme": ["Organisme", "ORGANISME"],
    "first_name": ["First Name", "first_name"],
    "code_postal": ['Code "postal"', "Code\\postal", "code_postal"],
    "joined": ["Joined"],
    "tag": ["Tag"],
}
STATUSES = [
    MembershipStatus.SUBSCRIBED,
    MembershipStatus.SUBSCRIBED,
    MembershipStatus.SUBSCRIBED,
    MembershipStatus.UNSUBSCRIBED,
    MembershipStatus.BOUNCED,
    MembershipStatus.NONSUBSCRIBED,
]


@st.composite
def member_fields(draw) -> dict[str, str]:
    fields = {}
    for names in NAMES.values():
        if draw(st.booleans()):
            fields[draw(st.sampled_from(names))] = draw(st.sampled_from([*VALUES, ""]) | SOME_TEXT)
    return fields


people = st.lists(
    st.tuples(
        member_fields(),
        st.lists(st.sampled_from(TAGS), max_size=3),
        st.sampled_from(INSTANTS),
        st.sampled_from(STATUSES),
        st.integers(0, 5),  # 0: the join date unknown (a membership from before migration 8 had none)
        st.none() | member_fields(),  # the fields of a second import of the same row, merged into the first's
    ),
    max_size=10,
)
counter = itertools.count()


def empty(store: Store) -> None:
    """Every member gone, the list and the registry of field names kept (as a store that saw others before)."""
    with store.transaction() as connection:
        for table in (subscriber_tags, subscriber_fields, events, memberships, subscribers):
            connection.execute(table.delete())


@pytest.fixture
def store(database_url):
    store = Store.open(database_url, upgrade=True)
    store.ensure_list("alliances", "Alliances")
    store.ensure_list("autre", "Autre")
    yield store
    store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=people, drawn=st.lists(segments, min_size=1, max_size=4))
@example(  # case beyond ASCII, a member without the field under not, one key under two names, a field written again
    people=[
        (
            {"MUNICIPALITÉ": "LÉVIS", 'Code "postal"': "G5L"},
            ["Bénévole"],
            INSTANTS[0],
            MembershipStatus.SUBSCRIBED,
            0,
            {"municipalite": "Rimouski"},
        ),
        ({"municipalite": "Lévis", "Code\\postal": ""}, [], INSTANTS[5], MembershipStatus.SUBSCRIBED, 1, None),
        ({"Municipalité": "Matane", "municipalite": "İle"}, [], INSTANTS[1], MembershipStatus.SUBSCRIBED, 2, None),
    ],
    drawn=[
        parse("municipalite = lévis"),
        parse("not (joined >= 2024-01-02 or municipalite = ŒUVRE)"),
        parse("code_postal = g5l or not has code_postal"),
        parse("municipalite in [matane, rimouski] and municipalite != İLE"),
    ],
)
def test_the_store_finds_exactly_the_members_the_reference_does(store, people, drawn):
    empty(store)
    list_id, other = store.list_id("alliances"), store.list_id("autre")
    first = [
        Subscription(f"m{next(counter)}@example.org", None, fields, {}, status=status, tags=tuple(tags), joined_at=at)
        for fields, tags, at, status, _, _ in people
    ]
    store.subscribe_many(list_id, first, "test")
    store.subscribe_many(other, [row for row in first if row.status == MembershipStatus.SUBSCRIBED][:2], "test")
    again = [(row, person[5]) for row, person in zip(first, people, strict=True) if person[5] is not None]
    store.subscribe_many(list_id, [dc_replace(row, fields=fields) for row, fields in again], "test")
    merged = {row.email: merge_fields(row.fields, fields) for row, fields in again}
    rows = [dc_replace(row, fields=merged.get(row.email, row.fields)) for row in first]
    ids = {member.email: member.subscriber_id for member in store.iter_members(list_id)}
    unknown = [ids[row.email] for row, person in zip(rows, people, strict=True) if person[4] == 0]
    with store.transaction() as connection:
        connection.execute(memberships.update().where(memberships.c.subscriber_id.in_(unknown)).values(joined_at=None))
    for segment in drawn:
        expected = sorted(
            ids[row.email]
            for row, person in zip(rows, people, strict=True)
            if row.status == MembershipStatus.SUBSCRIBED
            and segment.matches(row.fields, row.tags, None if person[4] == 0 else row.joined_at)
        )
        assert store.count_segment(list_id, segment) == len(expected), str(segment)
        assert [m.subscriber_id for m in store.iter_segment(list_id, segment, page=3)] == expected, str(segment)
        sample = store.segment_sample(list_id, segment, 2)
        assert [m.subscriber_id for m in sample] == expected[:2]


def test_a_sample_and_a_stream_carry_each_member_whole(store):
    list_id = store.list_id("alliances")
    store.subscribe_many(
        list_id,
        [
            Subscription("a@example.org", "Ann", {"Municipalité": "Lévis"}, {}, tags=("Bénévole", "MRC Matane")),
            Subscription("b@example.org", "Bob", {"municipalite": "Matane"}, {}),
            Subscription("c@example.org", "Cy", {"Municipalité": "LÉVIS"}, {}, status=MembershipStatus.UNSUBSCRIBED),
        ],
        "test",
    )
    segment = parse("municipalite in [lévis, matane]")
    [ann, bob] = store.segment_sample(list_id, segment, 5)
    assert (ann.email, ann.name, ann.fields, ann.tags) == (
        "a@example.org",
        "Ann",
        {"Municipalité": "Lévis"},
        ("Bénévole", "MRC Matane"),
    )
    assert (bob.email, bob.status) == ("b@example.org", MembershipStatus.SUBSCRIBED)
    assert [m.email for m in store.iter_segment(list_id, segment)] == ["a@example.org", "b@example.org"]
    assert store.segment_sample(list_id, segment, 0) == []
    # A field nobody ever had matches nobody, its negation everybody subscribed.
    assert store.count_segment(list_id, parse("nope = x")) == 0
    assert store.count_segment(list_id, parse("not has nope")) == 2
    # The filter is a plain condition on memberships, for the caller's own queries.
    with store.transaction() as connection:
        condition = store.segment_filter(parse("tag:benevole"), connection=connection)
        found = connection.execute(
            memberships.select().with_only_columns(memberships.c.subscriber_id).where(condition)
        ).scalars()
        assert list(found) == [ann.subscriber_id]


def test_every_write_of_a_subscribers_fields_keeps_their_index_in_step(store):
    """subscribe, an import's batch (a field merged under another spelling of its name), and forget: the rows of
    subscriber_fields are always exactly the fields' values, so that a segment finds each member by what they hold."""
    list_id = store.list_id("alliances")

    def found(text: str) -> list[str]:
        return [member.email for member in store.iter_segment(list_id, parse(text))]

    store.subscribe(list_id, "a@example.org", None, {"Municipalité": "Rimouski", "Organisme": "UQAR"}, "cli")
    store.subscribe_many(list_id, [Subscription("b@example.org", None, {"MUNICIPALITÉ": "Matane"}, {})], "test")
    assert found("municipalite = rimouski") == ["a@example.org"]
    assert found("municipalite in [rimouski, matane] and not has organisme") == ["b@example.org"]
    store.subscribe(list_id, "A@example.org", None, {"municipalite": "Amqui"}, "cli")  # merged by key
    store.subscribe_many(
        list_id, [Subscription("b@example.org", None, {"Organisme": "Cégep", "Ville": ""}, {})], "test"
    )
    assert found("municipalite = rimouski") == []
    assert found("municipalite = amqui and organisme = uqar") == ["a@example.org"]
    assert found("municipalite = matane and organisme = cégep") == ["b@example.org"]
    assert found("has ville") == [] and len(found("not has ville")) == 2
    assert store.forget("a@example.org")
    with store.engine.connect() as connection:
        kept = connection.execute(sa.select(subscriber_fields.c.field_key, subscriber_fields.c.value_key)).all()
    assert sorted(kept) == [("municipalite", "matane"), ("organisme", "cégep")]


def test_a_long_value_is_matched_whole(store):
    """A value past what an index entry holds is indexed as its start and a hash: equal only to itself."""
    list_id = store.list_id("alliances")
    long, other = "Rimouski " * 40, "Rimouski " * 39 + "Matane   "
    store.subscribe_many(
        list_id,
        [
            Subscription("a@example.org", None, {"Note": long}, {}),
            Subscription("b@example.org", None, {"Note": other}, {}),
        ],
        "test",
    )
    assert [m.email for m in store.iter_segment(list_id, Field("note", (long.upper(),)))] == ["a@example.org"]
    assert store.count_segment(list_id, Not(Field("note", (other,)))) == 1
    assert store.count_segment(list_id, Field("note", (long[:200],))) == 0
