"""Importing a list: a CSV file, or another mailer's whole export (Mailchimp, Substack, listmonk), read by sources.py
into rows that carry each person's status, fields, tags and consent, and written to the store in batches.

The rule that holds whatever the file says: an import never subscribes anyone whom the store or the file records as
having left, bounced or complained. A row that says they left records it (a new person is held, never mailed; a
subscribed member is unsubscribed, bounced or marked complained); a subscribed row of someone the store records as
having left is refused, and counted. Importing the same file again changes nothing.

A list of a million rows streams: the file is read a chunk at a time, the rows go to the store in transactions of
BATCH, the addresses already seen (for duplicates) are kept in a scratch SQLite file rather than in memory, and the
report keeps only the first REPORTED rejected rows, the rejects file getting every one. An interrupted import leaves
the batches it committed, whole; run again, it finds them unchanged and completes the list. A dry run does all of it
in transactions that are rolled back: the report is what the import would do, and nothing is written.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import NewsletterError
from newsletter.fields import distinct_tags
from newsletter.sources import ImportRow, open_export
from newsletter.store import MembershipStatus, Store, Subscription
from newsletter.tokens import ip_hash

if TYPE_CHECKING:
    from newsletter.sending.welcome import WelcomeIssue

BATCH = 5_000  # rows per transaction: few enough that a sign-up or a send waiting for the lock waits little
REPORTED = 100  # rejected (and refused) rows a report holds; the rejects file gets every one
REFUSED_WHY = "unsubscribed, bounced or complained before"
# Statuses a later row of the same address wins with over an earlier subscribed one: who left stays gone.
WINS_OVER_SUBSCRIBED = (MembershipStatus.UNSUBSCRIBED, MembershipStatus.BOUNCED, MembershipStatus.COMPLAINED)

Progress = Callable[[int, int, int], None]  # (bytes read, bytes in the file, rows read)


@dataclass
class ImportReport:
    source: str = "csv"  # mailchimp, substack, listmonk, csv
    dry_run: bool = False
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    held: Counter = field(default_factory=Counter)  # new people recorded as having left, by status: never mailed
    left: Counter = field(default_factory=Counter)  # subscribed members the file says left, now with that status
    refused: list[tuple[str, int, str, str]] = field(default_factory=list)  # the first: file, line, address, why
    rejected: list[tuple[str, int, str]] = field(default_factory=list)  # the first: file, line, reason
    refused_count: int = 0  # all of them
    rejected_count: int = 0
    consent: int = 0  # rows whose consent evidence (opt-in, confirmation) went into the event log
    ips_left_out: bool = False  # the file had consent IPs, and no NEWSLETTER_SECRET_KEY to hash them with
    files: list[dict] = field(default_factory=list)  # each file read: name, status, encoding, delimiter, rows
    encoding: str = ""  # the first file's
    delimiter: str = ""
    committed_line: int = 0  # every row up to this line (of the file being read) is in the store
    welcomed: int = 0  # added people whose welcome email was queued (import --welcome)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "held": dict(self.held),
            "left": dict(self.left),
            "refused": [
                {"file": file, "line": line, "email": email, "reason": why} for file, line, email, why in self.refused
            ],
            "rejected": [{"file": file, "line": line, "reason": reason} for file, line, reason in self.rejected],
            "refused_count": self.refused_count,
            "rejected_count": self.rejected_count,
            "consent": self.consent,
            "ips_left_out": self.ips_left_out,
            "files": self.files,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "welcomed": self.welcomed,
        }

    def summary(self, list_slug: str) -> str:
        """One line: what the import did (or would do)."""
        parts = [f"{self.added} added", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        held = sum(self.held.values())
        if held:
            parts.append(f"{held} recorded as not subscribed ({_counts(self.held)}), never mailed")
        left = sum(self.left.values())
        if left:
            parts.append(f"{left} who had left now off the list ({_counts(self.left)})")
        parts += [f"{self.refused_count} not re-subscribed", f"{self.rejected_count} rejected"]
        if self.consent:
            parts.append(f"{self.consent} with their consent recorded")
        if self.welcomed:
            parts.append(f"{self.welcomed} welcome emails queued")
        would = " (dry run: nothing written)" if self.dry_run else ""
        return f"{list_slug}: {', '.join(parts)}{would}"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(counter.items()))


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
    (CSV: line, email, reason; and the file, for an export of several), written under a temporary name and renamed
    once complete."""

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
            self.writer.writerow(["line", "email", "reason", "file"])

    def reject(self, line: int, reason: str, cell: str = "", file: str = "") -> None:
        report = self.report
        report.rejected_count += 1
        if len(report.rejected) < REPORTED:
            report.rejected.append((file, line, reason))
        if self.file is not None:
            self.writer.writerow([line, cell, reason, file])

    def refuse(self, line: int, address: str, file: str = "") -> None:
        report = self.report
        report.refused_count += 1
        if len(report.refused) < REPORTED:
            report.refused.append((file, line, address, REFUSED_WHY))
        if self.file is not None:
            self.writer.writerow([line, address, f"not re-subscribed: {REFUSED_WHY}", file])

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
    """The addresses an import has read, with where and how: in a private scratch SQLite file, which SQLite deletes
    when it closes, so that a million of them cost disk, not memory. The batch being read is kept in a dict too,
    and a bitmap of the addresses' hashes (8 MB) spares the file a lookup for nearly every address not seen."""

    BITS = 1 << 26  # for a million addresses, one new address in 60 hits a set bit and looks in the file

    def __init__(self) -> None:
        self.database = sqlite3.connect("")  # "": a temporary file of its own, never shared
        self.database.execute("PRAGMA journal_mode=OFF")
        self.database.execute("PRAGMA synchronous=OFF")
        self.database.execute(
            "CREATE TABLE seen (key TEXT PRIMARY KEY, place TEXT NOT NULL, status TEXT NOT NULL) WITHOUT ROWID"
        )
        self.batch: dict[str, tuple[str, str]] = {}
        self.bitmap = bytearray(self.BITS >> 3)

    def first(self, key: str, place: str, status: str) -> tuple[str, str] | None:
        """(where, status) this address (lower-cased) was first read, or None when this is it (now remembered)."""
        found = self.batch.get(key)
        if found is not None:
            return found
        bit = hash(key) & (self.BITS - 1)
        if self.bitmap[bit >> 3] & (1 << (bit & 7)):
            row = self.database.execute("SELECT place, status FROM seen WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return row[0], row[1]
        else:
            self.bitmap[bit >> 3] |= 1 << (bit & 7)
        self.batch[key] = (place, status)
        return None

    def now_status(self, key: str, status: str) -> None:
        """A later row of the address won (it left): remember that status for the rows after it."""
        if key in self.batch:
            self.batch[key] = (self.batch[key][0], status)
        else:
            self.database.execute("UPDATE seen SET status = ? WHERE key = ?", (status, key))

    def end_batch(self) -> None:
        self.database.executemany("INSERT INTO seen VALUES (?, ?, ?)", [(k, *v) for k, v in self.batch.items()])
        self.batch = {}

    def close(self) -> None:
        self.database.close()


class _Rollback(Exception):
    """A dry run's batch, undone: its results carried out of the transaction."""

    def __init__(self, results: list[str], welcomed: int):
        self.results, self.welcomed = results, welcomed


def import_list(
    store: Store,
    list_slug: str,
    path: Path,
    *,
    list_name: str | None = None,
    source: str = "import",
    rejects: Path | None = None,
    progress: Progress | None = None,
    keep: Collection[str] = (),
    dry_run: bool = False,
    ip_key: bytes | None = None,
    welcome: WelcomeIssue | None = None,
) -> ImportReport:
    """Import a CSV file, a mailer's export (.zip or folder) into a list (created if needed, named list_name),
    BATCH rows per transaction; a rerun changes nothing, and completes an interrupted one (ImportInterrupted on
    Ctrl-C).

    rejects: a CSV file to write every rejected and refused row to (line, email, reason, file).
    progress: called after each batch with (bytes read, bytes in all the files, rows read).
    keep: columns left out by default (Mailchimp's MEMBER_RATING…) to import as fields.
    ip_key: the key consent IPs are hashed with (the sign-up's keyed hash); None leaves them out.
    welcome: the list's welcome email (sending/welcome.py), queued for everyone the import adds to the list (never
    for those already on it), in the batch's transaction; None (the default): nobody is welcomed.
    """
    report = ImportReport(dry_run=dry_run)
    outcomes = _Outcomes(report, rejects)
    seen = _SeenAddresses()
    complete = False
    batch: list[tuple[ImportRow, Subscription]] = []
    rows = 0
    export = open_export(path, keep=keep, on_reject=lambda file, line, reason: outcomes.reject(line, reason, "", file))
    report.source = export.kind

    def commit() -> None:
        subscriptions = [s for _, s in batch]
        welcomed = 0
        try:
            with store.transaction() as connection:
                list_id = store.ensure_list(list_slug, list_name, connection=connection)
                results = store.subscribe_many(list_id, subscriptions, source, connection=connection)
                if welcome is not None:  # whoever this batch added, with it: nobody added without their welcome
                    added = [s for s, result in zip(subscriptions, results, strict=True) if result == "added"]
                    emails = [s.email for s in added]
                    welcomed = sum(welcome.queue(store, list_id, emails, connection=connection).values())
                if dry_run:
                    raise _Rollback(results, welcomed)
        except _Rollback as undone:
            results, welcomed = undone.results, undone.welcomed
        report.welcomed += welcomed
        for (row, subscription), result in zip(batch, results, strict=True):  # counted once committed
            if result == "refused":
                outcomes.refuse(row.line, subscription.email, row.file)
            elif result == "held":
                report.held[subscription.status] += 1
            elif result == "left":
                report.left[subscription.status] += 1
            else:
                setattr(report, result, getattr(report, result) + 1)
            if result in ("added", "updated", "held") and "consent" in subscription.detail:
                report.consent += 1
        report.committed_line = batch[-1][0].line
        seen.end_batch()
        batch.clear()
        if progress is not None:
            progress(export.position(), export.size, rows)

    try:
        for row in export.rows():
            rows += 1
            try:
                address = normalize_address(row.email)
            except ValueError as exc:
                outcomes.reject(row.line, f"invalid address '{row.email}': {exc}", row.email, row.file)
                continue
            key = address.lower()
            place = f"{row.file}:{row.line}" if len(export.files) > 1 else f"line {row.line}"
            first = seen.first(key, place, row.status)
            if first is not None:
                where, status = first
                if not (row.status in WINS_OVER_SUBSCRIBED and status == MembershipStatus.SUBSCRIBED):
                    outcomes.reject(row.line, f"duplicate of {where} ({address})", row.email, row.file)
                    continue
                if key in seen.batch:  # the subscribed row is in this batch: it goes first, then this one
                    commit()
                seen.now_status(key, row.status)
            batch.append((row, _subscription(row, address, ip_key, report)))
            if len(batch) == BATCH:
                commit()
        if batch:
            commit()
        complete = True
    except KeyboardInterrupt:
        raise ImportInterrupted(report) from None
    finally:
        seen.close()
        outcomes.close(complete and not dry_run)
        report.files = [vars(f).copy() for f in export.files]
        if export.files:
            report.encoding, report.delimiter = export.files[0].encoding, export.files[0].delimiter
    if progress is not None:
        progress(export.size, export.size, rows)
    return report


def _subscription(row: ImportRow, address: str, ip_key: bytes | None, report: ImportReport) -> Subscription:
    """The store's row for a file's: where it came from, the consent it records (IPs as keyed hashes), why they
    left."""
    detail: dict = {"file": row.file, "line": row.line}
    if row.source != "csv":
        detail["from"] = row.source
    consent = {k: v for k, v in row.consent.items() if not k.endswith("_ip")}
    for name in ("opted_in_ip", "confirmed_ip"):
        if row.consent.get(name):
            if ip_key is None:
                report.ips_left_out = True
            else:
                consent[f"{name}_hash"] = ip_hash(ip_key, row.consent[name].strip())  # as a sign-up's
    if consent:
        detail["consent"] = consent
    if row.reason:
        detail["reason"] = row.reason
    if row.status != MembershipStatus.SUBSCRIBED and row.status_at is not None:
        detail["at"] = row.status_at.isoformat()
    return Subscription(
        address,
        clean_name(row.name),
        row.fields,
        detail,
        status=row.status,
        tags=tuple(distinct_tags(row.tags)),
        joined_at=_joined(row.consent),
        status_at=row.status_at,
        lang=row.lang,
    )


def _joined(consent: dict[str, str]) -> dt.datetime | None:
    """When they joined, by the file: confirmed, else opted in, else the date it gives."""
    for name in ("confirmed_at", "opted_in_at", "joined_at"):
        text = consent.get(name)
        if text:
            try:
                moment = dt.datetime.fromisoformat(text)
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return None


def consent_key() -> bytes | None:
    """The key consent IPs are hashed with: NEWSLETTER_SECRET_KEY's, as the sign-up form's; None without it."""
    if not os.environ.get("NEWSLETTER_SECRET_KEY"):
        return None
    from newsletter.tokens import TokenSigner

    return TokenSigner.from_environment(required=True).key
