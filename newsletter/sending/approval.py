"""Asking a person to approve a send: one request per approver ([approval] in newsletter.toml), each mailed as the
issue exactly as a member gets it with a banner on top (who asks, to which list, how many people, when, until
when, and the buttons Approve and send / Decline that lead to serve's /approve/TOKEN), through the send's own
transport.

The banner is added to a copy of the frozen content for that one message: what members get is the campaign's
content, which never holds it. What became of each email is an event of the campaign (approval-sent, or
approval-not-sent with why); a send run again for the same campaign asks again only the approvers whose request
never reached them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING

from newsletter.approval import audience_name, moment
from newsletter.config import Config
from newsletter.i18n import translate
from newsletter.message import Outgoing
from newsletter.pages import Pages
from newsletter.sending.frozen import FrozenCampaign
from newsletter.sending.runner import test_recipient
from newsletter.store import CampaignRow, CampaignStatus, Store, now
from newsletter.tokens import TokenSigner
from newsletter.transports import Transport
from newsletter.transports.base import preflight
from newsletter.workspace import Workspace

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def approval_required(config: Config) -> bool:
    return bool(config.approval.approvers)


def approval_urls(config: Config, token: str) -> tuple[str, str] | None:
    """The banner's two buttons, or None without a server to answer them (no base_url, or the provider's hosted
    unsubscribe and no `newsletter serve`): the email then says to decide on a terminal."""
    if not config.base_url:
        return None
    url = f"{config.base_url}/approve/{token}"
    return url, f"{url}?decision=decline"


def approval_message(
    workspace: Workspace,
    row: CampaignRow,
    frozen: FrozenCampaign,
    approver: str,
    token: str,
    *,
    requested_by: str,
    audience: int,
    expires_at: dt.datetime,
    required: int,
    signer: TokenSigner,
) -> Outgoing:
    """The message an approver gets: the member's message of this content, its subject prefixed, the banner on top
    of both parts."""
    config = workspace.config
    lang = frozen.lang
    urls = approval_urls(config, token)
    when = (
        translate(lang, "approval_at", at=moment(row.scheduled_at, lang, config.zone))
        if row.scheduled_at
        else translate(lang, "approval_now")
    )
    values = {
        "who": requested_by,
        "list": audience_name(frozen),
        "count": str(audience),
        "when": when,
        "subject": frozen.subject,
        "sender": frozen.from_shown,
        "expires": moment(expires_at, lang, config.zone),
        "required": required,
        "campaign": row.id,
        "approve_url": urls[0] if urls else None,
        "decline_url": urls[1] if urls else None,
    }
    pages = Pages(config, workspace.templates_dir)
    banner_html = pages.text("approval-banner.html.j2", lang, **values)
    banner_text = pages.text("approval-banner.txt.j2", lang, **values)
    # The placeholders are the member's, filled when the message is built: none may come from the banner.
    banner_html, banner_text = banner_html.replace("%%", "%\u200b%"), banner_text.replace("%%", "%\u200b%")
    found = _BODY.search(frozen.html)
    at = found.end() if found else 0
    shown = dataclasses.replace(
        frozen, html=frozen.html[:at] + banner_html + frozen.html[at:], text=banner_text + frozen.text
    )
    # Its own key per request (the Message-ID, the outbox's file): not a member's, nor another approver's.
    key = f"{row.id}-approval-{token.rpartition('.')[2][:8]}"
    campaign = shown.campaign(key, signer, subject_prefix=translate(lang, "approval_prefix"))
    return campaign.build(test_recipient(approver))


def make_requests(
    store: Store,
    config: Config,
    campaign_id: int,
    approvers: list[str],
    frozen: FrozenCampaign,
    *,
    requested_by: str,
    connection: Connection | None = None,
) -> list[tuple[str, int, str]]:
    """One request per approver of a campaign awaiting approval, as [approval] says (required, expires), about this
    content: (approver, request id, nonce) each, for `ask`."""
    made = store.request_approval(
        campaign_id,
        approvers,
        requested_by=requested_by,
        content_digest=frozen.message_digest(),
        expires_at=now() + config.approval.lifetime,
        required=config.approval.required,
        connection=connection,
    )
    return [(approver, request_id, nonce) for approver, (request_id, nonce) in zip(approvers, made, strict=True)]


async def ask(
    workspace: Workspace,
    store: Store,
    transport: Transport,
    row: CampaignRow,
    requests: list[tuple[str, int, str]],
    *,
    requested_by: str,
    signer: TokenSigner,
) -> list[tuple[str, str | None]]:
    """Mail each request (approver, request id, nonce) its approval email; (approver, None once the mail server
    took it, else why not) for each, each recorded as an event of the campaign."""
    if not requests:
        return []
    frozen = FrozenCampaign.of(row)
    audience = store.count_audience(row.list_id, frozen.segment, row.issue_slug, row.content_hash)
    built = []
    for approver, request_id, nonce in requests:
        request = store.approval_request(request_id)
        assert request is not None
        token = signer.sign_approval(request_id, row.id, request.content_digest, nonce)
        message = approval_message(
            workspace,
            row,
            frozen,
            approver,
            token,
            requested_by=requested_by,
            audience=audience,
            expires_at=request.expires_at,
            required=request.required,
            signer=signer,
        )
        built.append((approver, request_id, message))
    try:
        await preflight(transport)
        outcomes = await transport.send_batch([message for _, _, message in built])
        reasons = [None if o.status == "sent" else (o.reason or o.status) for o in outcomes]
    except Exception as exc:  # the mail server unreachable: the campaign waits, and a send run again asks again
        reasons = [str(exc) or type(exc).__name__] * len(built)
    with store.transaction() as connection:
        for (approver, request_id, _), reason in zip(built, reasons, strict=True):
            detail: dict[str, object] = {"request": request_id, "approver": approver}
            if reason is not None:
                detail["reason"] = reason
            kind = "approval-sent" if reason is None else "approval-not-sent"
            store.record_campaign_event(row.id, kind, detail, connection=connection)
    return [(approver, reason) for (approver, _, _), reason in zip(built, reasons, strict=True)]


def unreached(store: Store, row: CampaignRow, approvers: list[str]) -> list[str]:
    """The approvers of a campaign awaiting approval with no open request whose email reached their mail server."""
    if row.status != CampaignStatus.AWAITING_APPROVAL:
        return []
    at = dt.datetime.now(dt.UTC)
    open_ids = {r.id: r.approver for r in store.approval_requests(row.id) if r.decision is None and r.expires_at > at}
    reached = {
        open_ids[e.detail["request"]]
        for e in store.campaign_events(row.id)
        if e.kind == "approval-sent" and e.detail.get("request") in open_ids
    }
    return [a for a in approvers if a not in reached]
