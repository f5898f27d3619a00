"""Why did someone not get it? What became of one person's copy of each recent campaign of their lists: sent (when,
the provider's id), deferred (tried again: how often, the last error, the next try), failed, bounced, soft-bounced,
complained, unsubscribed, skipped (no longer subscribed when its turn came), or not in the audience and why (joined
after it started, not subscribed then, outside its segment, had that content already); with their memberships.

`newsletter delivery ADDRESS` prints it and the MCP tool `delivery_report` answers with its JSON, both through
delivery_report below. The store (store/deliveries.py) gives the facts in a handful of indexed queries; this module
reads them: the ledger row of each campaign, the person's status on its list at its start (from the event log),
and the reports that came after a message left (bounces, complaints, delays, unsubscribes), each tied to the
campaign it names (its detail's "campaign", or the provider's message id), else to the latest campaign sent to
the person before it, shown as probable.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from newsletter.addresses import normalize_address
from newsletter.errors import NewsletterError
from newsletter.sending.frozen import frozen_segment
from newsletter.sending.send import shown
from newsletter.sending.wiring import open_store
from newsletter.store import CampaignStatus, DeliveryStatus, MembershipStatus, PersonDeliveries, Store
from newsletter.store.deliveries import CampaignFact, EventFact, LedgerFact
from newsletter.workspace import Workspace

DEFAULT_LIMIT = 10

# What became of a person's copy of a campaign (CampaignLine.status), in the words the text shows.
STATUS_WORDS = {
    "sent": "sent",
    "queued": "not sent yet",
    "deferred": "deferred",
    "cancelled": "never sent",
    "failed": "failed",
    "bounced": "bounced",
    "soft-bounced": "soft-bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
    "skipped": "skipped",
    "not-in-audience": "not in the audience",
}
# The reports about a message after it left, strongest first: the one that names a sent copy's status.
# "hard-bounce": a hard bounce of someone the list no longer mailed (store/bounces.py: no status changed).
AFTER_KINDS = ("complained", "bounced", "hard-bounce", "unsubscribed", "soft-bounce", "deferred")
_STATUS_OF_KIND = {"soft-bounce": "soft-bounced", "hard-bounce": "bounced"}
_KIND_WORDS = {
    "complained": "complained (marked it as spam)",
    "bounced": "bounced",
    "hard-bounce": "bounced",
    "unsubscribed": "unsubscribed",
    "soft-bounce": "soft-bounced",
    "deferred": "delayed by the receiving server",
}
# Reports about a message (not about a list): tied to the latest copy sent on any list, and one per instant
# (a report without our key changes every list of the address, one event each).
_MAIL_KINDS = ("complained", "bounced", "hard-bounce", "soft-bounce", "deferred")
_SAME_REPORT = dt.timedelta(seconds=5)  # its events on several lists, written one after another
# How a change came, in the text's words (events.source).
_HOW = {
    "one-click": "one-click from the mail program",
    "page": "the unsubscribe page",
    "sync": "the provider's suppression list",
    "import": "an import",
    "cli": "at a terminal",
    "send": "refused while sending",
    "bounce-mail": "a bounce message",
    "double-opt-in": "a confirmed sign-up",
    "form": "the sign-up form",
}
_SET_BY_HAND = ("import", "cli", "double-opt-in", "form")  # changes of a list, not reports about a message
_MEMBERSHIP_KINDS = frozenset(MembershipStatus)
_STATUS_THEN: dict[str, str] = {
    MembershipStatus.UNCONFIRMED: "signed up, not confirmed",
    MembershipStatus.NONSUBSCRIBED: "never opted in",
}
_ENHANCED_CODE = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")  # RFC 3463: 5.1.1


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _how(source: str, detail: dict) -> str:
    if source == "webhook":
        return f"reported by {detail['provider']}" if detail.get("provider") else "reported by the provider"
    if source == "import" and detail.get("file"):
        return f"an import, {detail['file']}:{detail.get('line', '?')}"
    return _HOW.get(source, source)


@dataclass(frozen=True)
class Happening:
    """A report about a copy after it left: a bounce, a complaint, a delay, an unsubscription."""

    kind: str  # bounced, complained, soft-bounce, deferred, unsubscribed
    at: dt.datetime
    source: str  # events.source: bounce-mail, webhook, sync, send, one-click, page
    probable: bool  # tied by time only: the latest copy sent to the person before it
    how: str
    status: str | None = None  # the enhanced status code (RFC 3463), 5.1.1
    diagnostic: str | None = None  # the server's (or the provider's) words
    feedback_type: str | None = None  # a complaint's (RFC 5965): abuse, fraud, …
    sender_problem: bool = False  # a soft bounce the receiving server blames on the sender, not the address

    @classmethod
    def of(cls, event: EventFact, probable: bool) -> Happening:
        detail = event.detail
        words = detail.get("diagnostic") or detail.get("reason") or detail.get("detail")
        diagnostic = " ".join(words.split()) if isinstance(words, str) and words.strip() else None
        status = detail.get("status")
        if not isinstance(status, str) or not status:
            found = _ENHANCED_CODE.search(diagnostic or "")
            status = found.group(0) if found else None
        feedback = detail.get("feedback_type")
        return cls(
            event.kind,
            event.at,
            event.source,
            probable,
            _how(event.source, detail),
            status,
            diagnostic,
            feedback if isinstance(feedback, str) else None,
            detail.get("sender_problem") is True,
        )

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"kind": self.kind, "at": _iso(self.at), "source": self.source}
        document["probable"] = self.probable
        for name in ("status", "diagnostic", "feedback_type"):
            if getattr(self, name):
                document[name] = getattr(self, name)
        if self.sender_problem:
            document["sender_problem"] = True
        return document

    def text(self, zone: dt.tzinfo | None, error: str | None = None) -> str:
        line = f"{_KIND_WORDS.get(self.kind, self.kind)} {shown(self.at, zone)} ({self.how})"
        said = " ".join(
            part
            for part in (
                self.status if self.status and self.status not in (self.diagnostic or "") else None,
                f'"{self.diagnostic}"' if self.diagnostic and self.diagnostic != error else None,
                f"(feedback type {self.feedback_type})" if self.feedback_type else None,
            )
            if part
        )
        if said:
            line += f": {said}"
        if self.probable:
            line += ", probably from this campaign"
        if self.sender_problem:
            line += "; the receiving server objects to the sender, not to the address"
        return line


@dataclass(frozen=True)
class Reason:
    """Why a person's copy was skipped, or why they were not in a campaign's audience.

    code: joined-after (at: when they joined the list), not-subscribed (status, since at, source: how), outside-
    segment, had-it-already (campaign: the earlier one of the same content), no-longer-subscribed (a skipped copy:
    status, at, source), not-on-list, unknown."""

    code: str
    status: str | None = None
    at: dt.datetime | None = None
    source: str | None = None
    how: str | None = None
    campaign: int | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"code": self.code}
        for name in ("status", "source", "campaign"):
            if getattr(self, name) is not None:
                document[name] = getattr(self, name)
        if self.at is not None:
            document["at"] = _iso(self.at)
        return document

    def text(self, zone: dt.tzinfo | None, segment: dict | None) -> str:
        when = shown(self.at, zone)
        how = f" ({self.how})" if self.how else ""
        status = _STATUS_THEN.get(self.status or "", self.status)
        if self.code == "joined-after":
            return f"joined the list {when}, after it started"
        if self.code == "not-subscribed":
            return f"not subscribed when it started: {status} since {when}{how}"
        if self.code == "no-longer-subscribed":
            return f"no longer subscribed when its turn came: {status} {when}{how}"
        if self.code == "outside-segment":
            expression = f" ({segment['expression']})" if segment else ""
            return f"outside its segment{expression}"
        if self.code == "had-it-already":
            return f"had this issue already, from campaign {self.campaign}"
        if self.code == "not-on-list":
            return "not on its list"
        return "subscribed when it started, yet not in its audience"


@dataclass(frozen=True)
class CampaignLine:
    """What became of one person's copy of one campaign."""

    campaign: int
    issue: str
    subject: str
    list_slug: str
    segment: dict[str, str | None] | None
    started_at: dt.datetime
    campaign_status: str
    status: str  # a key of STATUS_WORDS
    at: dt.datetime | None = None  # when the ledger last changed: sent, tried, failed, skipped
    provider_id: str | None = None
    attempts: int | None = None
    next_attempt_at: dt.datetime | None = None
    error: str | None = None  # the ledger's last error: a failure's, a retry's, a skip's
    reason: Reason | None = None
    events: list[Happening] = field(default_factory=list)  # after the copy left, oldest first

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "issue": self.issue,
            "subject": self.subject,
            "list": self.list_slug,
            "segment": self.segment,
            "started_at": _iso(self.started_at),
            "campaign_status": self.campaign_status,
            "status": self.status,
            "at": _iso(self.at),
            "provider_id": self.provider_id,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "error": self.error,
            "reason": self.reason.to_json() if self.reason else None,
            "events": [event.to_json() for event in self.events],
        }

    def text(self, zone: dt.tzinfo | None) -> list[str]:
        """One short block: the campaign and what became of the copy, then a line per fact, oldest first."""
        part = f", segment {self.segment['name'] or self.segment['expression']}" if self.segment else ""
        head = (
            f"campaign {self.campaign} ({self.issue} → {self.list_slug}{part}, started {shown(self.started_at, zone)})"
        )
        lines = [f"{head}: {STATUS_WORDS.get(self.status, self.status)}"]
        when = shown(self.at, zone)
        if self.status == "not-in-audience" and self.reason:
            lines.append(self.reason.text(zone, self.segment))
        elif self.status == "skipped":
            why = self.reason.text(zone, self.segment) if self.reason else self.error or "no longer subscribed"
            lines.append(f"skipped {when}: {why}")
        elif self.status == "queued":
            waiting = "the campaign is paused" if self.campaign_status == CampaignStatus.PAUSED else "waiting its turn"
            lines.append(f"not tried yet: {waiting}")
        elif self.status == "cancelled":
            lines.append(f"the campaign was {self.campaign_status} before its turn")
        elif self.attempts and self.next_attempt_at is not None:  # pending, tried again later
            tries = f"{self.attempts} tr{'y' if self.attempts == 1 else 'ies'}"
            next_try = shown(self.next_attempt_at, zone)
            lines.append(f"deferred: {tries}, the last {when}: {self.error}; next try {next_try}")
        elif self.error is not None:
            refused = any(e.source == "send" and e.kind == "bounced" for e in self.events)
            lines.append(f"{'refused for good' if refused else 'failed'} {when}: {self.error}")
        elif self.at is not None:
            lines.append(f"sent {when}" + (f", provider id {self.provider_id}" if self.provider_id else ""))
        lines += [event.text(zone, self.error) for event in self.events]
        return ["  " + line if i else line for i, line in enumerate(lines)]


