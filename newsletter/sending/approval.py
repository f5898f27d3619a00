"""Asking a person to approve a send: one request per approver ([approval] in newsletter.toml), each mailed as the
issue exactly as a member gets it (an issue in several languages: one email per version) with a banner on top
(who asks, to which list, how many people, when, until when, and the buttons Approve and send / Decline that lead
to serve's /approve/TOKEN), through the send's own transport.

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
from newsletter.i18n import LANGUAGE_NAMES, people, translate
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


def approval_messages(
    workspace: Workspace,
    row: CampaignRow,
    frozen: FrozenCampaign,
    approver: str,
    token: str,
    *,
    requested_by: str,
    audience: int,
    by_language: dict[str, int],
    expires_at: dt.datetime,
    required: int,
    signer: TokenSigner,
) -> list[Outgoing]:
    """What an approver gets: the member's message of this content, its subject prefixed, the banner on top of both
    parts; a campaign in several languages, one such message per version (each as its readers get it, the same
    buttons in each), since what is approved is every version. by_language: how many get each version."""
    config = workspace.config
    lang = frozen.lang
    urls = approval_urls(config, token)
    when = (
        translate(lang, "approval_at", at=moment(row.scheduled_at, lang, config.zone))
        if row.scheduled_at
        else translate(lang, "approval_now")
    )
    subjects = {lang: frozen.subject, **{code: v.subject for code, v in frozen.versions.items()}}
    values = {
        "who": requested_by,
        "list": audience_name(frozen),
        "count": people(lang, audience),
        "when": when,
        "sender": frozen.from_shown,
        "expires": moment(expires_at, lang, config.zone),
        "required": required,
        "campaign": row.id,
        "approve_url": urls[0] if urls else None,
        "decline_url": urls[1] if urls else None,
        "versions": [
            {
                "name": LANGUAGE_NAMES.get(code, code),
                "count": people(lang, by_language.get(code, 0)),
                "subject": subject,
            }
            for code, subject in subjects.items()
        ]
        if frozen.versions
        else [],
    }
    pages = Pages(config, workspace.templates_dir)

    def banners(version: str) -> tuple[str, str]:
        shown = {**values, "subject": subjects[version], "this_version": LANGUAGE_NAMES.get(version, version)}
        html = pages.text("approval-banner.html.j2", lang, **shown)
        text = pages.text("approval-banner.txt.j2", lang, **shown)
        # The placeholders are the member's, filled when the message is built: none may come from the banner.
        return html.replace("%%", "%\u200b%"), text.replace("%%", "%\u200b%")

    def under(banner: tuple[str, str], html: str, text: str) -> tuple[str, str]:
        found = _BODY.search(html)
        at = found.end() if found else 0
        return html[:at] + banner[0] + html[at:], banner[1] + text

    html, text = under(banners(lang), frozen.html, frozen.text)
    versions = {}
    for code, v in frozen.versions.items():
        version_html, version_text = under(banners(code), v.html, v.text)
        versions[code] = dataclasses.replace(v, html=version_html, text=version_text)
    shown = dataclasses.replace(frozen, html=html, text=text, versions=versions)
    # Its own key per request (the Message-ID, the outbox's file): not a member's, nor another approver's.
    key = f"{row.id}-approval-{token.rpartition('.')[2][:8]}"
    messages = []
    for code in subjects:
        campaign = shown.campaign(
            key if code == lang else f"{key}-{code}", signer, subject_prefix=translate(lang, "approval_prefix")
        )
        messages.append(campaign.build(dataclasses.replace(test_recipient(approver), lang=code)))
    return messages


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
    by_language: dict[str, int] = {}
    if frozen.versions:
        readers = store.audience_languages(row.list_id, frozen.segment, row.issue_slug, row.content_hash)
        by_language = frozen.campaign(row.id, signer).by_version(readers)
    built = []
    for approver, request_id, nonce in requests:
        request = store.approval_request(request_id)
        assert request is not None
        token = signer.sign_approval(request_id, row.id, request.content_digest, nonce)
        messages = approval_messages(
            workspace,
            row,
            frozen,
            approver,
            token,
            requested_by=requested_by,
            audience=audience,
            by_language=by_language,
            expires_at=request.expires_at,
            required=request.required,
            signer=signer,
        )
        built.append((approver, request_id, messages))
    try:
        await preflight(transport)
        outcomes = await transport.send_batch([message for _, _, messages in built for message in messages])
        failed = [None if o.status == "sent" else (o.reason or o.status) for o in outcomes]
    except Exception as exc:  # the mail server unreachable: the campaign waits, and a send run again asks again
        failed = [str(exc) or type(exc).__name__] * sum(len(messages) for _, _, messages in built)
    # A request reached its approver once every version's email did: the first reason one did not, else None.
    reasons: list[str | None] = []
    for _, _, messages in built:
        mine, failed = failed[: len(messages)], failed[len(messages) :]
        reasons.append(next((reason for reason in mine if reason is not None), None))
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
