"""Reading other mailers' exports (newsletter/sources.py): tests/fixtures/exports/ (its README says who is what) read
from the file, from a zip and from a folder; what each layout makes of status, fields, tags and consent; what is
refused in one line; and a large zipped export read in bounded memory."""

from __future__ import annotations

import csv
import io
import shutil
import tracemalloc
import zipfile
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.errors import NewsletterError
from newsletter.sources import ImportRow, open_export, split_tags

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
MAILCHIMP = EXPORTS / "mailchimp"
SUBSTACK = EXPORTS / "substack" / "email_list.bulletin.csv"
LISTMONK = EXPORTS / "listmonk" / "subscribers.csv"
GENERIC = EXPORTS / "csv" / "abonnes-alliances.csv"
ID = "4f1c2a9b7e"
MAILCHIMP_FILES = [
    f"{kind}_members_export_{ID}.csv" for kind in ("cleaned", "unsubscribed", "nonsubscribed", "subscribed")
]
MAILCHIMP_LEFT_OUT = ["MEMBER_RATING", "LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF", "TIMEZONE", "CC", "REGION"]
MAILCHIMP_LEFT_OUT += ["LAST_CHANGED", "LEID", "EUID", "NOTES", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID"]
MAILCHIMP_LEFT_OUT += ["CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Read:
    """An export read whole: its rows by address, its rejects, the Export itself."""

    def __init__(self, path: Path, keep: Collection[str] = ()):
        self.rejected: list[tuple[str, int, str]] = []
        self.export = open_export(path, keep=keep, on_reject=lambda *rejected: self.rejected.append(rejected))
        self.rows = list(self.export.rows())
        self.by_email = {row.email: row for row in self.rows}

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts


def zipped(folder: Path, to: Path, under: str = "") -> Path:
    """The folder as a zip, its files under `under`/ (an account export's layout)."""
    with zipfile.ZipFile(to, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, under + path.relative_to(folder).as_posix())
    return to


def comparable(rows: list[ImportRow]) -> list[tuple]:
    """The rows without their file's name (a zip's member carries its folder)."""
    return [(r.line, r.email, r.name, r.fields, r.tags, r.status, r.status_at, r.reason, r.consent) for r in rows]


# Mailchimp


def test_mailchimp_folder_gives_each_file_its_status_leaving_files_first():
    read = Read(MAILCHIMP)
    export = read.export
    assert export.kind == "mailchimp" and read.rejected == []
    assert [(f.name, f.status, f.rows, f.encoding, f.delimiter) for f in export.files] == [
        (MAILCHIMP_FILES[0], "bounced", 3, "utf-8", ","),
        (MAILCHIMP_FILES[1], "unsubscribed", 4, "utf-8", ","),
        (MAILCHIMP_FILES[2], "nonsubscribed", 2, "utf-8", ","),
        (MAILCHIMP_FILES[3], "subscribed", 8, "utf-8", ","),
    ]
    assert read.statuses() == {"bounced": 3, "unsubscribed": 4, "nonsubscribed": 2, "subscribed": 8}
    assert export.size == sum(p.stat().st_size for p in MAILCHIMP.iterdir()) == export.position()
    # The duplicate by case comes first with its leaving status, from the unsubscribed file.
    julie = [(r.file, r.status) for r in read.rows if r.email.lower() == "julie.gagnon@example.org"]
    assert julie == [(MAILCHIMP_FILES[1], "unsubscribed"), (MAILCHIMP_FILES[3], "subscribed")]
    assert {r.source for r in read.rows} == {"mailchimp"}


def test_mailchimp_subscribed_row_fields_tags_and_consent():
    marie = Read(MAILCHIMP).by_email["marie.cote@example.org"]
    assert (marie.file, marie.line, marie.name) == (MAILCHIMP_FILES[3], 2, "Marie Côté")
    assert marie.fields == {
        "Municipalité": "Rimouski",
        "Organisme": "Table des femmes",
        "first_name": "Marie",
    }
    assert marie.tags == ("MRC Rimouski-Neigette", "Rimouski")
    assert (marie.status, marie.status_at, marie.reason) == ("subscribed", None, None)
    assert marie.consent == {
        "opted_in_at": "2021-09-14T13:02:11+00:00",
        "opted_in_ip": "198.51.100.23",
        "confirmed_at": "2021-09-14T13:05:40+00:00",
        "confirmed_ip": "198.51.100.23",
        "joined_at": "2021-09-14T13:02:11+00:00",
    }


def test_mailchimp_leaving_rows_carry_when_and_why():
    read = Read(MAILCHIMP)
    julie = read.by_email["Julie.Gagnon@Example.org"]
    assert (julie.file, julie.line, julie.status) == (MAILCHIMP_FILES[1], 2, "unsubscribed")
    assert (julie.status_at, julie.reason) == (at("2023-02-02 09:15:00"), "I no longer want to receive these emails")
    pierre = read.by_email["pierre.dionne@example.org"]
    assert (pierre.status_at, pierre.reason) == (at("2022-11-30 21:40:12"), "Other: J'ai déménagé à Québec")
    assert read.by_email["andre.michaud@example.org"].reason is None
    assert read.by_email["andre.michaud@example.org"].tags == ("MRC de La Mitis",)
    gaston = read.by_email["ancien.employe@example.org"]
    assert (gaston.status, gaston.status_at, gaston.reason) == ("bounced", at("2022-04-05 10:11:12"), None)
    assert read.by_email["domaine.disparu@example.com"].tags == ("MRC de La Matapédia",)
    shop = read.by_email["client.boutique@example.com"]
    assert (shop.status, shop.status_at, shop.consent, shop.name) == ("nonsubscribed", None, {}, "Gilles Caron")


def test_mailchimp_edge_rows():
    read = Read(MAILCHIMP)
    francois = read.by_email["francois.belanger@example.org"]  # imported into Mailchimp: only CONFIRM_TIME
    assert francois.consent == {"confirmed_at": "2022-01-20T15:30:00+00:00", "joined_at": "2022-01-20T15:30:00+00:00"}
    luc = read.by_email["luc.ouellet@example.org"]
    assert luc.tags == ("MRC Rimouski-Neigette", "Comité, aviseur")
    assert "NOTES" not in luc.fields and "Ancien président du CA" not in luc.fields.values()
    assert read.by_email["noemie.theriault@example.org"].fields["Organisme"] == "Œuvre régionale"
    assert read.by_email["pas-une-adresse"].status == "subscribed"  # not validated here: the import rejects it
    emma = read.by_email["emma.roy@example.org"]
    assert (emma.name, emma.fields, emma.tags) == (None, {}, ())
    assert emma.consent == {
        "opted_in_at": "2023-06-01T11:11:11+00:00",
        "confirmed_at": "2023-06-01T11:12:00+00:00",
        "joined_at": "2023-06-01T11:11:11+00:00",
    }
    for row in read.rows:  # left out unless kept
        assert not set(row.fields) & set(MAILCHIMP_LEFT_OUT), row


def test_mailchimp_zip_reads_as_the_folder_does(tmp_path):
    folder = Read(MAILCHIMP)
    for under in ("", "audience_export_alliances/"):
        path = zipped(MAILCHIMP, tmp_path / f"export{len(under)}.zip", under)
        with zipfile.ZipFile(path, "a") as archive:  # what macOS adds when it zips a folder
            archive.writestr(f"__MACOSX/{under}._{MAILCHIMP_FILES[3]}", b"\x00\x05\x16\x07 not a CSV")
        read = Read(path)
        assert read.export.kind == "mailchimp" and read.rejected == []
        assert [f.name for f in read.export.files] == [under + name for name in MAILCHIMP_FILES]
        assert comparable(read.rows) == comparable(folder.rows)
        assert read.export.position() == read.export.size == sum(p.stat().st_size for p in MAILCHIMP.iterdir())


def test_an_unsubscribed_file_alone_never_gives_a_subscribed_row(tmp_path):
    read = Read(MAILCHIMP / MAILCHIMP_FILES[1])
    assert read.export.kind == "mailchimp"
    assert read.statuses() == {"unsubscribed": 4}
    assert [(f.name, f.status) for f in read.export.files] == [(MAILCHIMP_FILES[1], "unsubscribed")]
    assert Read(MAILCHIMP / MAILCHIMP_FILES[0]).statuses() == {"bounced": 3}
    assert Read(MAILCHIMP / MAILCHIMP_FILES[2]).statuses() == {"nonsubscribed": 2}
    # Renamed, it is still told by its UNSUB_TIME column; a subscribed one renamed cannot be told from a
    # non-subscribed one, and is refused.
    shutil.copy(MAILCHIMP / MAILCHIMP_FILES[1], tmp_path / "membres.csv")
    assert Read(tmp_path / "membres.csv").statuses() == {"unsubscribed": 4}
    shutil.copy(MAILCHIMP / MAILCHIMP_FILES[3], tmp_path / "membres.csv")
    with pytest.raises(NewsletterError, match=r"^membres\.csv: a Mailchimp export whose name does not say whom"):
        open_export(tmp_path / "membres.csv", on_reject=print)


def test_a_mailchimp_row_that_records_leaving_has_left_whatever_its_file(tmp_path):
    path = tmp_path / "subscribed_members_export_x.csv"
    path.write_text(
        '"Email Address",MEMBER_RATING,UNSUB_TIME,CLEAN_TIME\n'
        'a@example.org,2,,\nb@example.org,2,"2023-01-01 10:00:00",\nc@example.org,2,,"2023-02-02 11:00:00"\n',
        encoding="utf-8",
    )
    read = Read(path)
    assert [(r.email, r.status, r.status_at) for r in read.rows] == [
        ("a@example.org", "subscribed", None),
        ("b@example.org", "unsubscribed", at("2023-01-01 10:00:00")),
        ("c@example.org", "bounced", at("2023-02-02 11:00:00")),
    ]


def test_mailchimp_s_language_is_the_person_s_where_it_is_fr_or_en(tmp_path):
    """MC_LANGUAGE, Mailchimp's guess of each member's language in its own codes: fr_CA is fr, en en; another
    language, or none, leaves the person's unset and the row imported."""
    path = tmp_path / "subscribed_members_export_x.csv"
    path.write_text(
        '"Email Address",MC_LANGUAGE\na@example.org,fr_CA\nb@example.org,en\nc@example.org,es_ES\nd@example.org,\n',
        encoding="utf-8",
    )
    read = Read(path)
    assert [(r.email, r.lang) for r in read.rows] == [
        ("a@example.org", "fr"),
        ("b@example.org", "en"),
        ("c@example.org", None),
        ("d@example.org", None),
    ]
    assert read.rejected == []


def test_kept_columns_become_fields_and_a_column_to_keep_must_exist():
    read = Read(MAILCHIMP, keep=("MEMBER_RATING", "leid", "unsub campaign title"))
    marie = read.by_email["marie.cote@example.org"]
    assert (marie.fields["MEMBER_RATING"], marie.fields["LEID"]) == ("4", "112233401")
    assert "UNSUB_CAMPAIGN_TITLE" not in marie.fields and "LATITUDE" not in marie.fields
    julie = read.by_email["Julie.Gagnon@Example.org"]
    assert julie.fields["UNSUB_CAMPAIGN_TITLE"] == "Bulletin de février 2023"
    with pytest.raises(NewsletterError, match=r"^mailchimp: no column 'MEMBER_RATNG' to keep; the columns left out"):
        open_export(MAILCHIMP, keep=["MEMBER_RATNG"], on_reject=print)
    # A column imported anyway (a merge field, consent evidence) is no column left out: keeping it changes nothing.
    plain = Read(MAILCHIMP, keep=["Municipalité", "OPTIN_IP"]).by_email["marie.cote@example.org"]
    assert plain.fields == Read(MAILCHIMP).by_email["marie.cote@example.org"].fields


def test_two_audiences_in_one_zip_are_refused(tmp_path):
    path = tmp_path / "account.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for audience in ("alliances", "benevoles"):
            for name in MAILCHIMP_FILES:
                archive.write(MAILCHIMP / name, f"audiences/{audience}/{name}")
    with pytest.raises(NewsletterError, match=r"^account\.zip: holds the exports of more than one Mailchimp audience"):
        open_export(path, on_reject=print)


# Substack


def test_substack_email_list(tmp_path):
    read = Read(SUBSTACK)
    assert read.export.kind == "substack"
    assert read.rejected == [
        ("email_list.bulletin.csv", 8, "a Substack deletion request: this person asked to be deleted")
    ]
    assert read.statuses() == {"subscribed": 5, "unsubscribed": 2}
    assert [(r.line, r.status) for r in read.rows if r.status != "subscribed"] == [
        (4, "unsubscribed"),
        (6, "unsubscribed"),
    ]
    fidele = read.by_email["lectrice.fidele@example.org"]
    assert (fidele.name, fidele.fields, fidele.tags, fidele.status_at, fidele.reason) == (None, {}, (), None, None)
    assert fidele.consent == {"joined_at": "2021-02-03T14:15:16.171000+00:00"}
    assert read.by_email["Lecteur.Majuscule@Example.ORG"].status == "subscribed"
    assert [(f.name, f.status, f.rows) for f in read.export.files] == [("email_list.bulletin.csv", None, 8)]
    kept = Read(SUBSTACK, keep=["plan", "active_subscription"]).by_email["abonne.payant@example.org"]
    assert kept.fields == {"active_subscription": "true", "plan": "yearly"}


def test_substack_zip_and_folder_read_only_the_email_list(tmp_path):
    folder = tmp_path / "substack-export"
    (folder / "posts").mkdir(parents=True)
    shutil.copy(SUBSTACK, folder)
    (folder / "posts.csv").write_text("post_id,post_date,is_published,title\n1,2023-01-01,true,Un\n")
    (folder / "posts" / "1.bulletin.html").write_text("<p>Un</p>")
    (folder / "posts" / "1.delivers.csv").write_text("timestamp,email\n2023-01-01,x@example.org\n")
    expected = comparable(Read(SUBSTACK).rows)
    for path in (folder, zipped(folder, tmp_path / "substack.zip")):
        read = Read(path)
        assert read.export.kind == "substack" and comparable(read.rows) == expected
        assert [f.name for f in read.export.files] == ["email_list.bulletin.csv"]


# listmonk


def test_listmonk_export():
    read = Read(LISTMONK)
    assert read.export.kind == "listmonk" and read.rejected == []
    assert read.statuses() == {"subscribed": 4, "unsubscribed": 2}
    marie = read.by_email["marie.cote@example.org"]
    assert (marie.name, marie.status, marie.status_at, marie.tags) == ("Marie Côté", "subscribed", None, ())
    assert marie.fields == {
        "municipalite": "Rimouski",
        "organisme": "Table des femmes",
        "membre_depuis": "2019",
        "benevole": "true",
        "comites": '["CA", "Finances"]',
    }
    assert marie.consent == {"joined_at": "2021-09-14T13:02:11.123456+00:00"}
    blocked = read.by_email["bloque@example.org"]
    assert (blocked.status, blocked.status_at) == ("unsubscribed", datetime(2022, 12, 24, 20, 30, 0, 250000, UTC))
    paused = read.by_email["pause@example.org"]
    assert (paused.status, paused.status_at) == ("unsubscribed", at("2023-07-01 16:00:00"))
    assert paused.fields == {"Municipalité": "Amqui", "adresse": '{"ville": "Amqui", "code": "G5J 1A1"}'}
    helene = read.by_email["helene.roy@example.org"]
    assert helene.fields == {"Municipalité": "Rimouski"}
    assert helene.consent == {"joined_at": "2023-03-14T18:05:22.123456+00:00"}
    assert read.by_email["sans.nom@example.org"].name is None
    assert "uuid" not in marie.fields
    kept = Read(LISTMONK, keep=["UUID"]).by_email["marie.cote@example.org"]
    assert kept.fields["uuid"] == "0f6d1c2e-8a4b-4c3d-9e5f-1a2b3c4d5e61"


def test_listmonk_zip_and_folder(tmp_path):
    expected = comparable(Read(LISTMONK).rows)
    folder = tmp_path / "listmonk"
    folder.mkdir()
    shutil.copy(LISTMONK, folder)
    (folder / "LISEZMOI.txt").write_text("l'export de listmonk")
    for path in (folder, zipped(folder, tmp_path / "listmonk.zip")):
        read = Read(path)
        assert read.export.kind == "listmonk" and comparable(read.rows) == expected


def test_listmonk_broken_attributes_reject_a_subscription_not_a_departure(tmp_path):
    path = tmp_path / "subscribers.csv"
    path.write_text(
        "uuid,email,name,attributes,status,created_at,updated_at\n"
        "u1,a@example.org,A,{not json,enabled,2023-01-01 00:00:00 +0000 UTC,2023-01-01 00:00:00 +0000 UTC\n"
        "u2,b@example.org,B,[1],blocklisted,2023-01-01 00:00:00 +0000 UTC,0001-01-01 00:00:00 +0000 UTC\n"
        "u3,c@example.org,C,{},deleted,2023-01-01 00:00:00 +0000 UTC,2023-01-01 00:00:00 +0000 UTC\n",
        encoding="utf-8",
    )
    read = Read(path)
    assert [(r.email, r.status, r.status_at, r.fields) for r in read.rows] == [
        ("b@example.org", "unsubscribed", None, {})
    ]
    assert [(line, reason.split(" (")[0]) for _, line, reason in read.rejected] == [
        (2, "attributes that are not a JSON object"),
        (4, "unknown listmonk status 'deleted'; expected enabled, disabled or blocklisted"),
    ]


# A generic CSV


def test_generic_french_csv_with_a_status_column():
    read = Read(GENERIC)
    export = read.export
    assert export.kind == "csv"
    assert [(f.name, f.status, f.encoding, f.delimiter, f.rows) for f in export.files] == [
        ("abonnes-alliances.csv", None, "utf-8-sig", ";", 14)
    ]
    assert read.rejected == [
        (
            "abonnes-alliances.csv",
            7,
            "unknown status 'peut-être'; use subscribed, unsubscribed, bounced or complained",
        ),
        ("abonnes-alliances.csv", 9, "no address"),
    ]
    assert read.statuses() == {"subscribed": 5, "unsubscribed": 3, "bounced": 2, "complained": 1, "nonsubscribed": 1}
    assert [(r.line, r.status) for r in read.rows] == [
        (2, "subscribed"),
        (3, "subscribed"),
        (4, "unsubscribed"),
        (5, "unsubscribed"),
        (6, "bounced"),
        (8, "complained"),
        (10, "subscribed"),
        (11, "subscribed"),
        (12, "bounced"),
        (13, "subscribed"),
        (14, "unsubscribed"),
        (15, "nonsubscribed"),
    ]
    marie = read.by_email["marie.cote@example.org"]
    assert (marie.name, marie.source, marie.status_at, marie.reason) == ("Marie Côté", "csv", None, None)
    assert marie.fields == {
        "Municipalité": "Rimouski",
        "Organisme": "Table des femmes",
        "first_name": "Marie",
    }
    assert marie.tags == ("MRC Rimouski-Neigette", "Rimouski")
    assert marie.consent == {"joined_at": "2021-09-14T00:00:00+00:00"}
    assert read.by_email["francois.belanger@example.org"].tags == ("MRC de La Matanie", "Matane")
    assert read.by_email["francois.belanger@example.org"].consent == {"joined_at": "2022-01-20T15:30:00+00:00"}
    assert read.by_email["zoe.levesque@example.org"].tags == ("Bas-Saint-Laurent", "MRC de La Mitis")
    assert read.by_email["boite.pleine@example.net"].fields == {"Municipalité": "Matane"}


def test_generic_csv_from_zip_and_folder(tmp_path):
    expected = comparable(Read(GENERIC).rows)
    for path in (GENERIC.parent, zipped(GENERIC.parent, tmp_path / "abonnes.zip")):
        read = Read(path)
        assert read.export.kind == "csv" and comparable(read.rows) == expected
        assert [line for _, line, _ in read.rejected] == [7, 9]


@pytest.mark.parametrize("header", ["Email Address", "E-mail", "Adresse courriel", "email_address", "\ufeffCOURRIEL"])
def test_email_headers_as_people_write_them(tmp_path, header):
    path = tmp_path / "liste.csv"
    path.write_bytes(f'"{header}",Prénom,Statut\r\nann@example.org,Ann,Abonné·e\r\n'.encode())
    (row,) = Read(path).rows
    assert (row.email, row.status, row.fields) == (
        "ann@example.org",
        "subscribed",
        {"first_name": "Ann"},
    )


def test_generic_statuses_dates_and_consent_columns(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "email,name,status,status_at,reason,tags,joined_at,opted_in_at,opted_in_ip,Ville\n"
        'a@example.org,A,subscribed,,,"a, b",2023-03-14T18:05:22Z,2023-03-14 18:00:00-04:00,192.0.2.1,Rimouski\n'
        "b@example.org,B,unsubscribed,2024-01-02 03:04:05,trop de courriels,,14 mars 2023,,,\n"
        "c@example.org,C,subscribed,,,,14 mars 2023,,,\n"
        "d@example.org,D,,,,,,,,\n"
        "e@example.org,E,Désabonné(e)s,,,,2023/03/14,,,\n"
        "f@example.org,F,oui,,,,,,,\n",
        encoding="utf-8",
    )
    read = Read(path)
    a, b, e = read.rows
    assert (a.status, a.tags, a.fields, a.name) == ("subscribed", ("a", "b"), {"Ville": "Rimouski"}, "A")
    assert a.consent == {
        "opted_in_at": "2023-03-14T22:00:00+00:00",
        "opted_in_ip": "192.0.2.1",
        "joined_at": "2023-03-14T18:05:22+00:00",
    }
    # Someone who left is kept whatever else cannot be read; a subscription is not.
    assert (b.status, b.status_at, b.reason, b.consent) == (
        "unsubscribed",
        at("2024-01-02 03:04:05"),
        "trop de courriels",
        {},
    )
    assert (e.status, e.consent) == ("unsubscribed", {"joined_at": "2023-03-14T00:00:00+00:00"})
    assert [(line, reason) for _, line, reason in read.rejected] == [
        (4, "unreadable date '14 mars 2023' in joined_at; write it as 2023-03-14 18:05:22"),
        (5, "no status; use subscribed, unsubscribed, bounced or complained"),
        (7, "unknown status 'oui'; use subscribed, unsubscribed, bounced or complained"),
    ]


def test_a_plain_list_without_status_is_subscribed_and_a_row_that_cannot_be_read_is_rejected(tmp_path):
    path = tmp_path / "liste.csv"
    path.write_text(f'courriel;nom\na@example.org;A\n"{"x" * 200_000}";B\n\nb@example.org;B\n', encoding="utf-8")
    read = Read(path)
    assert [(r.email, r.status, r.line) for r in read.rows] == [
        ("a@example.org", "subscribed", 2),
        ("b@example.org", "subscribed", 5),
    ]
    assert [(line, reason) for _, line, reason in read.rejected] == [
        (3, "unreadable row: field larger than field limit (131072)")
    ]
    assert read.export.files[0].rows == 3


# What makes a whole file unreadable: said in one line, naming the file, before any row


def test_no_email_column_names_the_headers_found(tmp_path):
    (tmp_path / "x.csv").write_text("nom,ville\nMarie,Rimouski\n", encoding="utf-8")
    with pytest.raises(NewsletterError) as caught:
        open_export(tmp_path / "x.csv", on_reject=print)
    assert str(caught.value) == "x.csv: line 1: no email column among 'nom', 'ville'; name one email or courriel"
    # In a Mailchimp export, the file at fault is named, and nothing is read from the others first.
    folder = tmp_path / "export"
    shutil.copytree(MAILCHIMP, folder)
    (folder / MAILCHIMP_FILES[3]).write_text('"Nom","Prénom"\n', encoding="utf-8")
    with pytest.raises(
        NewsletterError, match=rf"^{MAILCHIMP_FILES[3]}: line 1: no email column among 'Nom', 'Prénom';"
    ):
        open_export(folder, on_reject=print)


def test_a_broken_bom_is_refused_before_any_row(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfemail\nann@example.org\nb\xe9b\xe9@example.org\n")
    with pytest.raises(NewsletterError) as caught:
        open_export(tmp_path / "bom.csv", on_reject=print)
    assert str(caught.value) == (
        'bom.csv: the file starts as UTF-8 (with a BOM) but byte 26 is not; save it again as "Unicode Text" or '
        '"CSV UTF-8"'
    )
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as archive:
        for name in MAILCHIMP_FILES[:3]:
            archive.write(MAILCHIMP / name, name)
        archive.writestr(MAILCHIMP_FILES[3], b"\xff\xfe" + "email\n".encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(NewsletterError, match=rf"^{MAILCHIMP_FILES[3]}: the file starts as UTF-16-LE but byte 14"):
        open_export(tmp_path / "broken.zip", on_reject=print)


def test_zips_and_folders_that_hold_no_known_export(tmp_path):
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        archive.writestr("photo.jpg", b"\xff\xd8")
    with pytest.raises(NewsletterError, match=r"^photos\.zip: no CSV file in it$"):
        open_export(tmp_path / "photos.zip", on_reject=print)
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.csv", "email\na@example.org\n")
        archive.writestr("b.csv", "email\nb@example.org\n")
    with pytest.raises(
        NewsletterError, match=r"^two\.zip: no Mailchimp or Substack export in it \(CSV files: a\.csv, b"
    ):
        open_export(tmp_path / "two.zip", on_reject=print)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(NewsletterError, match=r"^empty\.csv: the CSV file is empty$"):
        open_export(tmp_path / "empty.csv", on_reject=print)
    with pytest.raises(NewsletterError, match="cannot read"):
        open_export(tmp_path / "nowhere.csv", on_reject=print)


def test_split_tags():
    assert split_tags('"MRC Rimouski-Neigette","Rimouski"') == ["MRC Rimouski-Neigette", "Rimouski"]
    assert split_tags('"Comité, aviseur", "Rimouski"') == ["Comité, aviseur", "Rimouski"]
    assert split_tags("a; b;c") == ["a", "b", "c"]
    assert split_tags('"a;b", c') == ["a;b", "c"]
    assert split_tags("Bas-Saint-Laurent") == ["Bas-Saint-Laurent"]


# A large export


def test_a_large_zipped_export_is_read_in_bounded_memory(tmp_path):
    rows = 200_000
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, count in ((MAILCHIMP_FILES[1], rows // 10), (MAILCHIMP_FILES[3], rows - rows // 10)):
            first = (MAILCHIMP / name).read_text(encoding="utf-8").splitlines()[0]
            with archive.open(name, "w") as member, io.TextIOWrapper(member, encoding="utf-8", newline="") as text:
                writer = csv.writer(text)
                text.write(first + "\r\n")
                columns = len(next(csv.reader([first])))
                for number in range(count):
                    row = [f"abonne{number}@example.org", "Prénom", f"Nom {number}", "Rimouski", "Organisme"]
                    row += ["2", "2021-09-14 13:02:11", "198.51.100.23", "2021-09-14 13:05:40", "198.51.100.23"]
                    row += [""] * (columns - len(row) - 1) + ['"MRC Rimouski-Neigette","Rimouski"']
                    writer.writerow(row)
    size = sum(info.file_size for info in zipfile.ZipFile(path).infolist())
    assert size > 20_000_000
    counts = {"unsubscribed": 0, "subscribed": 0}
    tracemalloc.start()
    try:
        export = open_export(path, on_reject=lambda *rejected: pytest.fail(str(rejected)))
        for read in export.rows():
            counts[read.status] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts == {"unsubscribed": rows // 10, "subscribed": rows - rows // 10}
    assert export.position() == export.size == size
    assert peak < size / 40, f"peak {peak} bytes for {size} bytes of CSV"  # some 0.5 MB for 37 MB
