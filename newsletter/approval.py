"""A person's approval of what an agent sends, as the approver meets it: what a request asks (`Asked`, which the
email's banner and serve's page show), the decision through a link's token or on a terminal, and where a
campaign's approval stands (`approval_of`, which campaign_status, `campaigns` and `campaign show` report).

The store decides (store/approvals.py: single use, expiry, one winner); this module adds what needs the
workspace: a decision is refused, and the campaign voided (declined, with the reason), when the issue on disk no
longer renders to what was frozen and asked about, since "approve" must mean exactly what the approver saw.
Imported by `newsletter serve`: no send path here (sending/approval.py makes the requests and their emails).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from newsletter.errors import NewsletterError
from newsletter.i18n import format_day, format_time, translate
from newsletter.sending.frozen import FrozenCampaign, content_hash, image_digests
from newsletter.store import ApprovalRequest, CampaignRow, CampaignStatus, DecisionResult, Store
from newsletter.store.approvals import Decision
from newsletter.tokens import TokenSigner
from newsletter.workspace import Workspace

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

VOIDED = "the issue changed after the approval request; send it again for a new request"
# Why a decision changed nothing, as a person reads it (the outcomes of store.approvals.decide).
REFUSED = {
    "unknown": "no approval request is open for it",
    "other-campaign": "the link is another campaign's",
    "wrong-nonce": "the link is not this request's",
    "other-content": "the link was made for other content",
    "used": "this request was answered already",
    "expired": "this request has expired",
    "closed": "the campaign is no longer awaiting approval",
    "changed": VOIDED,
}


@dataclass(frozen=True)
class Asked:
    """What one approval request asks, as the banner and the page show it."""

    request: ApprovalRequest
    campaign: CampaignRow
    subject: str
    sender: str
    list_slug: str
    list_name: str
    audience: int  # subscribed to the list now: who would get it if it started now
    approvals: list[tuple[str, dt.datetime]]  # who approved already, and when
    # an issue in several languages: each version's subject by language, the first language's first; else empty
    subjects: dict[str, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.campaign.status == CampaignStatus.AWAITING_APPROVAL and self.request.decision is None


def audience_name(frozen: FrozenCampaign) -> str:
    """The list a campaign goes to as an approver reads it, with its segment when it has one."""
    if not frozen.segment:
        return frozen.list_name
    return translate(
        frozen.lang, "approval_segment", list=frozen.list_name, segment=frozen.segment_name or frozen.segment
    )


def asked(store: Store, request: ApprovalRequest) -> Asked:
    row = store.campaign(request.campaign_id)
    assert row is not None  # a request is its campaign's
    frozen = FrozenCampaign.of(row)
    return Asked(
        request,
        row,
        frozen.subject,
        frozen.from_shown,
        frozen.list_slug,
        audience_name(frozen),
        store.count_audience(row.list_id, frozen.segment, row.issue_slug, row.content_hash),
        [
            (r.decided_by or r.approver, r.used_at)
            for r in store.approval_requests(row.id)
            if r.decision == "approved" and r.used_at is not None
        ],
        {frozen.lang: frozen.subject, **{lang: v.subject for lang, v in frozen.versions.items()}}
        if frozen.versions
        else {},
    )


@dataclass(frozen=True)
class Verdict:
    """What became of a decision: the store's outcome (or "changed": the issue was edited, the campaign voided)."""

    outcome: str
    campaign_id: int | None
    status: CampaignStatus | None

    @property
    def changed(self) -> bool:
        return self.outcome in ("approved", "counted", "declined")

    @property
    def reason(self) -> str | None:
        """Why nothing changed, or None."""
        return None if self.changed else REFUSED.get(self.outcome, self.outcome)


def open_token(store: Store, signer: TokenSigner, token: str) -> Asked | None:
    """What a genuine approval link asks, whatever its state; None for a forged, altered or unknown one."""
    found = signer.verify_approval(token)
    request = store.approval_request(found.request_id) if found else None
    if found is None or request is None or request.campaign_id != found.campaign_id:
        return None
    if not request.carries(found.nonce):
        return None
    if request.content_digest[:16] != found.content:
        return None
    return asked(store, request)


def moment(at: dt.datetime, lang: str, zone: dt.tzinfo | None) -> str:
    """A time as the banner and the page say it: '10 février 2027 à 9 h', in the configured zone (else the
    machine's), with the zone's name."""
    local = at.astimezone(zone) if zone else at.astimezone()
    text = translate(lang, "approval_moment", day=format_day(local.date(), lang), time=format_time(local, lang))
    return f"{text} ({local.tzname()})"


def decide_by_token(
    workspace: Workspace,
    store: Store,
    signer: TokenSigner,
    token: str,
    decision: Decision,
    *,
    comment: str | None = None,
    ip_hash: str | None = None,
) -> Verdict:
    """An approver's decision through their link (serve's POST /approve/TOKEN)."""
    found = signer.verify_approval(token)
    if found is None:
        return Verdict("unknown", None, None)
    request = store.approval_request(found.request_id)
    genuine = request is not None and request.campaign_id == found.campaign_id and request.decision is None
    if genuine and request and (voided := _void_if_changed(workspace, store, found.campaign_id, by=request.approver)):
        return voided
    by = request.approver if request is not None else "unknown"
    result = store.decide(
        found.request_id,
        found.nonce,
        decision,
        by=by,
        comment=comment or None,
        campaign_id=found.campaign_id,
        content=found.content,
        ip_hash=ip_hash,
    )
    return _verdict(result)


