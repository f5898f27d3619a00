"""A list of a million: `subscribers import` beside the cheapest correct import, and the memory of what reads
the list afterwards (export, list, send through null://, status), on SQLite and on PostgreSQL.

    .venv/bin/python bench/import.py [--rows 1000000] [--engines sqlite,postgresql] [--no-send] [--no-mailchimp]

1. A CSV of `rows` rows, `email,name` as people have them (some 38 MB for a million): addresses at a few
   hundred domains, accented names, one row in a thousand a duplicate by case of an earlier one and one in a
   thousand an invalid address.
2. The reference, in a process of its own: the cheapest correct import, that is email-validator on each address
   (no DNS) then executemany into a table with a unique lower-cased key, in transactions of 10,000 rows (SQLite in
   WAL mode as the store has it; on PostgreSQL the same with psycopg). Rows per second.
3. `python -m newsletter subscribers import FILE --list mil --json` on the same file in the same run: rows per
   second, the ratio to the reference (the issue asks for at least 0.5) and the peak resident memory; then the
   same import again, every row unchanged.
4. `subscribers export`, `subscribers list --json` (both to /dev/null), `list --limit 100 --offset` near the end,
   `send --no-dry-run --transport null://` to the whole list, and `status`: time and peak memory of each.
5. A Mailchimp audience export of the same number of rows (the zip Mailchimp mails: four CSVs with the layout of
   tests/fixtures/exports/README.md, 94 % subscribed, 4 % unsubscribed, 1.5 % cleaned, 0.5 % nonsubscribed; merge
   fields, consent times and IPs, tags on a third of them), imported into another list of the same store: rows per
   second beside the CSV import's of step 3 and the reference, and its peak memory; then (unless --no-send) a
   send to a segment of it (a tag or two towns: about 40 %) through null://, beside the whole-list send of step 4.

Each command is a child process; its peak memory is VmHWM from its own /proc/self/status, read as it exits (as
bench/send.py reads it): the peak of that process alone, not of this one, which forked it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import ROOT, SECRET, SLUG, mb, newsletter, workspace  # noqa: E402

FIRST_NAMES = ["Marie", "Jean", "Zoé", "François", "Noémie", "Luc", "Chloé", "Élise", "Gaëtan", "Anne"]
LOCAL_PARTS = ["marie", "jean", "zoe", "francois", "noemie", "luc", "chloe", "elise", "gaetan", "anne"]
LAST_NAMES = ["Côté", "Tremblay", "Gagnon", "Bœuf", "Thériault", "Roy", "Lévesque", "Bélanger", "Ouellet", "Pagé"]

# The reference: exactly the cheapest correct import, and nothing else. argv: csv file, database URL or file.
REFERENCE = """
import csv, sys, time
from email_validator import EmailNotValidError, validate_email
path, target = sys.argv[1], sys.argv[2]
if target.startswith("postgresql"):
    import psycopg
    database = psycopg.connect(target.replace("postgresql+psycopg://", "postgresql://", 1))
    database.execute("CREATE TABLE reference (id serial PRIMARY KEY, email text NOT NULL, "
                     "email_key text NOT NULL UNIQUE, name text)")
    database.commit()
    insert = "INSERT INTO reference (email, email_key, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
else:
    import sqlite3
    database = sqlite3.connect(target)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=NORMAL")
    database.execute("CREATE TABLE reference (id INTEGER PRIMARY KEY, email TEXT NOT NULL, "
                     "email_key TEXT NOT NULL UNIQUE, name TEXT)")
    insert = "INSERT OR IGNORE INTO reference (email, email_key, name) VALUES (?, ?, ?)"
started = time.perf_counter()
rows, batch = 0, []
with open(path, encoding="utf-8", newline="") as file:
    reader = csv.reader(file)
    next(reader)
    for email, name in reader:
        rows += 1
        try:
            address = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError:
            continue
        batch.append((address, address.lower(), name))
        if len(batch) == 10_000:
            database.cursor().executemany(insert, batch)
            database.commit()
            batch = []
