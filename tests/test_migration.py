"""Coming from another mailer, on SQLite and PostgreSQL, through the command a user runs: each export fixture of
tests/fixtures/exports (see its README for who is what) imports with the right statuses, consent, fields and tags,
nobody who left subscribed; a dry run writes nothing; the same import again changes nothing; and an export reads
back in as the same list."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.segments import parse
from newsletter.sending.wiring import open_store
from newsletter.store import MembershipStatus
from newsletter.store.schema import MIGRATIONS
from newsletter.workspace import Workspace

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
SECRET = "a-secret-key-for-the-migration-tests"
# What an import of each fixture into an empty list ends with (tests/fixtures/exports/README.md).
EXPECTED = {
    "mailchimp": ({"subscribed": 6, "unsubscribed": 4, "bounced": 3, "nonsubscribed": 2}, 2),
    "substack/email_list.bulletin.csv": ({"subscribed": 4, "unsubscribed": 2}, 2),
    "listmonk/subscribers.csv": ({"subscribed": 4, "unsubscribed": 2}, 0),
    "csv/abonnes-alliances.csv": (
        {"subscribed": 3, "unsubscribed": 3, "bounced": 2, "complained": 1, "nonsubscribed": 1},
        4,
    ),
}


@pytest.fixture
def workspace(tmp_path, database_url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text('name = "Le bulletin"\n', encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def imported(path: Path | str, *options: str) -> dict:
    result = run("subscribers", "import", str(path), "--list", "alliances", "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def statuses(workspace: Path, list_slug: str = "alliances") -> dict[str, int]:
    store = open_store(Workspace.discover(workspace))
    try:
        found: dict[str, int] = {}
        for member in store.members(store.list_id(list_slug)):
            found[member.status] = found.get(member.status, 0) + 1
        return found
    finally:
        store.close()


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_each_export_imports_with_its_statuses_and_again_changes_nothing(workspace, fixture):
    by_status, rejected = EXPECTED[fixture]
    path = EXPORTS / fixture
    dry = imported(path, "--dry-run")
    assert dry["dry_run"] and (dry["added"], dry["rejected_count"]) == (by_status["subscribed"], rejected)
    assert run("subscribers", "list", "--list", "alliances").exit_code == 1  # the dry run made no list
    report = imported(path)
    assert (report["added"], report["rejected_count"], report["refused_count"]) == (
        by_status["subscribed"],
        rejected,
        0,
    )
    held = {status: count for status, count in by_status.items() if status != "subscribed"}
    assert report["held"] == held and report["left"] == {}
    assert statuses(workspace) == by_status
    again = imported(path)
    assert (again["added"], again["updated"], again["held"], again["left"]) == (0, 0, {}, {})
    assert again["unchanged"] == sum(by_status.values()) and statuses(workspace) == by_status


def test_a_mailchimp_zip_records_consent_fields_tags_and_why_people_left(workspace, tmp_path):
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as archive:
        for file in sorted((EXPORTS / "mailchimp").iterdir()):
            archive.write(file, f"alliances_export/{file.name}")
    report = imported(export)
    assert report["source"] == "mailchimp" and report["consent"] > 0 and not report["ips_left_out"]
    assert [f["status"] for f in report["files"]] == ["bounced", "unsubscribed", "nonsubscribed", "subscribed"]
    assert report["rejected"][0]["file"].endswith("subscribed_members_export_4f1c2a9b7e.csv")

    marie = json.loads(run("subscribers", "show", "marie.cote@example.org", "--json").stdout)
    assert marie["fields"] == {"Municipalité": "Rimouski", "Organisme": "Table des femmes", "first_name": "Marie"}
    assert marie["tags"] == ["MRC Rimouski-Neigette", "Rimouski"]
    consent = marie["events"][0]["detail"]["consent"]
    assert consent["opted_in_at"] == "2021-09-14T13:02:11+00:00"
    assert len(consent["opted_in_ip_hash"]) == 32 and "198.51.100.23" not in json.dumps(marie)  # keyed, never the IP
    shown = run("subscribers", "show", "marie.cote@example.org").stdout
    assert "opted in 2021-09-14 13:02 from IP #" in shown and "confirmed 2021-09-14 13:05" in shown
    assert "joined 2021-09-14" in shown

    pierre = run("subscribers", "show", "pierre.dionne@example.org").stdout
    assert "2022-11-30 21:40 unsubscribed (import) alliances:" in pierre
    assert "reason: Other: J'ai déménagé à Québec" in pierre

    # Julie left in Mailchimp, and is in the subscribed file too: she stays unsubscribed.
    julie = json.loads(run("subscribers", "show", "julie.gagnon@example.org", "--json").stdout)
    assert [m["status"] for m in julie["memberships"]] == ["unsubscribed"]


def test_a_member_who_left_in_the_export_is_taken_off_and_nobody_who_left_here_comes_back(workspace):
    assert run("subscribers", "add", "pierre.dionne@example.org", "--list", "alliances").exit_code == 0
    assert run("subscribers", "add", "marie.cote@example.org", "--list", "alliances").exit_code == 0
    assert run("subscribers", "remove", "marie.cote@example.org", "--list", "alliances").exit_code == 0
    report = imported(EXPORTS / "mailchimp")
    assert report["left"] == {"unsubscribed": 1}  # Pierre, subscribed here, unsubscribed there
    assert report["refused_count"] == 1 and report["refused"][0]["email"] == "marie.cote@example.org"
    store = open_store(Workspace.discover(workspace))
    try:
        found = {m.email: m.status for m in store.members(store.list_id("alliances"))}
    finally:
        store.close()
    assert found["pierre.dionne@example.org"] == found["marie.cote@example.org"] == "unsubscribed"


def test_an_unsubscribed_file_alone_subscribes_nobody(workspace):
    report = imported(EXPORTS / "mailchimp" / "unsubscribed_members_export_4f1c2a9b7e.csv")
    assert report["added"] == 0 and report["held"] == {"unsubscribed": 4}
    assert statuses(workspace) == {"unsubscribed": 4}


def test_export_reads_back_in_as_the_same_list(workspace):
    imported(EXPORTS / "mailchimp")
    assert run("subscribers", "tag", "marie.cote@example.org", "Bénévoles").exit_code == 0
    out = run("subscribers", "export", "--list", "alliances").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    marie = next(row for row in rows if row["email"] == "marie.cote@example.org")
    assert (marie["joined_at"], marie["opted_in_at"], marie["confirmed_at"]) == (
        "2021-09-14T13:05:40+00:00",
        "2021-09-14T13:02:11+00:00",
        "2021-09-14T13:05:40+00:00",
    )
    assert marie["tags"] == '"Bénévoles","MRC Rimouski-Neigette","Rimouski"'
    (workspace / "backup.csv").write_text(out, encoding="utf-8")
    result = run("subscribers", "import", "backup.csv", "--list", "copie", "--json")
    assert result.exit_code == 0, result.output

    def members(slug: str) -> dict:
        store = open_store(Workspace.discover(workspace))
        try:
            list_id = store.list_id(slug)
            page = list(store.iter_members(list_id, tags=True))
            consent = store.consent_among(list_id, [m.subscriber_id for m in page])
            return {
                m.email.lower(): (m.name, m.status, m.fields, m.tags, m.joined_at, consent.get(m.subscriber_id))
                for m in page
            }
        finally:
            store.close()

    assert members("copie") == members("alliances")


def test_a_list_imported_at_schema_version_8_is_segmented_alike_once_its_field_values_are_indexed(workspace):
    """The Mailchimp export imported, the store taken back to schema version 8 (fields only in each subscriber's
    JSON, no subscriber_fields), then upgraded: migration 10 indexes every subscriber's fields, and each segment finds
    the members it found before and that the reference (Segment.matches) finds."""
    imported(EXPORTS / "mailchimp")
    assert (
        run(
            "subscribers", "add", "zoe@example.org", "--list", "alliances", "--field", "MUNICIPALITÉ=RIMOUSKI"
        ).exit_code
        == 0
    )
    segments = [
        parse(text)
        for text in (
            'municipalite = "rimouski"',
            'municipalité in ["Matane", "Amqui"]',
            'municipalite != "Rimouski"',
            "has organisme and not tag:rimouski",
            'first_name = "noémie" or organisme = "œuvre régionale" or tag:rimouski',
        )
    ]
    store = open_store(Workspace.discover(workspace))
    try:
        list_id = store.list_id("alliances")

        def found() -> list[list[int]]:
            return [[m.subscriber_id for m in store.iter_segment(list_id, segment)] for segment in segments]

        before = found()
        with store.transaction() as connection:
            connection.execute(sa.text("DELETE FROM schema_version WHERE version > 8"))
            connection.execute(sa.text("DROP TABLE subscriber_fields"))
        assert store.version() == 8
        assert store.upgrade() == [n for n, _ in MIGRATIONS if n > 8]  # the later ones find what they add there
        members = list(store.iter_members(list_id, MembershipStatus.SUBSCRIBED, tags=True))
        reference = [
            [m.subscriber_id for m in members if segment.matches(m.fields, m.tags, m.joined_at)] for segment in segments
        ]
        assert found() == before == reference
        assert all(reference) and len(reference[0]) == 3  # Marie, Luc, and Zoé as she was added
    finally:
        store.close()


def test_add_tag_untag_and_list_json(workspace):
    added = run(
        "subscribers",
        "add",
        "zoe@example.org",
        "--list",
        "alliances",
        "--field",
        "Municipalité=Rimouski",
        "--tag",
        "Est",
    )
    assert added.exit_code == 0
    assert run("subscribers", "tag", "zoe@example.org", "MRC  Rimouski-Neigette", "est").stdout == (
        "zoe@example.org: tagged MRC Rimouski-Neigette; tags: Est, MRC Rimouski-Neigette\n"
    )
    untagged = json.loads(run("subscribers", "untag", "zoe@example.org", "EST", "--json").stdout)
    assert untagged == {"email": "zoe@example.org", "removed": ["Est"], "tags": ["MRC Rimouski-Neigette"]}
    listed = json.loads(run("subscribers", "list", "--list", "alliances", "--json").stdout)
    assert listed[0]["fields"] == {"Municipalité": "Rimouski"} and listed[0]["tags"] == ["MRC Rimouski-Neigette"]
    bad = run("subscribers", "add", "x@example.org", "--list", "alliances", "--field", "Rimouski")
    assert bad.exit_code == 1 and "write it NAME=VALUE" in bad.stderr
    nobody = run("subscribers", "tag", "personne@example.org", "x")
    assert nobody.exit_code == 1 and "is not on any list" in nobody.stderr
