"""Importing the lists people really have, adding, removing, exporting: on a real SQLite file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)

from newsletter.errors import NewsletterError
from newsletter.importing import import_list
from newsletter.message import Recipient
from newsletter.store import MembershipStatus, Store
from newsletter.subscribers import add, export_csv, remove

CSV = Path(__file__).parent / "fixtures" / "csv"


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    yield store
    store.close()


def members(store, slug="alliances"):
    return {m.email: m for m in store.members(store.list_id(slug))}


def test_excel_windows_1252_with_semicolons_and_french_headers(store):
    report = import_list(store, "alliances", CSV / "excel-cp1252.csv")
    assert (report.added, report.rejected, report.encoding, report.delimiter) == (3, [], "cp1252", ";")
    found = members(store)
    assert found["marie.cote@example.org"].name == "Marie Côté"
    assert found["noemie@example.org"].fields == {"Organisme": "Œuvre régionale", "first_name": "Noémie"}


def test_utf8_with_bom_and_tabs(store):
    report = import_list(store, "alliances", CSV / "utf8-bom.csv")
    assert (report.added, report.encoding, report.delimiter) == (2, "utf-8-sig", ",")
    assert members(store)["zoe@example.org"].name == "Zoé Bœuf"
    report = import_list(store, "alliances", CSV / "tabs.tsv")
    assert (report.added, report.delimiter) == (2, "\t")
    assert members(store)["ann@example.org"].name == "Ann Example"
    assert members(store)["bob@example.org"].name == "Bob"


def test_excel_unicode_text_is_utf16_with_tabs(store, tmp_path):
    report = import_list(store, "alliances", CSV / "excel-unicode-text.txt")
    assert (report.added, report.encoding, report.delimiter) == (2, "utf-16-le", "\t")
    assert [line for _, line, _ in report.rejected] == [5]
    found = members(store)
    assert found["marie.cote@example.org"].name == "Marie Côté"
    assert found["zoe@example.org"].fields == {"Organisme": "L’Alliance du Kamouraska", "first_name": "Zoé"}
    big_endian = tmp_path / "big-endian.txt"
    big_endian.write_bytes(b"\xfe\xff" + "email\tname\nann@example.org\tAnn Ésope\n".encode("utf-16-be"))
    report = import_list(store, "alliances", big_endian)
    assert (report.added, report.encoding) == (1, "utf-16-be")
    assert members(store)["ann@example.org"].name == "Ann Ésope"
    truncated = tmp_path / "truncated.txt"
    truncated.write_bytes(b"\xff\xfe" + "email\n".encode("utf-16-le") + b"\x00\xd8")  # half a surrogate pair
    with pytest.raises(NewsletterError, match="starts as UTF-16-LE but byte 14 is not"):
        import_list(store, "alliances", truncated)


def test_dirty_file_reports_each_rejected_line(store):
    report = import_list(store, "alliances", CSV / "dirty.csv")
    assert report.added == 2
    lines = {line: reason for _, line, reason in report.rejected}
    assert set(lines) == {3, 4, 5, 7}
    assert "duplicate of line 2" in lines[3]
    assert "invalid address 'pas-une-adresse'" in lines[4]
    assert lines[5] == "no address"
    assert set(members(store)) == {"Alice@example.org", "carole@example.org"}  # the domain is lower-cased


def test_reimport_changes_nothing_and_never_resubscribes(store):
    import_list(store, "alliances", CSV / "excel-cp1252.csv")
    assert remove(store, "alliances", "MARIE.COTE@example.org")  # case-insensitive
    with store.transaction() as connection:
        francois = store.find_subscriber("francois@example.org", connection=connection)
        store.set_status(
            francois, store.list_id("alliances"), MembershipStatus.BOUNCED, "webhook", connection=connection
        )
    report = import_list(store, "alliances", CSV / "excel-cp1252.csv")
    assert (report.added, report.updated, report.unchanged) == (0, 0, 1)
    assert [line for _, line, _, _ in report.refused] == [2, 3]
    found = members(store)
    assert found["marie.cote@example.org"].status == MembershipStatus.UNSUBSCRIBED
    assert found["francois@example.org"].status == MembershipStatus.BOUNCED
    assert add(store, "alliances", "marie.cote@example.org", "Marie") == "refused"


def test_add_validates_and_updates(store):
    assert add(store, "news", "Zoe@Example.org", "Zoé") == "added"
    assert add(store, "news", "zoe@example.org", "Zoé Côté") == "updated"
    assert add(store, "news", "zoe@example.org", None) == "unchanged"
    with pytest.raises(NewsletterError, match="not a valid address"):
        add(store, "news", "zoe@", None)
    history = store.history(members(store, "news")["Zoe@example.org"].subscriber_id)
    assert [(e["kind"], e["source"]) for e in history] == [("subscribed", "cli"), ("updated", "cli")]


# NUL, ESC (a terminal's "clear screen"), DEL, a tab and a line break, then 300 emoji (1,200 octets).
UNRULY_NAME = "\x00Zoé\x1b[2J \t Bœuf\x7f\r\n" + "😀" * 300
CLEANED_NAME = "Zoé[2J Bœuf " + "😀" * 46  # 200 octets at most: 14, and 46 emoji of 4


def to_line(campaign, email: str, name: str | None) -> bytes:
    head = campaign.build(Recipient(1, email, name)).to_bytes().split(b"\r\n\r\n", 1)[0]
    (line,) = [line for line in head.split(b"\r\n") if line.startswith(b"To:")]
    return line


def test_a_name_loses_its_control_characters_and_is_capped_at_import_and_add(store, tmp_path, campaign):
    rows = tmp_path / "names.csv"
    rows.write_text(f'email,name\nimporte@example.org,"{UNRULY_NAME}"\n', encoding="utf-8")
    assert import_list(store, "alliances", rows).added == 1
    assert add(store, "alliances", "ajoute@example.org", UNRULY_NAME) == "added"
    found = members(store)
    for email in ("importe@example.org", "ajoute@example.org"):
        name = found[email].name
        assert name == CLEANED_NAME and len(name.encode()) <= 200
        line = to_line(campaign, email, name)
        assert len(line) <= 998 and not any(byte < 0x20 or byte == 0x7F for byte in line)


def test_remove_keeps_the_record_and_logs_the_event(store):
    add(store, "news", "a@example.org", None)
    assert remove(store, "news", "a@example.org") is True
    assert remove(store, "news", "a@example.org") is False
    member = members(store, "news")["a@example.org"]
    assert member.status == MembershipStatus.UNSUBSCRIBED
    assert [e["kind"] for e in store.history(member.subscriber_id)] == ["subscribed", "unsubscribed"]
    with pytest.raises(NewsletterError, match="not on any list"):
        remove(store, "news", "nobody@example.org")


def test_export_round_trips_through_import(store, tmp_path):
    import_list(store, "alliances", CSV / "excel-cp1252.csv")
    out = io.StringIO()
    assert export_csv(store, "alliances", out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    joined = members(store)["marie.cote@example.org"].joined_at
    assert rows[0] == {
        "email": "marie.cote@example.org",
        "name": "Marie Côté",
        "status": "subscribed",
        "joined_at": joined.isoformat(),
        "opted_in_at": "",
        "confirmed_at": "",
        "tags": "",
        "lang": "",
        "Organisme": "Table des femmes",
        "first_name": "Marie",
    }
    (tmp_path / "backup.csv").write_text(out.getvalue(), encoding="utf-8")
    report = import_list(store, "copy", tmp_path / "backup.csv")
    assert report.added == 3 and members(store, "copy")["noemie@example.org"].name == "Noémie Thériault"


def test_file_without_email_column_or_empty(store, tmp_path):
    (tmp_path / "x.csv").write_text("nom,ville\nMarie,Rimouski\n")
    with pytest.raises(NewsletterError, match="line 1: no email column"):
        import_list(store, "alliances", tmp_path / "x.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(NewsletterError, match="empty"):
        import_list(store, "alliances", tmp_path / "empty.csv")


def test_unknown_list(store):
    with pytest.raises(NewsletterError, match="no list 'nope'"):
        store.list_id("nope")


def test_sync_applies_a_providers_suppressions_once(store):
    import asyncio

    from newsletter.transports.base import DeliveryEvent

    class Provider:
        scheme = "fake+api"

        async def suppressions(self):
            for kind, address in (
                ("bounced", "a@example.org"),
                ("complained", "B@example.org"),
                ("unsubscribed", "stranger@example.org"),
            ):
                yield DeliveryEvent(kind, address, detail="from the provider")

    add(store, "alliances", "a@example.org", None)
    add(store, "autre", "a@example.org", None)
    add(store, "alliances", "b@example.org", None)
    from newsletter.subscribers import sync_suppressions

    report = asyncio.run(sync_suppressions(store, Provider()))
    assert (report.seen, report.changed) == (3, 3)  # a@ on two lists, b@ on one; the stranger changes nothing
    assert (
        members(store)["a@example.org"].status == MembershipStatus.BOUNCED
        and members(store, "autre")["a@example.org"].status == MembershipStatus.BOUNCED
    )
    assert members(store)["b@example.org"].status == "complained"
    assert asyncio.run(sync_suppressions(store, Provider())).changed == 0
    history = store.history(members(store)["b@example.org"].subscriber_id)
    assert (history[-1]["kind"], history[-1]["source"]) == ("complained", "sync")


def test_sync_with_a_list_scopes_its_unsubscribes_to_it(workspace, monkeypatch):  # noqa: F811
    """`subscribers sync --list`, against Postmark's documented dump (respx): the ManualSuppression (an
    unsubscribe) leaves the list named only, the bounce and the complaint every list."""
    import json

    import httpx
    import respx
    from test_send import run

    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover(workspace))
    for address in ("address@wildbit.com", "bounce.address@wildbit.com", "spam.complaint.address@wildbit.com"):
        for slug in ("alliances", "autre"):
            add(store, slug, address, None)
    dump = (Path(__file__).parent / "fixtures" / "postmark" / "sync" / "suppressions-dump.json").read_bytes()
    with respx.mock:
        respx.get("https://api.postmarkapp.com/message-streams/broadcast/suppressions/dump").mock(
            return_value=httpx.Response(200, content=dump)
        )
        result = run(
            "subscribers", "sync", "--transport", "postmark+api://token@default", "--list", "alliances", "--json"
        )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"] == 5  # the unsubscribe once, the bounce and complaint twice
    statuses = {
        slug: {m.email: m.status for m in store.members(store.list_id(slug))} for slug in ("alliances", "autre")
    }
    assert statuses["alliances"]["address@wildbit.com"] == MembershipStatus.UNSUBSCRIBED
    assert statuses["autre"]["address@wildbit.com"] == "subscribed"
    assert {statuses[slug]["bounce.address@wildbit.com"] for slug in statuses} == {MembershipStatus.BOUNCED}
    assert {statuses[slug]["spam.complaint.address@wildbit.com"] for slug in statuses} == {"complained"}
    assert run("subscribers", "sync", "--transport", "postmark+api://t@default", "--list", "nulle").exit_code != 0
    store.close()


def test_sync_needs_a_provider_with_a_suppression_list(store):
    import asyncio

    from newsletter.subscribers import sync_suppressions
    from newsletter.transports import transport_from_dsn

    with pytest.raises(NewsletterError, match="outbox:// keeps no suppression list"):
        asyncio.run(sync_suppressions(store, transport_from_dsn("outbox://x")))


# A list of a million streams (issue 13): the same reports, batch after batch, in bounded memory.

FIXTURES = sorted(path.name for path in CSV.iterdir())


@pytest.mark.parametrize("name", FIXTURES)
def test_a_reimport_is_all_unchanged_with_the_same_rejections(store, name):
    first = import_list(store, "alliances", CSV / name)
    again = import_list(store, "alliances", CSV / name)
    assert (again.added, again.updated, again.unchanged) == (0, 0, first.added + first.updated + first.unchanged)
    assert (again.rejected, again.refused, again.encoding, again.delimiter) == (
        first.rejected,
        first.refused,
        first.encoding,
        first.delimiter,
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_small_batches_and_small_chunks_give_the_same_report(database_url, tmp_path, monkeypatch, name):
    """Batches of 2 rows and file chunks of 3 bytes (a character cut in two): the same report, the same list, as
    the whole file read and imported at once; duplicates found across batches."""
    import newsletter.importing as importing
    import newsletter.sources as sources

    whole = Store.open(f"sqlite:///{tmp_path / 'whole.db'}")
    expected = import_list(whole, "alliances", CSV / name).to_json()
    expected_members = {(m.email, m.name, tuple(m.fields.items())) for m in whole.members(whole.list_id("alliances"))}
    whole.close()
    monkeypatch.setattr(importing, "BATCH", 2)
    monkeypatch.setattr(sources, "CHUNK", 3)
    store = Store.open(database_url)
    assert import_list(store, "alliances", CSV / name).to_json() == expected
    assert {(m.email, m.name, tuple(m.fields.items())) for m in members(store).values()} == expected_members
    store.close()


def test_a_file_longer_than_the_sniffed_sample_keeps_its_lines(store, tmp_path):
    """The delimiter is sniffed on the first 8192 characters, which end inside a row: that row, the quoted field
    with a line break after it, and the line numbers of the rejected rows stay right."""
    rows = [f"personne{n}@example.org;Personne {n} é" for n in range(400)]
    rows[300] = 'personne300@example.org;"Deux\nlignes"'
    rows[350] = "pas une adresse;x"
    text = "courriel;nom\n" + "\n".join(rows) + "\n"
    (tmp_path / "long.csv").write_text(text, encoding="utf-8")
    report = import_list(store, "alliances", tmp_path / "long.csv")
    assert (report.added, report.encoding, report.delimiter) == (399, "utf-8", ";")
    assert [line for _, line, _ in report.rejected] == [353]  # the field on two lines counts two
    found = members(store)
    assert found["personne300@example.org"].name == "Deux lignes"  # read whole; a name keeps no line break
    assert found["personne199@example.org"].name == "Personne 199 é"


def test_a_utf8_file_with_a_bom_that_breaks_it_is_refused_before_anything_is_imported(store, tmp_path):
    (tmp_path / "broken.csv").write_bytes(b"\xef\xbb\xbfemail\na@example.org\n\xff@example.org\n")
    with pytest.raises(NewsletterError, match=r"starts as UTF-8 \(with a BOM\) but byte 23 is not"):
        import_list(store, "alliances", tmp_path / "broken.csv")
    assert store.lookup_list("alliances") is None


def test_the_report_keeps_the_first_rejections_and_the_rejects_file_all(store, tmp_path):
    from newsletter.importing import REPORTED

    add(store, "alliances", "left@example.org", None)
    remove(store, "alliances", "left@example.org")
    lines = ["email,name", "left@example.org,Left"] + [f"bad{n},Bad" for n in range(REPORTED + 20)]
    lines += ["good@example.org,Good", "GOOD@example.org,Again", ",nobody"]
    (tmp_path / "many.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    report = import_list(store, "alliances", tmp_path / "many.csv", rejects=rejects)
    assert (report.added, report.rejected_count, report.refused_count) == (1, REPORTED + 22, 1)
    assert len(report.rejected) == REPORTED and report.rejected[0][1] == 3
    assert report.refused == [("many.csv", 2, "left@example.org", "unsubscribed, bounced or complained before")]
    document = report.to_json()
    assert (document["rejected_count"], len(document["rejected"])) == (REPORTED + 22, REPORTED)
    written = list(csv.DictReader(rejects.open(encoding="utf-8")))
    assert len(written) == REPORTED + 23 and not (tmp_path / "rejects.csv.part").exists()
    by_line = {int(row["line"]): row for row in written}
    assert by_line[2] == {
        "line": "2",
        "email": "left@example.org",
        "reason": "not re-subscribed: unsubscribed, bounced or complained before",
        "file": "many.csv",
    }
    assert by_line[3]["email"] == "bad0" and by_line[3]["reason"].startswith("invalid address 'bad0'")
    last = REPORTED + 24
    assert by_line[last]["reason"] == f"duplicate of line {last - 1} (GOOD@example.org)"
    assert by_line[last + 1] == {"line": str(last + 1), "email": "", "reason": "no address", "file": "many.csv"}


def test_an_address_erased_at_its_request_is_not_imported_again(store, tmp_path):
    add(store, "alliances", "gone@example.org", "Gone")
    assert store.forget("gone@example.org")
    (tmp_path / "back.csv").write_text("email\nGone@example.org\nnew@example.org\n", encoding="utf-8")
    report = import_list(store, "alliances", tmp_path / "back.csv")
    assert (report.added, report.refused_count) == (1, 1)
    assert set(members(store)) == {"new@example.org"}


def test_an_interrupted_import_keeps_its_whole_batches_and_a_rerun_completes_it(store, tmp_path, monkeypatch):
    """Ctrl-C after the second batch: those rows are in, nothing of the third; run again, the list is the same as
    an import never interrupted, nobody subscribed twice, nobody who left subscribed again."""
    import newsletter.importing as importing
    from newsletter.importing import ImportInterrupted

    monkeypatch.setattr(importing, "BATCH", 10)
    add(store, "alliances", "left7@example.org", None)
    remove(store, "alliances", "left7@example.org")
    lines = ["email"] + [f"{'left' if n == 7 else 'person'}{n}@example.org" for n in range(45)] + ["bad"]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    batches = []

    def interrupt(*_):
        batches.append(1)
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(ImportInterrupted, match="rows up to line 21 are in the list .19 added") as interrupted:
        import_list(store, "alliances", tmp_path / "list.csv", progress=interrupt)
    assert interrupted.value.report.refused_count == 1
    assert len(members(store)) == 20  # two whole batches (the one who left among them)
    report = import_list(store, "alliances", tmp_path / "list.csv")
    assert (report.added, report.unchanged, report.refused_count, report.rejected_count) == (25, 19, 1, 1)
    found = members(store)
    assert len(found) == 45 and found["left7@example.org"].status == MembershipStatus.UNSUBSCRIBED
    for member in found.values():
        kinds = [event["kind"] for event in store.history(member.subscriber_id)]
        assert kinds.count("subscribed") == 1


def test_export_and_list_page_through_a_list(store, tmp_path, monkeypatch):
    """Pages of 7 members: the whole list in subscriber order, the fields as columns, --limit/--offset pages
    that add up to it, and `list --json` one JSON document."""
    import json

    from typer.testing import CliRunner

    from newsletter.cli import app

    lines = ["email,name,ville"] + [f"p{n:02d}@example.org,P {n},{'Rimouski' if n % 5 == 0 else ''}" for n in range(30)]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import_list(store, "alliances", tmp_path / "list.csv")
    remove(store, "alliances", "p03@example.org")
    list_id = store.list_id("alliances")
    assert [m.email for m in store.iter_members(list_id, page=7)] == [f"p{n:02d}@example.org" for n in range(30)]
    assert [m.email for m in store.iter_members(list_id, offset=8, limit=9, page=4)] == [
        f"p{n:02d}@example.org" for n in range(8, 17)
    ]
    assert len(list(store.iter_members(list_id, "subscribed", page=7))) == 29
    assert [m.email for m in store.iter_members(list_id, "unsubscribed")] == ["p03@example.org"]
    assert store.member_field_names(list_id) == ["ville"]
    out = io.StringIO()
    assert export_csv(store, "alliances", out, "subscribed") == 29
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    first = next(store.iter_members(list_id, "subscribed"))
    assert exported[0] == {
        "email": "p00@example.org",
        "name": "P 0",
        "status": "subscribed",
        "joined_at": first.joined_at.isoformat(),
        "opted_in_at": "",
        "confirmed_at": "",
        "tags": "",
        "lang": "",
        "ville": "Rimouski",
    }

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", str(store.engine.url.render_as_string(hide_password=False)))
    (tmp_path / "newsletter.toml").write_text('name = "Test"\n', encoding="utf-8")
    runner = CliRunner()
    pages = []
    for offset in range(0, 40, 12):
        result = runner.invoke(
            app, ["subscribers", "list", "--list", "alliances", "--json", "--limit", "12", "--offset", str(offset)]
        )
        assert result.exit_code == 0, result.output
        pages.append(json.loads(result.stdout))
    assert [len(page) for page in pages] == [12, 12, 6, 0]
    everyone = json.loads(runner.invoke(app, ["subscribers", "list", "--list", "alliances", "--json"]).stdout)
    assert [m for page in pages for m in page] == everyone and len(everyone) == 30
    assert everyone[0] == {
        "email": "p00@example.org",
        "name": "P 0",
        "status": "subscribed",
        "joined_at": first.joined_at.isoformat(),
        "lang": None,
        "fields": {"ville": "Rimouski"},
        "tags": [],
    }


def test_the_progress_bar_is_drawn_only_for_long_work():
    from newsletter.progress import ProgressBar

    quick = ProgressBar(stream=io.StringIO())
    quick(50, 100, 10)
    quick.close()
    assert quick.stream.getvalue() == ""
    slow = ProgressBar(stream=io.StringIO(), delay=0)
    slow.started -= 10  # ten seconds ago
    slow(25, 100, 1000)
    assert slow.stream.getvalue().startswith("\r[######··················]  25%  1,000 rows  100 rows/s  30 s left")
    slow(100, 100, 4000)
    slow.close()
    assert slow.stream.getvalue().endswith("100%  4,000 rows  400 rows/s   \n")
