"""`newsletter bounces scan` and `review`: read the bounce mailbox, decide on each message, act, and file it.

For each message of the folder: its identity (the SHA-256 of its bytes) is looked up first, and a message acted on
before is only moved (a scan stopped between its decision and its move). Otherwise it is classified
(classify.py) and matched (matching.py); then, a batch at a time in one transaction, the store records each and
applies what it says (store/bounces.py). Only then are they moved to `[bounces] processed`: a scan killed at any
point and run again counts nothing twice and loses nothing.

Nothing is ever deleted. A bounce or a complaint acted on, an auto-reply and a challenge are moved; what cannot be
classified or matched stays where it is, and `review` lists it with why; a message that cannot be parsed at all is
reported and skipped, never the end of the scan. A dry run (and `review`) decides without writing or moving.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from newsletter.bounces.classify import BounceParseError, Report, classify
from newsletter.bounces.mailbox import Mailbox, MailboxMessage, open_mailbox
from newsletter.bounces.matching import Decision, ReturnPath, decide
from newsletter.config import Config, parse_duration
from newsletter.errors import ConfigError
from newsletter.store import Store, now
from newsletter.store.bounces import ReturnedMessage
from newsletter.tokens import TokenSigner

BATCH = 100  # messages decided, then applied in one transaction: a crash makes the next scan decide them again
MOVE_EVERY = 200  # messages moved in one command: a crash leaves at most these to move again
NOT_BOUNCES = ("auto-reply", "challenge")


@dataclass(frozen=True)
class Left:
    """A message a scan left in the mailbox, and why."""

    ref: str
    subject: str
    sender: str
    date: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "subject": self.subject, "from": self.sender, "date": self.date, "why": self.why}


@dataclass
class ScanReport:
    mailbox: str
    dry_run: bool
    read: int = 0
    seen_before: int = 0  # acted on by an earlier scan (only moved now)
    decided: Counter[str] = field(default_factory=Counter)  # hard, soft, deferred, delivered, complaint, …
    changed: int = 0  # memberships changed
    moved: int = 0
    left: list[Left] = field(default_factory=list)
    unreadable: list[Left] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "dry_run": self.dry_run,
            "read": self.read,
            "seen_before": self.seen_before,
            "decided": dict(sorted(self.decided.items())),
            "memberships_changed": self.changed,
            "moved": self.moved,
            "left": [m.to_json() for m in self.left],
            "unreadable": [m.to_json() for m in self.unreadable],
        }

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        decided = ", ".join(f"{n} {kind}" for kind, n in sorted(self.decided.items())) or "nothing to act on"
        lines = [
            f"{self.mailbox}: {self.read} messages read: {decided}",
            f"{self.changed} memberships {would}changed, {self.moved} messages {would}moved",
        ]
        if self.seen_before:
            lines.append(f"{self.seen_before} had been acted on by an earlier scan (only moved now)")
        if self.left or self.unreadable:
            lines.append(
                f"{len(self.left) + len(self.unreadable)} left in the mailbox for a person to look at: "
                "`newsletter bounces review`"
            )
        return "\n".join(lines)


def scan_configured(
    config: Config,
    store: Store,
    signer: TokenSigner,
    *,
    dry_run: bool = False,
    progress: Callable[[ScanReport], None] | None = None,
) -> ScanReport:
    """Scan the mailbox newsletter.toml names (`[bounces] mailbox`)."""
    if not config.bounces.mailbox:
        raise ConfigError(
            'newsletter.toml: no [bounces] mailbox: set it to "imaps://USER@HOST/INBOX" or "maildir:///path" '
            "to read the bounces of an SMTP sender"
        )
    with open_mailbox(config.bounces.mailbox) as mailbox:
        return scan(mailbox, config, store, signer, dry_run=dry_run, progress=progress)


def scan(
    mailbox: Mailbox,
    config: Config,
    store: Store,
    signer: TokenSigner,
    *,
    dry_run: bool = False,
    at: dt.datetime | None = None,
    progress: Callable[[ScanReport], None] | None = None,
) -> ScanReport:
    """Read every message of the mailbox's folder, act on what can be, and file it (see the module's docstring)."""
    settings = config.bounces
    return_path = ReturnPath(settings.return_path) if settings.return_path else None
    soft_since = (at or now()) - dt.timedelta(seconds=parse_duration(settings.soft_window))
    report = ScanReport(mailbox.name, dry_run)
    to_move: list[str] = []

    def file(ref: str) -> None:
        to_move.append(ref)
        if len(to_move) >= MOVE_EVERY:
            flush()

    def flush() -> None:
        if to_move and not dry_run:
            mailbox.move(to_move, settings.processed)
        report.moved += len(to_move)
        to_move.clear()

    for batch in _batches(mailbox.messages(), BATCH):
        seen = store.bounce_messages_seen([identity for identity, _ in batch])
        acting: list[tuple[ReturnedMessage, str, str]] = []  # each message acted on, its ref and its label
        for identity, message in batch:
            report.read += 1
            if identity in seen:
                report.seen_before += 1
                file(message.ref)
                continue
            try:
                found = classify(message.raw)
            except BounceParseError as exc:
                report.unreadable.append(Left(message.ref, "", "", None, f"cannot be read: {exc}"))
                continue
            verdict = _decide(found, store, signer, return_path)
            if verdict.left is not None:
                report.left.append(Left(message.ref, found.subject, found.sender, found.date, verdict.left))
                continue
            label = _label(found, verdict)
            detail = {"label": label, "subject": found.subject[:200], "message_id": found.message_id}
            acting.append((ReturnedMessage(identity, found.kind, verdict.effects, detail), message.ref, label))
        if acting and not dry_run:
            changes = store.apply_bounces(
                mailbox.name,
                [returned for returned, _, _ in acting],
                soft_limit=settings.soft_limit,
                soft_since=soft_since,
            )
        else:
            changes = [0] * len(acting)
        for (_, ref, label), changed in zip(acting, changes, strict=True):
            if changed is None:  # another scan acted on it meanwhile
                report.seen_before += 1
            else:
                report.changed += changed
                report.decided[label] += 1
            file(ref)
        if progress is not None:
            progress(report)
    flush()
    return report


def _decide(found: Report, store: Store, signer: TokenSigner, return_path: ReturnPath | None) -> Decision:
    if found.kind in NOT_BOUNCES:
        return Decision()
    if found.kind == "unknown":
        return Decision(left=found.why or "not recognised as a bounce, a complaint or an auto-reply")
    return decide(found, store, signer, return_path)


def _label(found: Report, verdict: Decision) -> str:
    """What the scan counts it as: the kind of a message that is not a bounce, else its effect."""
    if not verdict.effects:
        return found.kind
    kind = verdict.effects[0].kind
    if kind == "soft-bounce" and verdict.effects[0].sender_problem:
        return "soft (sender's problem)"
    return {"bounced": "hard", "soft-bounce": "soft", "complained": "complaint"}.get(kind, kind)


def _batches(messages: Iterator[MailboxMessage], size: int) -> Iterator[list[tuple[str, MailboxMessage]]]:
    batch: list[tuple[str, MailboxMessage]] = []
    for message in messages:
        batch.append((hashlib.sha256(message.raw).hexdigest(), message))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