def decide_on_terminal(
    workspace: Workspace,
    store: Store,
    campaign_id: int,
    decision: Decision,
    *,
    by: str,
    approver: str | None = None,
    comment: str | None = None,
) -> Verdict:
    """A decision at a terminal (`newsletter approve|decline ID`); NewsletterError when there is nothing to decide."""
    row = store.campaign(campaign_id)
    if row is None:
        raise NewsletterError(f"no campaign {campaign_id}; `newsletter campaigns` lists them")
    if row.status == CampaignStatus.AWAITING_APPROVAL and (
        voided := _void_if_changed(workspace, store, campaign_id, by=by)
    ):
        return voided
    return _verdict(store.decide_on_terminal(campaign_id, decision, by=by, approver=approver, comment=comment or None))


def _verdict(result: DecisionResult) -> Verdict:
    return Verdict(result.outcome, result.campaign_id, result.status)


def issue_changed(workspace: Workspace, row: CampaignRow) -> bool:
    """Whether the issue on disk no longer renders to what the campaign froze (its subject, both parts, its
    images' bytes). An issue whose folder is not here (a server that holds only the store) is taken as it was
    frozen; one that no longer checks has changed."""
    from newsletter.checks import check_versions

    folder = workspace.issues_dir / row.issue_slug
    if not (folder / "issue.yaml").is_file():
        return False
    config = workspace.config
    frozen = FrozenCampaign.of(row)
    # The versions the campaign carries (those in its list's languages when it was frozen), checked as it checked
    # them.
    checked = check_versions(
        folder, config, workspace.templates_dir, asset_base_url=config.asset_base_url, langs=frozen.versions.keys()
    )
    result = checked.main
    if result.rendered is None or not checked.report.ok:
        return True
    translations = {
        v.lang: v.result.rendered for v in checked.translations if v.lang is not None and v.result.rendered is not None
    }
    if content_hash(result.rendered, translations) != row.content_hash:
        return True
    return frozen.images is not None and image_digests(result.rendered, *translations.values()) != frozen.images


def _void_if_changed(workspace: Workspace, store: Store, campaign_id: int, *, by: str) -> Verdict | None:
    row = store.campaign(campaign_id)
    if row is None or row.status != CampaignStatus.AWAITING_APPROVAL or not issue_changed(workspace, row):
        return None
    void(store, campaign_id, VOIDED, noticed_by=by)
    return Verdict("changed", campaign_id, CampaignStatus.DECLINED)


def void(store: Store, campaign_id: int, reason: str, *, noticed_by: str, connection: Connection | None = None) -> bool:
    """Decline a campaign awaiting approval on the tool's behalf (its issue changed, a newer request replaced it):
    its requests die with it. False when it was no longer awaiting approval."""
    with contextlib.ExitStack() as stack:
        if connection is None:
            connection = stack.enter_context(store.transaction())
        done = store.change_campaign_status(campaign_id, CampaignStatus.DECLINED, "decline", connection=connection)
        if done:
            store.record_campaign_event(
                campaign_id, "voided", {"reason": reason, "noticed_by": noticed_by}, connection=connection
            )
    return done


def approval_of(store: Store, campaign_id: int) -> dict[str, Any] | None:
    """Where the campaign's approval stands, for the agent and the CLI; None for a campaign never asked about.

    {"state": "awaiting-approval", "approvers", "required", "approved_by", "expires_at"} | {"state": "approved",
    "by", "at"} | {"state": "declined", "by", "at", "comment"} | {"state": "voided", "at", "reason"} |
    {"state": "expired"} | {"state": "cancelled"}"""
    requests = store.approval_requests(campaign_id)
    if not requests:
        return None
    row = store.campaign(campaign_id)
    assert row is not None
    approved = [r for r in requests if r.decision == "approved"]
    declined = [r for r in requests if r.decision == "declined"]
    if row.status == CampaignStatus.AWAITING_APPROVAL:
        open_ones = [r for r in requests if r.decision is None]
        return {
            "state": "awaiting-approval",
            "approvers": sorted({r.approver for r in requests}),
            "required": requests[-1].required,
            "approved_by": [r.decided_by for r in approved],
            "requested_by": requests[-1].requested_by,
            "expires_at": max(r.expires_at for r in open_ones).isoformat() if open_ones else None,
        }
    if declined:
        last = declined[-1]
        return {"state": "declined", "by": last.decided_by, "at": _iso(last.used_at), "comment": last.comment}
    if row.status == CampaignStatus.DECLINED:  # declined with no decision: voided by the tool
        voided = [e for e in store.campaign_events(campaign_id) if e.kind == "voided"]
        reason = voided[-1].detail.get("reason") if voided else None
        return {"state": "voided", "at": _iso(voided[-1].at) if voided else None, "reason": reason}
    if approved and len({r.approver for r in approved}) >= requests[-1].required:
        last = approved[-1]
        return {"state": "approved", "by": [r.decided_by for r in approved], "at": _iso(last.used_at)}
    return {"state": str(row.status)}  # expired or cancelled before enough approved


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None