@dataclass(frozen=True)
class MembershipLine:
    list_slug: str
    status: str
    since: dt.datetime  # its last change
    joined_at: dt.datetime | None
    source: str | None  # how its last change came (events.source), when the event log has it
    how: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "list": self.list_slug,
            "status": self.status,
            "since": _iso(self.since),
            "joined_at": _iso(self.joined_at),
            "source": self.source,
        }

    def text(self, zone: dt.tzinfo | None) -> str:
        how = f" ({self.how})" if self.how else ""
        joined = f", joined {self.joined_at:%Y-%m-%d}" if self.joined_at else ""
        status = _STATUS_THEN.get(self.status, self.status)
        return f"list {self.list_slug}: {status} since {shown(self.since, zone)}{how}{joined}"


@dataclass
class DeliveryReport:
    """One person's deliveries: their memberships, and a CampaignLine per recent campaign, newest first. An
    erased person has erased_at and nothing else."""

    email: str
    name: str | None = None
    erased_at: dt.datetime | None = None
    memberships: list[MembershipLine] = field(default_factory=list)
    campaigns: list[CampaignLine] = field(default_factory=list)
    more: bool = False  # older campaigns of their lists exist (a larger limit shows them)

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "name": self.name,
            "erased_at": _iso(self.erased_at),
            "memberships": [m.to_json() for m in self.memberships],
            "campaigns": [c.to_json() for c in self.campaigns],
            "more": self.more,
        }

    def text(self, zone: dt.tzinfo | None) -> list[str]:
        """What `newsletter delivery` prints: who, their lists, then one block per campaign."""
        if self.erased_at is not None:
            return [
                f"{self.email} was erased on {self.erased_at:%Y-%m-%d}, at their request: nothing else is kept of "
                "them, and nothing is sent to them"
            ]
        lines = [f"{self.name} <{self.email}>" if self.name else self.email]
        lines += ["  " + membership.text(zone) for membership in self.memberships]
        if not self.memberships:
            lines.append("  on no list")
        for line in self.campaigns:
            lines += ["", *line.text(zone)]
        if not self.campaigns:
            lines += ["", "no campaign of their lists has started yet"]
        if self.more:
            lines += ["", f"(the last {len(self.campaigns)} campaigns; --limit shows more)"]
        return lines


