"""Managing a list: import from the CSV files people really have, add, remove, export.

Real lists are dirty. Import reads UTF-8 with or without a BOM, Windows-1252 (Excel's "CSV" on a French Windows)
and UTF-16 with its BOM (Excel's "Unicode Text"), separated by commas, semicolons or tabs, with headers in French
or English; it validates each address (syntax only, no DNS), merges duplicates that differ by case, and never
re-subscribes anyone who unsubscribed, bounced or complained. Every rejected row is reported with its line and
the reason.

A list of a million rows streams: the file is read a chunk at a time (once to learn its encoding, once for its
rows), the rows go to the store in transactions of BATCH, the addresses already seen (for duplicates) are kept in
a scratch SQLite file rather than in memory, and the report keeps only the first REPORTED rejected rows, the
rejects file getting every one. An interrupted import leaves the batches it committed, whole; run again, it finds
them unchanged and completes the list.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import itertools
import os
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import NewsletterError
from newsletter.store import MembershipStatus, Store, Subscription
from newsletter.transports.base import SuppressionSource, Transport

# Header names, compared without accents, case or punctuation.
EMAIL_HEADERS = {"email", "e-mail", "courriel", "adresse courriel", "adresse", "mail", "adresse email", "address"}
NAME_HEADERS = {"name", "nom complet", "full name", "nom et prenom", "fullname"}
FIRST_NAME_HEADERS = {"first name", "firstname", "prenom", "given name"}
LAST_NAME_HEADERS = {"last name", "lastname", "nom", "nom de famille", "surname", "family name"}
BATCH = 5_000  # rows per transaction: few enough that a sign-up or a send waiting for the lock waits little
REPORTED = 100  # rejected (and refused) rows a report holds; the rejects file gets every one
CHUNK = 1 << 20  # bytes read at a time
REFUSED_WHY = "unsubscribed, bounced or complained before"

Progress = Callable[[int, int, int], None]  # (bytes read, bytes in the file, rows read)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # the first: line, address, why
    rejected: list[tuple[int, str]] = field(default_factory=list)  # the first: line, reason
    refused_count: int = 0  # all of them
    rejected_count: int = 0
    encoding: str = ""
    delimiter: str = ""
    committed_line: int = 0  # every row up to this line is in the store

    def to_json(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "refused": [{"line": line, "email": email, "reason": why} for line, email, why in self.refused],
            "rejected": [{"line": line, "reason": reason} for line, reason in self.rejected],
            "refused_count": self.refused_count,
            "rejected_count": self.rejected_count,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
        }


class ImportInterrupted(NewsletterError):
    """Ctrl-C during an import: the batches committed so far stay, whole."""

    def __init__(self, report: ImportReport):
        self.report = report
        done = (
            f"the rows up to line {report.committed_line} are in the list ({report.added} added, "
            f"{report.updated} updated, {report.unchanged} unchanged)"
            if report.committed_line
            else "nothing was imported"
        )
        super().__init__(f"import interrupted: {done}; run the same command again to complete it")


class _Outcomes:
    """Where rejected and refused rows go: the first REPORTED into the report, every one into the rejects file
    (CSV: line, email, reason), written under a temporary name and renamed once complete."""

    def __init__(self, report: ImportReport, path: Path | None):
        self.report, self.path = report, path
        self.partial = path.with_name(path.name + ".part") if path else None
        self.file = None
        if self.partial is not None:
            try:
                self.file = self.partial.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise NewsletterError(f"cannot write {path}: {exc.strerror}") from None
            self.writer = csv.writer(self.file)
            self.writer.writerow(["line", "email", "reason"])

    def reject(self, line: int, reason: str, cell: str = "") -> None:
        report = self.report
        report.rejected_count += 1
        if len(report.rejected) < REPORTED:
            report.rejected.append((line, reason))
        if self.file is not None:
            self.writer.writerow([line, cell, reason])

    def refuse(self, line: int, address: str) -> None:
        report = self.report
        report.refused_count += 1
        if len(report.refused) < REPORTED:
            report.refused.append((line, address, REFUSED_WHY))
        if self.file is not None:
            self.writer.writerow([line, address, f"not re-subscribed: {REFUSED_WHY}"])

    def close(self, complete: bool) -> None:
        partial, path = self.partial, self.path
        if self.file is None or partial is None or path is None:  # no rejects file asked for
            return
        self.file.close()
        if complete:
            os.replace(partial, path)
        else:
            partial.unlink(missing_ok=True)


class _SeenAddresses:
    """The addresses an import has read, with their line: in a private scratch SQLite file, which SQLite deletes
    when it closes, so that a million of them cost disk, not memory. The batch being read is kept in a dict too,
    and a bitmap of the addresses' hashes (8 MB) spares the file a lookup for nearly every address not seen."""

    BITS = 1 << 26  # for a million addresses, one new address in 60 hits a set bit and looks in the file

    def __init__(self) -> None:
        self.database = sqlite3.connect("")  # "": a temporary file of its own, never shared
        self.database.execute("PRAGMA journal_mode=OFF")
        self.database.execute("PRAGMA synchronous=OFF")
        self.database.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        self.batch: dict[str, int] = {}
        self.bitmap = bytearray(self.BITS >> 3)

    def first_line(self, key: str, line: int) -> int | None:
        """The line where this address (lower-cased) was first read, or None when this is it (now remembered)."""
        found = self.batch.get(key)
        if found is not None:
            return found
        bit = hash(key) & (self.BITS - 1)
        if self.bitmap[bit >> 3] & (1 << (bit & 7)):
            row = self.database.execute("SELECT line FROM seen WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return row[0]
        else:
            self.bitmap[bit >> 3] |= 1 << (bit & 7)
        self.batch[key] = line
        return None

    def end_batch(self) -> None:
        self.database.executemany("INSERT INTO seen VALUES (?, ?)", self.batch.items())
        self.batch = {}

    def close(self) -> None:
        self.database.close()


def _plain(header: str) -> str:
    """'Prénom ' -> 'prenom'; 'E-mail' -> 'e-mail'; 'first_name' -> 'first name'."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode()
    return " ".join(text.lower().replace("_", " ").replace(".", " ").split())


UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def detect_encoding(stream: BinaryIO) -> tuple[str, str, int]:
    """(encoding as reported, Python codec, length of the BOM) of a CSV file: UTF-16 with its BOM (Excel's
    "Unicode Text"), UTF-8 with or without BOM, else Windows-1252.

    Reads the whole file once, a chunk at a time: a file that is not all UTF-8 is Windows-1252, which must be
    known before its first row is read; one that announces UTF-8 or UTF-16 by its BOM and breaks it is refused
    before anything is imported.
    """
    start = stream.read(3)
    if start.startswith(b"\xef\xbb\xbf"):
        reported, codec, bom = "utf-8-sig", "utf-8", 3
    elif start[:2] in UTF16_BOMS:
        reported, codec, bom = UTF16_BOMS[start[:2]], UTF16_BOMS[start[:2]], 2
    else:
        reported, codec, bom = "utf-8", "utf-8", 0
    stream.seek(bom)
    decoder = codecs.getincrementaldecoder(codec)()
    position = bom
    while True:
        chunk = stream.read(CHUNK)
        held = len(decoder.getstate()[0])  # bytes of a character the previous chunk cut in two
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            if bom == 0:
                return "cp1252", "cp1252", 0
            offset = position - held + exc.start
            form = codec.upper() if bom == 2 else "UTF-8 (with a BOM)"
            raise NewsletterError(
                f'the file starts as {form} but byte {offset} is not; save it again as "Unicode Text" or "CSV UTF-8"'
            ) from None
        if not chunk:
            return reported, codec, bom
        position += len(chunk)


def read_rows(
    stream: BinaryIO, report: ImportReport, outcomes: _Outcomes | None = None
) -> Iterator[tuple[int, str, str | None, dict]]:
    """Yield (line, address, name, other fields) for each data row of a CSV file open in binary; report rows
    without an address. The file is read as a stream: never whole in memory."""
    outcomes = outcomes or _Outcomes(report, None)
    report.encoding, codec, bom = detect_encoding(stream)
    stream.seek(bom)
    text = io.TextIOWrapper(stream, encoding=codec, errors="replace" if codec == "cp1252" else "strict", newline="")
    sample = text.read(8192)
    try:
        report.delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        report.delimiter = max(",;\t", key=sample.count)
    head = sample + text.readline()  # to the end of the line the sample cuts: the csv reader takes whole lines
    reader = csv.reader(itertools.chain(io.StringIO(head, newline=""), text), delimiter=report.delimiter)
    header = next(reader, None)
    if header is None:
        raise NewsletterError("the CSV file is empty")
    plain = [_plain(h) for h in header]
    email_column = next((i for i, h in enumerate(plain) if h in EMAIL_HEADERS), None)
    if email_column is None:
        raise NewsletterError(
            f"line 1: no email column among {', '.join(repr(h) for h in header)}; name one email or courriel"
        )

    def column(names: set[str]) -> int | None:
        return next((i for i, h in enumerate(plain) if h in names and i != email_column), None)

    name_column, first_column, last_column = column(NAME_HEADERS), column(FIRST_NAME_HEADERS), column(LAST_NAME_HEADERS)
    known = {email_column, name_column, first_column, last_column}
    other_columns = [(i, header[i].strip()) for i in range(len(header)) if i not in known]
    for row in reader:
        line = reader.line_num
        if not "".join(row).strip():
            continue
        cell = row[email_column].strip() if email_column < len(row) else ""
        if not cell:
            outcomes.reject(line, "no address")
            continue

        first, last = _cell(row, first_column), _cell(row, last_column)
        name = _cell(row, name_column) or " ".join(p for p in (first, last) if p) or None
        extra = {key: row[i].strip() for i, key in other_columns if i < len(row)}
        if first:
            extra["first_name"] = first
        yield line, cell, name, {k: v for k, v in extra.items() if k and v}


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


def import_csv(
    store: Store,
    list_slug: str,
    path: Path,
    *,
    list_name: str | None = None,
    source: str = "import",
    rejects: Path | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a CSV file into a list (created if needed, named list_name), BATCH rows per transaction; a rerun
    changes nothing, and completes an interrupted one (ImportInterrupted on Ctrl-C).

    rejects: a CSV file to write every rejected and refused row to (line, email, reason).
    progress: called after each batch with (bytes read, bytes in the file, rows read).
    """
    report = ImportReport()
    try:
        stream = path.open("rb")
        size = os.fstat(stream.fileno()).st_size
    except OSError as exc:
        raise NewsletterError(f"cannot read {path}: {exc.strerror}") from None
    outcomes = _Outcomes(report, rejects)
    seen = _SeenAddresses()
    complete = False
    batch: list[tuple[int, Subscription]] = []
    rows = 0
    file_name = path.name

    def commit() -> None:
        with store.transaction() as connection:
            list_id = store.ensure_list(list_slug, list_name, connection=connection)
            results = store.subscribe_many(list_id, [s for _, s in batch], source, connection=connection)
        for (line, subscription), result in zip(batch, results, strict=True):  # counted once committed
            if result == "refused":
                outcomes.refuse(line, subscription.email)
            else:
                setattr(report, result, getattr(report, result) + 1)
        report.committed_line = batch[-1][0]
        seen.end_batch()
        batch.clear()
        if progress is not None:
            progress(stream.tell(), size, rows)

    try:
        with stream:
            for line, cell, name, extra in read_rows(stream, report, outcomes):
                rows += 1
                try:
                    address = normalize_address(cell)
                except ValueError as exc:
                    outcomes.reject(line, f"invalid address '{cell}': {exc}", cell)
                    continue
                first = seen.first_line(address.lower(), line)
                if first is not None:
                    outcomes.reject(line, f"duplicate of line {first} ({address})", cell)
                    continue
                subscription = Subscription(address, clean_name(name), extra, {"file": file_name, "line": line})
                batch.append((line, subscription))
                if len(batch) == BATCH:
                    commit()
            if batch:
                commit()
            complete = True
    except KeyboardInterrupt:
        raise ImportInterrupted(report) from None
    finally:
        seen.close()
        outcomes.close(complete)
    if progress is not None:
        progress(size, size, rows)
    return report


def add(
    store: Store, list_slug: str, address: str, name: str | None, *, list_name: str | None = None, source: str = "cli"
) -> str:
    """Subscribe one address to a list (created if needed, named list_name); return added, updated, unchanged or
    refused."""
    try:
        normalized = normalize_address(address)
    except ValueError as exc:
        raise NewsletterError(f"'{address}' is not a valid address: {exc}") from None
    with store.transaction() as connection:
        list_id = store.ensure_list(list_slug, list_name, connection=connection)
        return store.subscribe(list_id, normalized, clean_name(name), {}, source, connection=connection)


def remove(store: Store, list_slug: str, address: str, *, source: str = "cli") -> bool:
    """Mark an address unsubscribed from a list (the record and its history stay); False if it already was."""
    list_id = store.list_id(list_slug)
    with store.transaction() as connection:
        subscriber_id = store.find_subscriber(address.strip(), connection=connection)
        if subscriber_id is None:
            raise NewsletterError(f"{address} is not on any list")
        unsubscribed = MembershipStatus.UNSUBSCRIBED
        return store.set_status(subscriber_id, list_id, unsubscribed, source, connection=connection)


@dataclass
class SyncReport:
    seen: int = 0
    changed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"seen": self.seen, "changed": self.changed, "kinds": self.kinds}


