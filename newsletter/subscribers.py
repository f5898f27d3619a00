"""Managing a list: import from the CSV files people really have, add, remove, export.

Real lists are dirty. Import reads UTF-8 with or without a BOM, Windows-1252 (Excel's "CSV" on a French Windows)
and UTF-16 with its BOM (Excel's "Unicode Text"), separated by commas, semicolons or tabs, with headers in French
or English; it validates each address (syntax only, no DNS), merges duplicates that differ by case, and never
re-subscribes anyone who unsubscribed, bounced or complained. Every rejected row is reported with its line and
the reason.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.addresses import normalize_address
from newsletter.errors import NewsletterError
from newsletter.store import Store
from newsletter.transports.base import SuppressionSource, Transport

# Header names, compared without accents, case or punctuation.
EMAIL_HEADERS = {"email", "e-mail", "courriel", "adresse courriel", "adresse", "mail", "adresse email", "address"}
NAME_HEADERS = {"name", "nom complet", "full name", "nom et prenom", "fullname"}
FIRST_NAME_HEADERS = {"first name", "firstname", "prenom", "given name"}
LAST_NAME_HEADERS = {"last name", "lastname", "nom", "nom de famille", "surname", "family name"}
BATCH = 500


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # line, address, why (unsubscribed…)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # line, reason
    encoding: str = ""
    delimiter: str = ""

    def to_json(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "refused": [{"line": line, "email": email, "reason": why} for line, email, why in self.refused],
            "rejected": [{"line": line, "reason": reason} for line, reason in self.rejected],
            "encoding": self.encoding,
            "delimiter": self.delimiter,
        }


def _plain(header: str) -> str:
    """'Prénom ' -> 'prenom'; 'E-mail' -> 'e-mail'; 'first_name' -> 'first name'."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode()
    return " ".join(text.lower().replace("_", " ").replace(".", " ").split())


UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def decode(data: bytes) -> tuple[str, str]:
    """Text and encoding of a CSV file: UTF-16 with its BOM (Excel's "Unicode Text"), UTF-8 with or without BOM,
    else Windows-1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if (encoding := UTF16_BOMS.get(data[:2])) is not None:
        try:
            return data[2:].decode(encoding), encoding
        except UnicodeDecodeError as exc:
            raise NewsletterError(
                f"the file starts as {encoding.upper()} but byte {exc.start + 2} is not; save it again as "
                '"Unicode Text" or "CSV UTF-8"'
            ) from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "cp1252"


def read_rows(data: bytes, report: ImportReport) -> Iterator[tuple[int, str, str | None, dict]]:
    """Yield (line, address, name, other fields) for each data row; report rows without an address."""
    text, report.encoding = decode(data)
    sample = text[:8192]
    try:
        report.delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        report.delimiter = max(",;\t", key=sample.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=report.delimiter)
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
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cell = row[email_column].strip() if email_column < len(row) else ""
        if not cell:
            report.rejected.append((line, "no address"))
            continue

        first, last = _cell(row, first_column), _cell(row, last_column)
        name = _cell(row, name_column) or " ".join(p for p in (first, last) if p) or None
        extra = {header[i].strip(): row[i].strip() for i in range(min(len(header), len(row))) if i not in known}
        if first:
            extra["first_name"] = first
        yield line, cell, name, {k: v for k, v in extra.items() if k and v}


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


def import_csv(
    store: Store, list_slug: str, path: Path, *, list_name: str | None = None, source: str = "import"
) -> ImportReport:
    """Import a CSV file into a list (created if needed, named list_name), in batches; a rerun changes nothing."""
    report = ImportReport()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NewsletterError(f"cannot read {path}: {exc.strerror}") from None
    seen: dict[str, int] = {}
    rows = []
    for line, cell, name, extra in read_rows(data, report):
        try:
            address = normalize_address(cell)
        except ValueError as exc:
            report.rejected.append((line, f"invalid address '{cell}': {exc}"))
            continue
        if address.lower() in seen:
            report.rejected.append((line, f"duplicate of line {seen[address.lower()]} ({address})"))
            continue
        seen[address.lower()] = line
        rows.append((line, address, name, extra))
    for batch in _batches(rows, BATCH):
        with store.transaction() as connection:
            list_id = store.ensure_list(connection, list_slug, list_name)
            for line, address, name, extra in batch:
                result = store.subscribe(
                    connection, list_id, address, name, extra, source, {"file": path.name, "line": line}
                )
                if result == "refused":
                    report.refused.append((line, address, "unsubscribed, bounced or complained before"))
                else:
                    setattr(report, result, getattr(report, result) + 1)
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
        list_id = store.ensure_list(connection, list_slug, list_name)
        return store.subscribe(connection, list_id, normalized, name, {}, source)


def remove(store: Store, list_slug: str, address: str, *, source: str = "cli") -> bool:
    """Mark an address unsubscribed from a list (the record and its history stay); False if it already was."""
    list_id = store.list_id(list_slug)
    with store.transaction() as connection:
        subscriber_id = store.find_subscriber(connection, address.strip())
        if subscriber_id is None:
            raise NewsletterError(f"{address} is not on any list")
        return store.set_status(connection, subscriber_id, list_id, "unsubscribed", source)


@dataclass
class SyncReport:
    seen: int = 0
    changed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"seen": self.seen, "changed": self.changed, "kinds": self.kinds}


async def sync_suppressions(store: Store, transport: Transport | SuppressionSource) -> SyncReport:
    """Apply a provider's suppression list (bounces, complaints, unsubscribes) to every list of each address.

    For people who run no server to receive webhooks; running it again changes nothing more.
    """
    suppressions = getattr(transport, "suppressions", None)
    if suppressions is None:
        raise NewsletterError(
            f"{transport.scheme}:// keeps no suppression list that newsletter can read; run `newsletter serve` "
            "and configure the provider's webhooks instead"
        )
    report = SyncReport()
    async for event in suppressions():
        report.seen += 1
        report.kinds[event.kind] = report.kinds.get(event.kind, 0) + 1
        detail = {"provider": transport.scheme, "detail": event.detail}
        report.changed += store.apply_event(event.kind, event.email, None, "sync", detail)
    return report


EXPORT_COLUMNS = ["email", "name", "status"]


def export_csv(store: Store, list_slug: str, out: io.TextIOBase, status: str | None = None) -> int:
    """Write a list as UTF-8 CSV (email, name, status, then the other fields); return how many rows.

    Two streaming passes (the field names first), so a list of any size never sits in memory.
    """
    list_id = store.list_id(list_slug)
    extra_keys: dict[str, None] = {}
    for member in store.members(list_id, status):
        extra_keys.update(dict.fromkeys(member.fields))
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS + list(extra_keys))
    count = 0
    for member in store.members(list_id, status):
        writer.writerow(
            [member.email, member.name or "", member.status] + [member.fields.get(k, "") for k in extra_keys]
        )
        count += 1
    return count


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