def delivery_report(workspace: Workspace, address: str, *, limit: int = DEFAULT_LIMIT) -> DeliveryReport:
    """What became of the person's copy of each of the last `limit` campaigns of their lists; NewsletterError when
    the address is unknown."""
    store = open_store(workspace)
    try:
        return report_for(store, address, limit=limit)
    finally:
        store.close()


def report_for(store: Store, address: str, *, limit: int = DEFAULT_LIMIT) -> DeliveryReport:
    if limit < 1:
        raise NewsletterError(f"limit {limit}: show at least 1 campaign")
    try:  # as the store keeps it: the domain lower-cased, an international one in Unicode (as a bounce may not)
        wanted = normalize_address(address)
    except ValueError:
        wanted = address.strip()
    facts = store.person_deliveries(wanted, limit)
    if facts is None:
        raise NewsletterError(f"no subscriber {address.strip()}: nobody with this address is or was on a list")
    if facts.erased_at is not None:
        return DeliveryReport(facts.email, erased_at=facts.erased_at)
    after = _tie_reports(facts)
    return DeliveryReport(
        facts.email,
        facts.name,
        memberships=_memberships(facts),
        campaigns=[_line(facts, campaign, after.get(campaign.id, [])) for campaign in facts.campaigns],
        more=facts.more,
    )