async def sync_suppressions(store: Store, transport: Transport, *, list_id: int | None = None) -> SyncReport:
    """Apply a provider's suppression list to the store: bounces and complaints to every list of each address,
    unsubscribes to the list `list_id` (the one sent through this provider) or, without it, to every list.

    For people who run no server to receive webhooks; running it again changes nothing more.
    """
    if not isinstance(transport, SuppressionSource):
        raise NewsletterError(
            f"{transport.scheme}:// keeps no suppression list that newsletter can read; run `newsletter serve` "
            "and configure the provider's webhooks instead"
        )
    report = SyncReport()
    async for event in transport.suppressions():
        report.seen += 1
        report.kinds[event.kind] = report.kinds.get(event.kind, 0) + 1
        detail = {"provider": transport.scheme, "detail": event.detail}
        scope = list_id if event.kind == "unsubscribed" else None
        report.changed += await asyncio.to_thread(
            store.apply_event, event.kind, event.email, None, "sync", detail, list_id=scope
        )
    return report


EXPORT_COLUMNS = ["email", "name", "status"]


def export_csv(
    store: Store,
    list_slug: str,
    out: TextIO,
    status: str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write a list as UTF-8 CSV (email, name, status, then the other fields); return how many rows.

    Two streaming passes (the field names first, reading only the fields), so a list of any size never sits in
    memory. progress: called every few thousand rows with (rows written, rows in all).
    """
    list_id = store.list_id(list_slug)
    extra_keys = store.member_field_names(list_id, status)
    total = store.count_members(list_id, status) if progress is not None else 0
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS + extra_keys)
    count = 0
    for member in store.iter_members(list_id, status):
        fields = member.fields
        writer.writerow([member.email, member.name or "", member.status] + [fields.get(k, "") for k in extra_keys])
        count += 1
        if progress is not None and not count % 5000:
            progress(count, total)
    if progress is not None:
        progress(count, total)
    return count
