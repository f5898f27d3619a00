"""Every list the store can hold has working unsubscribe links, whatever people call their lists.

A list is created only under a slug (lowercase letters, digits, hyphens); any other name is refused with the slug
to use instead and how to give the name subscribers see. Lists that an earlier version created under any name
are given a slug by migration 2 and keep answering the links already sent. Both properties are checked through
the real `serve` app on a uvicorn server, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools

import httpx
import pytest
from conftest import CONFIG
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_send import run
from web_server import serving

from newsletter.config import load_config
from newsletter.message import Campaign, parse_mailbox
from newsletter.store import (
    LIST_SLUG,
    ListNameError,
    MembershipStatus,
    Store,
    lists,
    memberships,
    now,
    slugify,
    subscribers,
)
from newsletter.subscribers import add
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

SECRET = "a-test-secret-key-of-sufficient-length"
ONE_CLICK = b"List-Unsubscribe=One-Click"
# Names as people write them: capitals, spaces, accents, underscores, digits first, apostrophes, other scripts.
LIST_NAMES = st.one_of(
    st.sampled_from(["Alliances", "Membres 2025", "bulletin_fr", "2025 Élèves", "Œuvres d'été", "  ", "alliances"]),
    st.text(st.characters(categories=("Lu", "Ll", "Lo", "Nd", "Zs", "Pc", "Pd", "Po")), min_size=1, max_size=40),
)
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
addresses = (f"member{n}@example.org" for n in itertools.count())


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    return Workspace(tmp_path, load_config(tmp_path))


def unsubscribe(base: str, token: str) -> int:
    return httpx.post(f"{base}/u/{token}", content=ONE_CLICK).status_code


def status(store: Store, list_id: int, address: str) -> str:
    return {m.email: m.status for m in store.members(list_id)}[address]


def test_slugs_suggested_for_the_names_people_use():
    assert [slugify(n) for n in ("Alliances", "Membres 2025", "bulletin_fr", "2025 Élèves", "Œuvres d'été", "  ")] == [
        "alliances",
        "membres-2025",
        "bulletin-fr",
        "2025-eleves",
        "oeuvres-d-ete",
        "list",
    ]
    assert all(LIST_SLUG.fullmatch(slugify(name)) for name in ("ÉTÉ", "_", "a" * 300, "日本語", "x--y"))


def test_a_list_name_that_is_no_slug_is_refused_where_lists_are_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "membres.csv").write_text("courriel,nom\nmarie@example.org,Marie\n", encoding="utf-8")
    for command in (["subscribers", "import", "membres.csv"], ["subscribers", "add", "marie@example.org"]):
        result = run(*command, "--list", "Membres 2025")
        assert result.exit_code == 1
        assert result.stderr == (
            "error: 'Membres 2025' cannot name a list: it goes into every unsubscribe link, so use lowercase "
            'letters, digits and hyphens, e.g. --list membres-2025 --list-name "Membres 2025" (the name '
            "subscribers see)\n"
        )
    result = run("subscribers", "import", "membres.csv", "--list", "membres-2025", "--list-name", "Membres 2025")
    assert result.exit_code == 0, result.output
    store = Store.open(f"sqlite:///{tmp_path / 'subscribers' / 'newsletter.db'}")
    assert store.list_slugs() == ["membres-2025"]
    assert store.find_list("membres-2025").name == "Membres 2025"
    store.close()


@pytest.fixture
def served(workspace, database_url):
    store = Store.open(database_url)
    with serving(create_app(workspace, store, TokenSigner(SECRET))) as base:
        yield base, store
    store.close()


@EXAMPLES
@given(name=LIST_NAMES)
def test_every_list_a_user_can_create_has_working_unsubscribe_links(served, name):
    base, store = served
    address = next(addresses)
    try:
        add(store, name, address, None)
        slug = name
    except ListNameError as refused:
        assert not LIST_SLUG.fullmatch(name)
        slug = refused.suggestion
        add(store, slug, address, None, list_name=name)
    found = store.find_list(slug)
    assert LIST_SLUG.fullmatch(found.slug)
    subscriber = next(m.subscriber_id for m in store.members(found.id) if m.email == address)
    assert unsubscribe(base, TokenSigner(SECRET).sign(subscriber, found.slug)) == 200
    assert status(store, found.id, address) == MembershipStatus.UNSUBSCRIBED


def legacy_store(url: str, names: list[str]) -> list[tuple[str, int, int]]:
    """A database as the version before slugs left it: lists under any name, two members each.

    Returns (name, subscriber who clicks an old link, subscriber who clicks a new one) per list.
    """
    store = Store.open(url, upgrade=False)
    store.upgrade(to=1)
    made = []
    with store.transaction() as connection:
        for number, name in enumerate(names):
            list_id = connection.execute(
                lists.insert().values(slug=name, name=name, created_at=now()).returning(lists.c.id)
            ).scalar_one()
            members = []
            for who in ("old", "new"):  # rows as that version wrote them (its schema has no suppressions)
                address = f"{who}{number}@example.org"
                subscriber = connection.execute(
                    subscribers.insert()
                    .values(email=address, email_key=address, fields={}, created_at=now())
                    .returning(subscribers.c.id)
                ).scalar_one()
                connection.execute(
                    memberships.insert().values(
                        subscriber_id=subscriber, list_id=list_id, status="subscribed", updated_at=now()
                    )
                )
                members.append(subscriber)
            made.append((name, *members))
    store.close()
    return made


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(LIST_NAMES, min_size=1, max_size=6, unique=True))
@example(names=["Membres 2025", "membres_2025", "membres-2025", "Alliances", "alliances-2"])
def test_lists_made_before_slugs_keep_working_links_after_the_upgrade(
    workspace, request, tmp_path_factory, engine, names
):
    if engine == "postgresql":
        url = request.getfixturevalue("postgresql").new_database()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('legacy') / 'newsletter.db'}"
    made = legacy_store(url, names)
    # What the old version put in its emails (it could sign only ASCII names; others failed before sending).
    old_links = {name: TokenSigner(SECRET).sign(old, name) for name, old, _ in made if name.isascii()}
    store = Store.open(url, upgrade=True)
    slugs = {found.slug for found in (store.find_list(name) for name in names)}
    assert len(slugs) == len(names) and all(LIST_SLUG.fullmatch(slug) for slug in slugs)
    with serving(create_app(workspace, store, TokenSigner(SECRET))) as base:
        for number, (name, _, new) in enumerate(made):
            found = store.find_list(name)  # still found by the name it had
            assert found.name == name
            if name in old_links:
                assert unsubscribe(base, old_links[name]) == 200
                assert status(store, found.id, f"old{number}@example.org") == MembershipStatus.UNSUBSCRIBED
            assert unsubscribe(base, TokenSigner(SECRET).sign(new, found.slug)) == 200
            assert status(store, found.id, f"new{number}@example.org") == MembershipStatus.UNSUBSCRIBED
    store.close()


def test_a_migrated_list_gets_a_valid_list_id_header(workspace, tmp_path):
    url = f"sqlite:///{tmp_path / 'newsletter.db'}"
    legacy_store(url, ["Membres 2025"])
    store = Store.open(url)
    found = store.find_list("Membres 2025")
    campaign = Campaign(
        1,
        found.slug,
        found.title("Le bulletin"),
        None,
        parse_mailbox("N <news@crdbsl.org>"),
        None,
        "https://example.org",
        TokenSigner(SECRET),
    )
    assert campaign.list_id == "Membres 2025 <membres-2025.crdbsl.org>"
    store.close()