database.cursor().executemany(insert, batch)
database.commit()
seconds = time.perf_counter() - started
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(rows, seconds, line.split()[1])
"""


def write_csv(path: Path, rows: int) -> None:
    """email,name rows (ASCII local parts, as nearly all are); one in a thousand a duplicate by case of the row
    500 before, one in a thousand invalid."""
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("email,name\n")
        for number in range(rows):
            first, last = FIRST_NAMES[number % 10], LAST_NAMES[number // 10 % 10]
            local = LOCAL_PARTS[number % 10]
            if number % 1000 == 999:
                address = f"{local}{number - 500}@Domaine{(number - 500) % 300}.example.ORG"
            elif number % 1000 == 998:
                address = f"{local} {number}@domaine.example.org"  # a space: invalid
            else:
                address = f"{local}{number}@domaine{number % 300}.example.org"
            file.write(f"{address},{first} {last}\n")


MAILCHIMP_FIELDS = '"Email Address","First Name","Last Name",Municipalité,Organisme,MEMBER_RATING,OPTIN_TIME,\
OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION'
MAILCHIMP_FILES = {  # file: (the columns after the common ones, the share of the rows)
    "cleaned": ("CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID", 15),
    "unsubscribed": ("UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER", 40),
    "nonsubscribed": ("LAST_CHANGED", 5),
    "subscribed": ("LAST_CHANGED", 940),
}
TOWNS = ["Rimouski", "Matane", "Amqui", "Mont-Joli", "Trois-Pistoles", "Rivière-du-Loup"]
TAGS = ['""MRC Rimouski-Neigette""', '""Rimouski""', '""MRC de La Matanie""', '""Bénévoles""']


def write_mailchimp(path: Path, rows: int) -> None:
    """A Mailchimp audience export of `rows` rows, as the zip Mailchimp mails (each CSV written to the zip as a
    stream); addresses at other domains than write_csv's, so that they are new to the store."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        number = 0
        for kind, (columns, share) in MAILCHIMP_FILES.items():
            count = rows * share // 1000 if kind != "subscribed" else rows - number
            with (
                archive.open(f"{kind}_members_export_be1c4a.csv", "w") as raw,
                io.TextIOWrapper(raw, encoding="utf-8", newline="") as file,
            ):
                file.write(f"{MAILCHIMP_FIELDS},{columns},LEID,EUID,NOTES,TAGS\n")
                for _ in range(count):
                    first, last = FIRST_NAMES[number % 10], LAST_NAMES[number // 10 % 10]
                    address = f"{LOCAL_PARTS[number % 10]}{number}@organisme{number % 300}.example.ca"
                    town = TOWNS[number % 6] if number % 5 else ""
                    ip = f"198.51.100.{number % 250}"
                    stamp = f"2021-{number % 12 + 1:02d}-{number % 28 + 1:02d} 13:02:11"
                    common = f"{address},{first},{last},{town},,2,{stamp},{ip},{stamp},{ip},,,,,,,"
                    if kind == "cleaned":
                        after = f"{stamp},Bulletin,6c5b4a3928"
                    elif kind == "unsubscribed":
                        after = f"{stamp},Bulletin,9f8e7d6c5b,Other,J'ai déménagé"
                    else:
                        after = stamp
                    tags = f'"{",".join(TAGS[number % 4 : number % 4 + 2])}"' if number % 3 == 0 else ""
                    file.write(f"{common},{after},{number},{number:x},,{tags}\n")
                    number += 1


def reference(csv_file: Path, target: str) -> tuple[int, float, int]:
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(csv_file), target], capture_output=True, text=True, check=True
    )
    rows, seconds, peak = done.stdout.split()
    return int(rows), float(seconds), int(peak)


