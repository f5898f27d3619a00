"""A person's approval of a campaign: the requests sent to approvers (one row each, with the hash of the nonce its
link carries), their single-use decisions, and the campaign's events (every request, view, approval and decline).

A campaign awaiting approval is made by create_campaign(awaiting_approval=True): frozen, with no ledger. One
decline declines it; `required` approvals by distinct approvers move it on, to scheduled (its time still to come)
or running (its audience fixed then, as start_due does), through TRANSITIONS. The email, the signed token, the
serve routes and the commands that use this are to come.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.campaigns import TRANSITIONS, Campaigns, _move
from newsletter.store.engine import _aware, now
from newsletter.store.schema import approval_requests, campaign_events, campaigns
from newsletter.store.statuses import CampaignStatus

Decision = Literal["approved", "declined"]
# What decide says: the decision counted (and whether it moved the campaign), or why it changed nothing.
Outcome = Literal[
    "approved",  # the last approval required: the campaign is scheduled or running
    "counted",  # an approval, more are required
    "declined",  # the campaign is declined
    "unknown",  # no such request
    "other-campaign",  # the request is another campaign's
    "wrong-nonce",
    "other-content",  # the token names other content than the request was made for
    "used",  # the request was decided already
    "expired",
    "closed",  # the campaign is no longer awaiting approval (approved, declined, cancelled, expired)
]


@dataclass(frozen=True)
class ApprovalRequest:
    id: int
    campaign_id: int
    approver: str
    requested_by: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    required: int
    content_digest: str
    used_at: dt.datetime | None = None
    decision: Decision | None = None
    decided_by: str | None = None
    comment: str | None = None
    nonce_hash: str = field(default="", repr=False)  # SHA-256 of the nonce its link carries

    def carries(self, nonce: str) -> bool:
        """Whether a link's nonce is this request's."""
        return bool(self.nonce_hash) and hmac.compare_digest(nonce_hash(nonce), self.nonce_hash)


@dataclass(frozen=True)
class DecisionResult:
    outcome: Outcome
    campaign_id: int | None = None
    status: CampaignStatus | None = None  # the campaign's, after the decision (None: no such request)

    @property
    def changed(self) -> bool:
        return self.outcome in ("approved", "counted", "declined")


@dataclass(frozen=True)
class CampaignEvent:
    campaign_id: int
    kind: str  # approval-requested, approval-viewed, approved, declined, decision-refused
    at: dt.datetime
    detail: dict


def nonce_hash(nonce: str) -> str:
    """What the store keeps of a nonce: its SHA-256 (the nonce itself is only in the approval link)."""
    return hashlib.sha256(nonce.encode("utf-8")).hexdigest()


def _request(row: Any) -> ApprovalRequest | None:
    if row is None:
        return None
    return ApprovalRequest(
        row.id,
        row.campaign_id,
        row.approver,
        row.requested_by,
        _aware(row.requested_at),
        _aware(row.expires_at),
        row.required,
        row.content_digest,
        _aware(row.used_at),
        row.decision,
        row.decided_by,
        row.comment,
        row.nonce_hash,
    )


class Approvals(Campaigns):
    def request_approval(
        self,
        campaign_id: int,
        approvers: Iterable[str],
        *,
        requested_by: str,
        content_digest: str,
        expires_at: dt.datetime,
        required: int = 1,
        ip_hash: str | None = None,
        at: dt.datetime | None = None,
        connection: Connection | None = None,
    ) -> list[tuple[int, str]]:
        """Ask each approver to approve a campaign awaiting approval (made by create_campaign(awaiting_approval=
        True), in the same transaction or before): (request id, nonce) for each, the nonce to put in their link.

        Raises ValueError when the campaign is not awaiting approval, or `required` is more than the approvers (with
        those asked before: an approver asked again, whose email never went, keeps the campaign's count)."""
        at = at or now()
        approvers = list(dict.fromkeys(approvers))
        made = []
        with self._writing(connection) as writing:
            status = writing.execute(
                sa.select(campaigns.c.status).where(campaigns.c.id == campaign_id).with_for_update()
            ).scalar()
            if status != CampaignStatus.AWAITING_APPROVAL:
                raise ValueError(f"campaign {campaign_id} is {status or 'unknown'}, not awaiting approval")
            asked_before = writing.execute(
                sa.select(approval_requests.c.approver).where(approval_requests.c.campaign_id == campaign_id)
            ).scalars()
            everyone = set(approvers) | set(asked_before)  # asked again: the approvers of earlier requests count
            if not 1 <= required <= len(everyone):
                raise ValueError(f"{required} approvals required of {len(everyone)} approvers")
            for approver in approvers:
                nonce = secrets.token_urlsafe(32)
                request_id = writing.execute(
                    approval_requests.insert()
                    .values(
                        campaign_id=campaign_id,
                        approver=approver,
                        requested_by=requested_by,
                        requested_at=at,
                        expires_at=expires_at,
                        required=required,
                        nonce_hash=nonce_hash(nonce),
                        content_digest=content_digest,
                    )
                    .returning(approval_requests.c.id)
                ).scalar_one()
                made.append((request_id, nonce))
                detail = {"request": request_id, "approver": approver, "by": requested_by, "ip_hash": ip_hash}
                self._campaign_event(writing, campaign_id, "approval-requested", detail, at)
        return made

    def approval_request(self, request_id: int, *, connection: Connection | None = None) -> ApprovalRequest | None:
        with self._reading(connection) as reading:
            return _request(
                reading.execute(sa.select(approval_requests).where(approval_requests.c.id == request_id)).first()
            )

    def approval_requests(self, campaign_id: int, *, connection: Connection | None = None) -> list[ApprovalRequest]:
        """Every request made for the campaign, oldest first."""
        query = (
            sa.select(approval_requests)
            .where(approval_requests.c.campaign_id == campaign_id)
            .order_by(approval_requests.c.id)
        )
        with self._reading(connection) as reading:
            return [r for row in reading.execute(query) if (r := _request(row)) is not None]

    def decide(
        self,
        request_id: int,
        nonce: str,
        decision: Decision,
        *,
        by: str,
        comment: str | None = None,
        campaign_id: int | None = None,
        content: str | None = None,
        ip_hash: str | None = None,
        at: dt.datetime | None = None,
        connection: Connection | None = None,
    ) -> DecisionResult:
        """An approver's decision on one request, once: it counts only if the nonce is the request's, the request
        unused and unexpired, of `campaign_id` and about `content` (the start of its content digest) when the
        caller's token names them, and the campaign still awaiting approval and not past its own expiry; otherwise
        nothing changes and the outcome says why (recorded as a decision-refused event).

        Race-free: the campaign's row is locked first (FOR UPDATE on PostgreSQL; SQLite's write transaction is
        exclusive), so concurrent decisions on one campaign take turns, and the request is marked used by an UPDATE
        that holds only while it is unused, in the same transaction as the campaign's change."""
        with self._writing(connection) as writing:
            owner = writing.execute(
                sa.select(approval_requests.c.campaign_id).where(approval_requests.c.id == request_id)
            ).scalar()
            if owner is None:
                return DecisionResult("unknown")
            return self._decide(
                writing, owner, request_id, nonce, decision, by, comment, campaign_id, content, ip_hash, at or now()
            )

    def decide_on_terminal(
        self,
        campaign_id: int,
        decision: Decision,
        *,
        by: str,
        approver: str | None = None,
        comment: str | None = None,
        at: dt.datetime | None = None,
        connection: Connection | None = None,
    ) -> DecisionResult:
        """A decision made at a terminal (`newsletter approve|decline`), by someone who holds the store rather than
        a link: it uses the open request of `approver` (by default the oldest open one), with the same rules as
        decide but for the nonce. "unknown" when the campaign has no open request (of that approver)."""
        at = at or now()
        with self._writing(connection) as writing:
            status = writing.execute(
                sa.select(campaigns.c.status).where(campaigns.c.id == campaign_id).with_for_update()
            ).scalar()
            if status is None:
                return DecisionResult("unknown")
            query = (
                sa.select(approval_requests.c.id)
                .where(approval_requests.c.campaign_id == campaign_id, approval_requests.c.decision.is_(None))
                .order_by(approval_requests.c.expires_at > at, approval_requests.c.id)
            )
            if approver is not None:
                query = query.where(approval_requests.c.approver == approver)
            request_ids = list(writing.execute(query).scalars())
            if not request_ids:
                return DecisionResult("unknown", campaign_id, CampaignStatus(status))
            request_id = request_ids[-1]  # an unexpired one first (True sorts last), else the latest expired
            return self._decide(
                writing, campaign_id, request_id, None, decision, by, comment, None, None, None, at, terminal=True
            )

    def _decide(
        self,
        writing: Connection,
        owner: int,
        request_id: int,
        nonce: str | None,
        decision: Decision,
        by: str,
        comment: str | None,
        campaign_id: int | None,
        content: str | None,
        ip_hash: str | None,
        at: dt.datetime,
        *,
        terminal: bool = False,
    ) -> DecisionResult:
        """decide's rules, the nonce's check left out only for a terminal's decision."""
        if decision not in ("approved", "declined"):
            raise ValueError(f"a decision is approved or declined, not {decision!r}")
        campaign = writing.execute(
            sa.select(campaigns.c.status, campaigns.c.list_id, campaigns.c.scheduled_at, campaigns.c.expires_at)
            .where(campaigns.c.id == owner)
            .with_for_update()
        ).one()
        row = writing.execute(sa.select(approval_requests).where(approval_requests.c.id == request_id)).one()
        request = _request(row)
        assert request is not None
        status = CampaignStatus(campaign.status)
        overdue = (expires := _aware(campaign.expires_at)) is not None and expires <= at
        refused: Outcome | None = None
        if campaign_id is not None and campaign_id != owner:
            refused = "other-campaign"
        elif not terminal and not (nonce and hmac.compare_digest(nonce_hash(nonce), row.nonce_hash)):
            refused = "wrong-nonce"
        elif content is not None and not hmac.compare_digest(content, request.content_digest[: len(content)]):
            refused = "other-content"
        elif request.used_at is not None or request.decision is not None:
            refused = "used"
        elif status != CampaignStatus.AWAITING_APPROVAL:
            refused = "closed"
        elif request.expires_at <= at or overdue:
            refused = "expired"
        detail = {"request": request_id, "by": by, "ip_hash": ip_hash, **({"terminal": True} if terminal else {})}
        if refused is not None:
            self._campaign_event(writing, owner, "decision-refused", {**detail, "reason": refused}, at)
            if overdue and status == CampaignStatus.AWAITING_APPROVAL:  # as expire_overdue would make it
                self._transition(writing, owner, CampaignStatus.EXPIRED, "expire", at)
                status = CampaignStatus.EXPIRED
            return DecisionResult(refused, owner, status)
        used = writing.execute(
            approval_requests.update()
            .where(
                approval_requests.c.id == request_id,
                approval_requests.c.used_at.is_(None),
                approval_requests.c.decision.is_(None),
                approval_requests.c.expires_at > at,
            )
            .values(used_at=at, decision=decision, decided_by=by, comment=comment)
        )
        assert used.rowcount == 1  # the campaign's lock makes the checks above hold still
        self._campaign_event(writing, owner, decision, {**detail, "comment": comment}, at)
        if decision == "declined":
            self._transition(writing, owner, CampaignStatus.DECLINED, "decline", at)
            return DecisionResult("declined", owner, CampaignStatus.DECLINED)
        approvers = writing.execute(
            sa.select(sa.func.count(sa.distinct(approval_requests.c.approver))).where(
                approval_requests.c.campaign_id == owner, approval_requests.c.decision == "approved"
            )
        ).scalar_one()
        if approvers < request.required:
            return DecisionResult("counted", owner, status)
        scheduled_at = _aware(campaign.scheduled_at)
        if scheduled_at is not None and scheduled_at > at:
            self._transition(writing, owner, CampaignStatus.SCHEDULED, "approve", at)
            return DecisionResult("approved", owner, CampaignStatus.SCHEDULED)
        self._transition(writing, owner, CampaignStatus.RUNNING, "approve", at, started_at=at)
        self._fix_audience(writing, owner, campaign.list_id, at)
        return DecisionResult("approved", owner, CampaignStatus.RUNNING)

    def _transition(
        self, connection: Connection, campaign_id: int, to: CampaignStatus, action: str, at: dt.datetime, **values: Any
    ) -> None:
        assert TRANSITIONS.get((CampaignStatus.AWAITING_APPROVAL, to)) == action
        moved = connection.execute(_move(to, action, at).values(**values).where(campaigns.c.id == campaign_id))
        assert moved.rowcount == 1  # the campaign is locked, and was awaiting approval

    def record_campaign_event(
        self,
        campaign_id: int,
        kind: str,
        detail: dict | None = None,
        *,
        at: dt.datetime | None = None,
        connection: Connection | None = None,
    ) -> None:
        """An event of the campaign that no other method records: approval-viewed (with who and an IP hash)."""
        with self._writing(connection) as writing:
            self._campaign_event(writing, campaign_id, kind, detail or {}, at or now())

    def _campaign_event(
        self, connection: Connection, campaign_id: int, kind: str, detail: dict, at: dt.datetime
    ) -> None:
        connection.execute(campaign_events.insert().values(campaign_id=campaign_id, kind=kind, at=at, detail=detail))

    def campaign_events(self, campaign_id: int, *, connection: Connection | None = None) -> list[CampaignEvent]:
        """The campaign's events, oldest first."""
        query = (
            sa.select(campaign_events)
            .where(campaign_events.c.campaign_id == campaign_id)
            .order_by(campaign_events.c.at, campaign_events.c.id)
        )
        with self._reading(connection) as reading:
            return [CampaignEvent(r.campaign_id, r.kind, _aware(r.at), r.detail or {}) for r in reading.execute(query)]