def _status_events(facts: PersonDeliveries, list_id: int) -> list[EventFact]:
    """The events that set the person's status on a list, oldest first ("signup-requested": pending, when it made
    the membership)."""
    found: list[EventFact] = []
    for event in facts.events:
        if event.list_id != list_id:
            continue
        if event.kind in _MEMBERSHIP_KINDS:
            found.append(event)
        elif event.kind == "signup-requested" and not found:
            found.append(EventFact(event.at, list_id, MembershipStatus.UNCONFIRMED, event.source, event.detail))
    return found


def _memberships(facts: PersonDeliveries) -> list[MembershipLine]:
    lines = []
    for membership in facts.memberships:
        changes = [e for e in _status_events(facts, membership.list_id) if e.kind == membership.status]
        last = changes[-1] if changes else None
        lines.append(
            MembershipLine(
                membership.list,
                membership.status,
                membership.updated_at,
                membership.joined_at,
                last.source if last else None,
                _how(last.source, last.detail) if last else None,
            )
        )
    return lines


def _tie_reports(facts: PersonDeliveries) -> dict[int, list[Happening]]:
    """The reports about the person's copies (bounces, complaints, delays, unsubscribes), by the campaign each is
    tied to: the one its detail names, or whose copy has its provider id, else the latest copy sent before it
    (probable). Unsubscribes are of a list: tied to a copy of that list. Changes made by hand are not reports."""
    by_campaign = {c.id: c for c in facts.campaigns}
    by_provider_id = {row.provider_id: row.campaign_id for row in facts.ledger.values() if row.provider_id}
    tied: dict[int, list[Happening]] = {}
    seen: dict[tuple[int, str, str, str], dt.datetime] = {}  # a report about a copy: when it was last written
    for event in facts.events:
        if event.kind not in AFTER_KINDS or event.source in _SET_BY_HAND:
            continue
        named = event.detail.get("campaign")
        probable = False
        if isinstance(named, int) and not isinstance(named, bool):
            campaign_id: int | None = named if named in by_campaign else None
        elif event.detail.get("provider_id") in by_provider_id:
            campaign_id = by_provider_id[event.detail["provider_id"]]
        else:
            campaign_id, probable = _latest_copy_before(facts, event), True
        if campaign_id is None:
            continue
        # One report about a copy, written on each list of the address within the same instant, is shown once.
        once = (campaign_id, event.kind, event.source, json.dumps(event.detail, sort_keys=True, default=str))
        before = seen.get(once)
        seen[once] = event.at
        if event.kind in _MAIL_KINDS and before is not None and event.at - before < _SAME_REPORT:
            continue
        tied.setdefault(campaign_id, []).append(Happening.of(event, probable))
    return tied