def measure(
    engine: str,
    csv_file: Path,
    rows: int,
    url: str | None,
    reference_target: str,
    send: bool,
    mailchimp: Path | None = None,
) -> None:
    print(f"\n== {engine}")
    done, seconds, peak = reference(csv_file, reference_target)
    theirs = done / seconds
    print(
        f"reference (email-validator, executemany in transactions of 10,000): {done:,} rows in {seconds:.1f} s "
        f"= {theirs:,.0f} rows/s, peak {mb(peak)}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = workspace(Path(scratch))
        if url:
            os.environ["NEWSLETTER_DATABASE_URL"] = url
        try:
            seconds, peak, out = newsletter(
                folder,
                "subscribers",
                "import",
                str(csv_file),
                "--list",
                "mil",
                "--json",
                "--rejects",
                "rejects.csv",
                stdout=subprocess.PIPE,
            )
            report = json.loads(out)
            ours = rows / seconds
            print(
                f"subscribers import: {rows:,} rows in {seconds:.1f} s = {ours:,.0f} rows/s, peak {mb(peak)}; "
                f"{report['added']:,} added, {report['rejected_count']:,} rejected"
            )
            print(f"ratio import / reference: {ours / theirs:.2f}")
            if mailchimp is not None:
                seconds, peak, out = newsletter(
                    folder,
                    "subscribers",
                    "import",
                    str(mailchimp),
                    "--list",
                    "mc",
                    "--json",
                    "--rejects",
                    "mc-rejects.csv",
                    stdout=subprocess.PIPE,
                )
                imported = json.loads(out)
                theirs_mc = rows / seconds
                print(
                    f"Mailchimp export import: {rows:,} rows in {seconds:.1f} s = {theirs_mc:,.0f} rows/s, peak "
                    f"{mb(peak)}; {imported['added']:,} added, held {imported['held']}, "
                    f"{imported['rejected_count']:,} rejected, {imported['consent']:,} with consent evidence"
                )
                print(
                    f"ratio Mailchimp import / CSV import: {theirs_mc / ours:.2f}; / reference: "
                    f"{theirs_mc / theirs:.2f}"
                )
            seconds, peak, out = newsletter(
                folder, "subscribers", "import", str(csv_file), "--list", "mil", "--json", stdout=subprocess.PIPE
            )
            again = json.loads(out)
            print(
                f"the same import again: {seconds:.1f} s = {rows / seconds:,.0f} rows/s, peak {mb(peak)}; "
                f"{again['unchanged']:,} unchanged, {again['added']} added"
            )
            seconds, peak, _ = newsletter(folder, "subscribers", "export", "--list", "mil")
            print(f"subscribers export > /dev/null: {seconds:.1f} s, peak {mb(peak)}")
            seconds, peak, _ = newsletter(folder, "subscribers", "list", "--list", "mil", "--json")
            print(f"subscribers list --json > /dev/null: {seconds:.1f} s, peak {mb(peak)}")
            offset = report["added"] - 1000
            seconds, peak, out = newsletter(
                folder,
                "subscribers",
                "list",
                "--list",
                "mil",
                "--json",
                "--limit",
                "100",
                "--offset",
                str(offset),
                stdout=subprocess.PIPE,
            )
            print(
                f"subscribers list --json --limit 100 --offset {offset:,}: {len(json.loads(out))} members in "
                f"{seconds:.1f} s, peak {mb(peak)}"
            )
            if send:
                seconds, peak, _ = newsletter(folder, "send", SLUG, "--list", "mil")
                print(f"send (dry run): {seconds:.1f} s, peak {mb(peak)}")
                seconds, peak, out = newsletter(
                    folder,
                    "send",
                    SLUG,
                    "--list",
                    "mil",
                    "--no-dry-run",
                    "--json",
                    "--transport",
                    "null://",
                    stdout=subprocess.PIPE,
                )
                sent = json.loads(out)["sent"]
                print(
                    f"send --transport null://: {sent:,} sent in {seconds:.0f} s = {sent / seconds:,.0f} msg/s, "
                    f"peak {mb(peak)}"
                )
                seconds, peak, _ = newsletter(folder, "status", SLUG, "--list", "mil")
                print(f"status: {seconds:.1f} s, peak {mb(peak)}")
                if mailchimp is not None:
                    segment = f'tag:{TAGS[1].strip(chr(34))} or municipalite in ["Matane", "Amqui"]'
                    seconds, peak, out = newsletter(
                        folder, "send", SLUG, "--list", "mc", "--segment", segment, "--json", stdout=subprocess.PIPE
                    )
                    audience = json.loads(out)["audience"]
                    print(f"send --segment '{segment}' (dry run): {audience:,} of it, {seconds:.1f} s, peak {mb(peak)}")
                    seconds, peak, out = newsletter(
                        folder,
                        "send",
                        SLUG,
                        "--list",
                        "mc",
                        "--segment",
                        segment,
                        "--no-dry-run",
                        "--json",
                        "--transport",
                        "null://",
                        stdout=subprocess.PIPE,
                    )
                    sent = json.loads(out)["sent"]
                    print(
                        f"send --segment … --transport null://: {sent:,} sent in {seconds:.0f} s = "
                        f"{sent / seconds:,.0f} msg/s, peak {mb(peak)} (the whole list's above)"
                    )
        finally:
            os.environ.pop("NEWSLETTER_DATABASE_URL", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--no-send", dest="send", action="store_false", help="skip send and status")
    parser.add_argument("--no-mailchimp", dest="mailchimp", action="store_false", help="skip the Mailchimp export")
    arguments = parser.parse_args()
    os.environ.update(NEWSLETTER_SECRET_KEY=SECRET, NEWSLETTER_ASSET_BASE_URL="https://bench.example.org/archive")
    os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as scratch:
        csv_file = Path(scratch) / "m.csv"
        write_csv(csv_file, arguments.rows)
        print(f"{csv_file.name}: {arguments.rows:,} rows, {csv_file.stat().st_size / 1e6:.0f} MB")
        mailchimp = None
        if arguments.mailchimp:
            mailchimp = Path(scratch) / "mailchimp-export.zip"
            write_mailchimp(mailchimp, arguments.rows)
            print(f"{mailchimp.name}: {arguments.rows:,} rows, {mailchimp.stat().st_size / 1e6:.0f} MB zipped")
        engines = arguments.engines.split(",")
        if "sqlite" in engines:
            reference_file = str(Path(scratch) / "reference.db")
            measure("SQLite", csv_file, arguments.rows, None, reference_file, arguments.send, mailchimp)
        if "postgresql" in engines:
            sys.path.insert(0, str(ROOT / "tests"))
            sys.path.insert(0, str(ROOT))
            from postgres_server import PostgresServer

            from newsletter.store import Store

            try:
                server = PostgresServer().start()
            except FileNotFoundError as exc:
                print(f"PostgreSQL: skipped ({exc})")
                return
            try:
                url = server.new_database()
                Store.open(url, upgrade=True).close()
                reference_url = server.new_database()
                measure("PostgreSQL", csv_file, arguments.rows, url, reference_url, arguments.send, mailchimp)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
