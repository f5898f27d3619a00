"""A reader's language (issue 23): a list's languages in newsletter.toml, a subscriber's `lang` in the store (on
SQLite and PostgreSQL) as `subscribers add --lang`, an import's column, the export, `show` and `list --json` have
it, and the ledger's rows carry it to the message's Recipient."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config, reader_language
from newsletter.errors import ConfigError, NewsletterError
from newsletter.i18n import CATALOG, parse_language
from newsletter.importing import import_list
from newsletter.store import SignupRequest, Store, now
from newsletter.subscribers import add, export_csv

BILINGUAL = '[lists.alliances]\nlangs = ["fr", "en"]\n'


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    yield store
    store.close()


def lang_of(store: Store, email: str) -> str | None:
    person = store.person(email)
    assert person is not None
    return person["lang"]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# newsletter.toml


def test_a_list_has_its_languages_its_first_first(tmp_path):
    (tmp_path / "newsletter.toml").write_text(
        'lang = "fr"\n[lists.alliances]\nlangs = ["fr", "en"]\n[lists.news]\nlang = "en"\n'
        '[lists.both]\nlang = "en"\nlangs = ["en", "fr"]\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path)
    assert config.list_languages("alliances") == ("fr", "en")
    assert config.list_languages("news") == ("en",)  # lang alone
    assert config.list_languages("both") == ("en", "fr")
    assert config.list_languages("unlisted") == ("fr",)  # the newsletter's
    assert reader_language(config, "alliances", "en") == "en"
    assert reader_language(config, "alliances", None) == "fr"
    assert reader_language(config, "news", "fr") == "en"  # not offered: the list's first


def test_a_list_s_title_in_each_language_its_first_language_s_by_default(tmp_path):
    (tmp_path / "newsletter.toml").write_text(
        '[lists.alliances]\nlangs = ["fr", "en"]\ntitle = {en = "The Alliances Newsletter", fr = "Le bulletin"}\n'
        '[lists.news]\ntitle = "News"\n[lists.english]\nlang = "en"\ntitle = {fr = "Nouvelles"}\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path)
    assert config.list_title("alliances", "en") == "The Alliances Newsletter"
    assert config.list_title("alliances") == config.list_title("alliances", "fr") == "Le bulletin"  # its first's
    assert config.list_title("news", "en") == "News"  # one title: every language's
    assert config.list_title("english") == "Nouvelles"  # none in its language: the one written
    assert config.list_title("unlisted") is None


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('langs = ["fr", "de"]', "'de' is not a language of this tool"),
        ('langs = ["fr", "fr"]', "name each language once"),
        ("langs = []", "name at least one language"),
        ('lang = "en"\nlangs = ["fr", "en"]', 'lang = "en" but langs starts with "fr"'),
        ('consent = {fr = "Oui", de = "Ja"}', "consent.de: not a language"),
        ('title = {fr = "Le bulletin", de = "Das Bulletin"}', "title.de: not a language"),
    ],
)
def test_the_languages_of_a_list_are_checked_where_they_are_written(tmp_path, table, says):
    (tmp_path / "newsletter.toml").write_text(f'name = "X"\n\n[lists.alliances]\n{table}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"newsletter.toml:\d+: lists.alliances") as raised:
        load_config(tmp_path)
    assert says in str(raised.value)


def test_a_language_as_people_write_it():
    for text, code in [("fr", "fr"), ("EN", "en"), (" Français ", "fr"), ("anglais", "en"), ("French", "fr")]:
        assert parse_language(text) == code
    with pytest.raises(ValueError, match="unknown language 'bilingue'; write fr or en"):
        parse_language("bilingue")
    assert set(CATALOG["fr"]) == set(CATALOG["en"])  # the words added exist in both


# The store and the import, on both engines.


def test_add_sets_a_language_and_keeps_it_when_none_is_given(store):
    assert add(store, "alliances", "lea@example.org", "Léa", lang="en") == "added"
    assert lang_of(store, "lea@example.org") == "en"
    assert add(store, "alliances", "lea@example.org", None) == "unchanged"  # none given: theirs stays
    assert lang_of(store, "lea@example.org") == "en"
    assert add(store, "alliances", "lea@example.org", None, lang="Français") == "updated"
    assert lang_of(store, "lea@example.org") == "fr"
    assert add(store, "alliances", "sans@example.org", None) == "added" and lang_of(store, "sans@example.org") is None
    with pytest.raises(NewsletterError, match="--lang: unknown language 'de'"):
        add(store, "alliances", "x@example.org", None, lang="de")
    member = {m.email: m for m in store.members(store.list_id("alliances"))}
    assert (member["lea@example.org"].lang, member["sans@example.org"].lang) == ("fr", None)


def test_an_import_reads_the_language_column_in_every_spelling(store, tmp_path):
    rows = [
        ("a@example.org", "fr"),
        ("b@example.org", "EN"),
        ("c@example.org", "français"),
        ("d@example.org", "Anglais"),
        ("e@example.org", "French"),
        ("f@example.org", "english"),
        ("g@example.org", ""),
        ("h@example.org", "bilingue"),
    ]
    for header in ("lang", "Langue", "language"):
        path = write_csv(tmp_path / f"{header}.csv", f"email,{header}\n" + "".join(f"{a},{b}\n" for a, b in rows))
        slug = f"list-{header.lower()}"
        report = import_list(store, slug, path)
        assert report.added == 7 and [line for _, *line in report.rejected] == [
            [9, f"unknown language 'bilingue' in {header}; write fr or en (français, anglais, French, English)"]
        ]
        got = {m.email: m.lang for m in store.members(store.list_id(slug))}
        assert got == {
            "a@example.org": "fr",
            "b@example.org": "en",
            "c@example.org": "fr",
            "d@example.org": "en",
            "e@example.org": "fr",
            "f@example.org": "en",
            "g@example.org": None,
        }
        assert "lang" not in str(store.person("a@example.org")["fields"]).lower()  # a language, not a field


def test_an_empty_cell_leaves_the_language_and_another_changes_it(store, tmp_path):
    first = write_csv(tmp_path / "first.csv", "email,langue\na@example.org,en\nb@example.org,fr\n")
    assert import_list(store, "alliances", first).added == 2
    again = write_csv(tmp_path / "again.csv", "email,langue\na@example.org,\nb@example.org,English\n")
    report = import_list(store, "alliances", again)
    assert (report.unchanged, report.updated) == (1, 1)
    assert (lang_of(store, "a@example.org"), lang_of(store, "b@example.org")) == ("en", "en")
    assert import_list(store, "alliances", again).unchanged == 2  # the same file again changes nothing


def test_a_row_that_records_someone_leaving_is_kept_whatever_its_language(store, tmp_path):
    path = write_csv(
        tmp_path / "left.csv",
        "email,status,lang\nparti@example.org,unsubscribed,klingon\nok@example.org,subscribed,xx\n",
    )
    report = import_list(store, "alliances", path)
    assert sum(report.held.values()) == 1 and report.rejected_count == 1 and report.rejected[0][1] == 3
    assert lang_of(store, "parti@example.org") is None


def test_the_export_has_the_language_and_reads_back_in_as_the_same_list(store, tmp_path):
    add(store, "alliances", "en@example.org", "Ann", lang="en")
    add(store, "alliances", "fr@example.org", "Fanny", lang="fr")
    add(store, "alliances", "none@example.org", None)
    out = io.StringIO()
    assert export_csv(store, "alliances", out) == 3
    rows = {row["email"]: row["lang"] for row in csv.DictReader(io.StringIO(out.getvalue()))}
    assert rows == {"en@example.org": "en", "fr@example.org": "fr", "none@example.org": ""}
    backup = write_csv(tmp_path / "backup.csv", out.getvalue())
    assert import_list(store, "copie", backup).added == 3
    copied = {m.email: (m.name, m.lang) for m in store.members(store.list_id("copie"))}
    assert copied == {m.email: (m.name, m.lang) for m in store.members(store.list_id("alliances"))}


def test_the_ledger_hands_each_recipient_their_language(store):
    from newsletter.message import Recipient

    add(store, "alliances", "en@example.org", None, lang="en")
    add(store, "alliances", "fr@example.org", None, lang="fr")
    add(store, "alliances", "none@example.org", None)
    list_id = store.list_id("alliances")
    assert [row[4] for row in store.audience_sample(list_id, None, "x", "h", 10)] == ["en", "fr", None]
    campaign_id = store.create_campaign(list_id, "x", "h", "Sujet")
    assert [d.lang for d in store.pending(campaign_id, 10)] == ["en", "fr", None]
    claimed = store.claim(campaign_id, list_id, "a:1:x#1", 10, lease=60)
    assert [(d.email, d.lang) for d in claimed] == [
        ("en@example.org", "en"),
        ("fr@example.org", "fr"),
        ("none@example.org", None),
    ]
    # What the runner builds each message for (sending/runner.py): the language rides along, unused so far.
    recipient = Recipient(
        claimed[0].subscriber_id, claimed[0].email, claimed[0].name, claimed[0].fields, claimed[0].lang
    )
    assert recipient.lang == "en"


def test_set_language_records_an_event_and_only_a_change(store):
    add(store, "alliances", "a@example.org", None)
    subscriber = store.find_subscriber("a@example.org")
    list_id = store.list_id("alliances")
    assert store.set_language(subscriber, "en", "page", {"user_agent": "test"}, list_id=list_id) is True
    assert store.set_language(subscriber, "en", "page", list_id=list_id) is False  # nothing to change
    assert store.set_language(subscriber + 1000, "en", "page") is False  # nobody
    (event,) = [e for e in store.person("a@example.org")["events"] if e["kind"] == "updated"]
    assert event["source"] == "page" and event["list"] == "alliances"
    assert event["detail"] == {"user_agent": "test", "lang": "en", "lang_before": None}
    assert lang_of(store, "a@example.org") == "en"


def test_a_sign_up_s_language_is_theirs_only_once_they_confirm(store):
    import datetime as dt

    add(store, "autre", "lea@example.org", None, lang="fr")
    list_id = store.ensure_list("alliances")
    (asked,) = store.request_signups(
        [SignupRequest(list_id, "lea@example.org", None, {"consent": "oui"}, "en")], every=dt.timedelta(minutes=10)
    )
    assert lang_of(store, "lea@example.org") == "fr"  # whoever typed her address changed nothing of hers
    waiting = store.confirmable(asked.subscriber_id, list_id, asked.request_id)
    assert (waiting.email, waiting.lang) == ("lea@example.org", "en")  # the pages speak what she chose
    _, unsent = store.unsent_confirmations(now() - dt.timedelta(days=1), now())
    assert [u.lang for u in unsent] == ["en"]  # a confirmation sent again is in her language too
    confirmed = store.confirm_signup(asked.subscriber_id, list_id, {}, request_id=asked.request_id)
    assert (confirmed.email, confirmed.lang) == ("lea@example.org", "en") and lang_of(store, "lea@example.org") == "en"


# The command line.


@pytest.fixture
def workspace(tmp_path, database_url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text(f'name = "Le bulletin"\nlang = "fr"\n\n{BILINGUAL}', encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_subscribers_add_lang_show_and_list(workspace):
    added = run("subscribers", "add", "ann@example.org", "--list", "alliances", "--lang", "English", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout) == {
        "email": "ann@example.org",
        "list": "alliances",
        "result": "added",
        "lang": "en",
    }
    assert run("subscribers", "add", "sam@example.org", "--list", "alliances").exit_code == 0
    wrong = run("subscribers", "add", "x@example.org", "--list", "alliances", "--lang", "de")
    assert wrong.exit_code == 1 and "error: --lang: unknown language 'de'; write fr or en" in wrong.output
    only_fr = run("subscribers", "add", "bob@example.org", "--list", "nouvelles", "--lang", "en")
    assert only_fr.exit_code == 0 and "note: nouvelles is sent in fr only" in only_fr.output
    shown = run("subscribers", "show", "ann@example.org")
    assert shown.exit_code == 0 and "language: en" in shown.stdout
    assert json.loads(run("subscribers", "show", "ann@example.org", "--json").stdout)["lang"] == "en"
    assert json.loads(run("subscribers", "show", "sam@example.org", "--json").stdout)["lang"] is None
    members = json.loads(run("subscribers", "list", "--list", "alliances", "--json").stdout)
    assert [(m["email"], m["lang"]) for m in members] == [("ann@example.org", "en"), ("sam@example.org", None)]
    exported = run("subscribers", "export", "--list", "alliances").stdout
    assert exported.splitlines()[0].endswith(",tags,lang") and "ann@example.org,,subscribed," in exported


def test_subscribers_import_reports_an_unknown_language_on_its_line(workspace):
    write_csv(workspace / "abonnes.csv", "courriel;langue\na@example.org;fr\nb@example.org;espagnol\n")
    result = run("subscribers", "import", "abonnes.csv", "--list", "alliances")
    assert result.exit_code == 0, result.output
    assert "abonnes.csv:3: rejected: unknown language 'espagnol' in langue; write fr or en" in result.output
    assert "1 added" in result.stdout and "1 rejected" in result.stdout