def _latest_copy_before(facts: PersonDeliveries, event: EventFact) -> int | None:
    """The campaign whose copy went to the person last before the event (on the event's list, for an unsubscribe);
    a refusal while sending (source send) ties to a failed copy too."""
    gone = (DeliveryStatus.SENT, DeliveryStatus.FAILED) if event.source == "send" else (DeliveryStatus.SENT,)
    by_campaign = {c.id: c for c in facts.campaigns}
    candidates = [
        row
        for row in facts.ledger.values()
        if row.status in gone
        and row.updated_at <= event.at
        and (event.kind in _MAIL_KINDS or by_campaign[row.campaign_id].list_id == event.list_id)
    ]
    return max(candidates, key=lambda row: row.updated_at).campaign_id if candidates else None


def _line(facts: PersonDeliveries, campaign: CampaignFact, events: list[Happening]) -> CampaignLine:
    segment = frozen_segment({"segment": campaign.segment, "segment_name": campaign.segment_name})
    line = CampaignLine(
        campaign.id,
        campaign.issue_slug,
        campaign.subject,
        campaign.list,
        segment,
        campaign.started_at,
        campaign.status,
        "not-in-audience",
        events=events,
    )
    row = facts.ledger.get(campaign.id)
    if row is None:
        return replace(line, reason=_not_in_audience(facts, campaign))
    line = replace(
        line,
        at=row.updated_at,
        provider_id=row.provider_id,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
        error=row.last_error,
    )
    return replace(line, status=_copy_status(campaign, row, events), reason=_skipped_why(facts, campaign, row))


def _copy_status(campaign: CampaignFact, row: LedgerFact, events: list[Happening]) -> str:
    if row.status == DeliveryStatus.PENDING:
        if campaign.status in (CampaignStatus.CANCELLED, CampaignStatus.EXPIRED):
            return "cancelled"
        return "deferred" if row.attempts else "queued"
    if row.status == DeliveryStatus.SKIPPED:
        return "skipped"
    kinds = {event.kind for event in events}
    if row.status == DeliveryStatus.FAILED:
        return "bounced" if "bounced" in kinds else "failed"
    for kind in AFTER_KINDS:
        if kind in kinds:
            return _STATUS_OF_KIND.get(kind, kind)
    return "sent"


def _skipped_why(facts: PersonDeliveries, campaign: CampaignFact, row: LedgerFact) -> Reason | None:
    """A skipped copy: the change that took the person off the list before its turn came."""
    if row.status != DeliveryStatus.SKIPPED:
        return None
    changes = [e for e in _status_events(facts, campaign.list_id) if e.at <= row.updated_at]
    last = changes[-1] if changes else None
    if last is None or last.kind == MembershipStatus.SUBSCRIBED:
        return None
    return Reason("no-longer-subscribed", last.kind, last.at, last.source, _how(last.source, last.detail))


def _not_in_audience(facts: PersonDeliveries, campaign: CampaignFact) -> Reason:
    """Why a campaign has no ledger row for the person: their status on its list when it started (from the event
    log; the membership where the log has nothing), else an earlier copy of the same content, else its segment."""
    start = campaign.started_at
    membership = next((m for m in facts.memberships if m.list_id == campaign.list_id), None)
    changes = _status_events(facts, campaign.list_id)
    before = [e for e in changes if e.at <= start]
    if before:
        then: EventFact | None = before[-1]
    elif not changes and membership is not None and membership.updated_at <= start:
        then = EventFact(membership.updated_at, campaign.list_id, membership.status, "", {})
    else:
        then = None
    if then is None:
        if changes:
            return Reason("joined-after", at=changes[0].at)
        if membership is not None:
            return Reason("joined-after", at=membership.joined_at or membership.updated_at)
        return Reason("not-on-list")
    if then.kind != MembershipStatus.SUBSCRIBED:
        how = _how(then.source, then.detail) if then.source else None
        return Reason("not-subscribed", then.kind, then.at, then.source or None, how)
    for earlier in sorted(facts.earlier, key=lambda e: e.started_at):
        same = (earlier.issue_slug, earlier.list_id, earlier.content_hash) == (
            campaign.issue_slug,
            campaign.list_id,
            campaign.content_hash,
        )
        # As the audience was fixed: a copy sent, or still pending then (one that failed or was skipped since).
        pending_then = earlier.status in (DeliveryStatus.SENT, DeliveryStatus.PENDING) or earlier.updated_at > start
        if same and earlier.campaign_id != campaign.id and earlier.started_at <= start and pending_then:
            return Reason("had-it-already", campaign=earlier.campaign_id)
    if campaign.segment:
        return Reason("outside-segment")
    return Reason("unknown")
