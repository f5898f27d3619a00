"""/approve/{token}: a person approves or declines what an agent (or anyone) asked to send, from the buttons of
the approval email (sending/approval.py makes the requests and their emails; approval.py and store/approvals.py
decide).

    GET  /approve/{token}    what the request asks (who, the list, how many people now, when it would go, the
                             subject and sender, until when, who approved already when several must) and, while it
                             is open, two forms: Approve and send, and Decline with an optional comment;
                             ?decision=decline (the email's Decline button) puts the decline first. A GET never
                             decides (mail scanners prefetch links): it is an approval-viewed event of the
                             campaign, with who was asked and a keyed hash of the client's IP
    POST /approve/{token}    decision=approve|decline (comment=…, at most 2000 characters): decides once, through
                             approval.decide_by_token (single use, unexpired, the issue unchanged since the
                             request, else the campaign is voided); the answer is the page saying what became of
                             it (409 used, closed or changed, 410 expired), never a redirect
No cookie, session or CSRF token, as for /u/: the signed single-use token is the authority. A forged, altered or
unknown token, or one naming another campaign's request, gets the same 400 page as any bad link, and the log a hash
of the path only. Imports nothing of the send path (serve runs without it): frozen.py is read-only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.approval import Asked, Verdict, decide_by_token, moment, open_token
from newsletter.i18n import CATALOG, LANGUAGE_NAMES, people, translate
from newsletter.sending.frozen import FrozenCampaign
from newsletter.store import CampaignStatus
from newsletter.store.approvals import Decision
from newsletter.tokens import ip_hash
from newsletter.web.common import MAX_BODY, form_fields, hashed, read_body
from newsletter.web.site import Site

log = logging.getLogger("newsletter.web")
MAX_COMMENT = 2000  # characters of a decline's comment kept (the textarea's maxlength)
DECISIONS: dict[str, Decision] = {"approve": "approved", "decline": "declined"}
# Outcomes that mean the link is not a genuine one for its request: the one 400 page, as for any bad token.
FORGED = {"unknown", "other-campaign", "wrong-nonce", "other-content"}
REFUSED_STATUS = {"used": 409, "closed": 409, "changed": 409, "expired": 410}


def routes(site: Site) -> list[Route]:
    store, config = site.store, site.config

    def lang_of(asked: Asked) -> str:
        """The issue's language, which the approver read the email in."""
        lang = FrozenCampaign.of(asked.campaign).lang
        return lang if lang in CATALOG else site.lang

    def when(at: dt.datetime, lang: str) -> str:
        return moment(at, lang, config.zone)

    def closed_because(asked: Asked, lang: str) -> str | None:
        """Why the request can no longer be decided, as the approver reads it; None while it is open."""
        request, row = asked.request, asked.campaign
        if request.decision is not None:
            return translate(lang, "approval_used")
        if row.status != CampaignStatus.AWAITING_APPROVAL:
            return translate(lang, "approval_closed", status=translate(lang, f"approval_status_{row.status}"))
        at = dt.datetime.now(dt.UTC)
        if request.expires_at <= at or (row.expires_at is not None and row.expires_at <= at):
            return translate(lang, "approval_expired")
        return None

    def page(asked: Asked, lang: str, notice: str | None, status: int = 200, decline_first: bool = False) -> Response:
        request, row = asked.request, asked.campaign
        going = (
            translate(lang, "approval_at", at=when(row.scheduled_at, lang))
            if row.scheduled_at
            else translate(lang, "approval_now")
        )
        return site.render(
            "approval.html.j2",
            lang,
            status,
            notice=notice,
            open=asked.open and closed_because(asked, lang) is None,
            decline_first=decline_first,
            who=request.requested_by,
            list=asked.list_name,
            count=people(lang, asked.audience),
            when=going,
            subject=asked.subject,
            subjects=[(LANGUAGE_NAMES.get(code, code), subject) for code, subject in asked.subjects.items()],
            sender=asked.sender,
            expires=when(request.expires_at, lang),
            required=request.required,
            approved_by=", ".join(dict.fromkeys(who for who, _ in asked.approvals)),
        )

    def client_hash(request: Request) -> str:
        return ip_hash(site.signer.key, request.client.host if request.client else None)

    async def show(request: Request) -> Response:
        token = request.path_params["token"]
        asked = await asyncio.to_thread(open_token, store, site.signer, token)
        if asked is None:
            log.info("GET /approve/%s refused", hashed(token))
            return site.invalid(request, "approval_invalid")
        detail = {"request": asked.request.id, "by": asked.request.approver, "ip_hash": client_hash(request)}
        campaign_id = asked.campaign.id
        await site.writer.run(
            lambda connection: store.record_campaign_event(
                campaign_id, "approval-viewed", detail, connection=connection
            )
        )
        lang = lang_of(asked)
        decline_first = request.query_params.get("decision") == "decline"
        return page(asked, lang, closed_because(asked, lang), decline_first=decline_first)

    def outcome(verdict: Verdict, asked: Asked, lang: str) -> tuple[str, int]:
        """What became of a decision, as the approver reads it, and the response's status."""
        row = asked.campaign
        if verdict.outcome == "approved" and verdict.status == CampaignStatus.SCHEDULED and row.scheduled_at:
            return translate(lang, "approval_scheduled", list=asked.list_name, at=when(row.scheduled_at, lang)), 200
        if verdict.outcome == "approved":
            return translate(lang, "approval_approved", list=asked.list_name), 200
        if verdict.outcome == "counted":
            return translate(lang, "approval_counted"), 200
        if verdict.outcome == "declined":
            return translate(lang, "approval_declined", who=asked.request.requested_by), 200
        status = REFUSED_STATUS.get(verdict.outcome, 409)
        if verdict.outcome == "changed":
            return translate(lang, "approval_changed"), status
        if verdict.outcome == "expired":
            return translate(lang, "approval_expired"), status
        if verdict.outcome == "used":
            return translate(lang, "approval_used"), status
        shown = verdict.status or row.status
        return translate(lang, "approval_closed", status=translate(lang, f"approval_status_{shown}")), status

    async def decide(request: Request) -> Response:
        token = request.path_params["token"]
        body = await read_body(request, MAX_BODY)
        if body is None:
            return PlainTextResponse("request body too large", status_code=413)
        if site.signer.verify_approval(token) is None:
            log.info("POST /approve/%s refused", hashed(token))
            return site.invalid(request, "approval_invalid")
        fields = await form_fields(request, body)
        if fields is None:
            return PlainTextResponse("malformed form", status_code=400)
        decision = DECISIONS.get(fields.get("decision", ""))
        if decision is None:
            return PlainTextResponse("decision is approve or decline", status_code=400)
        comment = fields.get("comment", "").strip()[:MAX_COMMENT] if decision == "declined" else ""
        ip = client_hash(request)

        def deciding() -> tuple[Verdict, Asked | None]:
            verdict = decide_by_token(
                site.workspace, store, site.signer, token, decision, comment=comment or None, ip_hash=ip
            )
            return verdict, open_token(store, site.signer, token)  # where the request stands now

        verdict, asked = await asyncio.to_thread(deciding)
        if verdict.outcome in FORGED or asked is None:
            log.info("POST /approve/%s refused", hashed(token))
            return site.invalid(request, "approval_invalid")
        log.debug("POST /approve/%s %s: %s", hashed(token), decision, verdict.outcome)  # the events record it
        lang = lang_of(asked)
        notice, status = outcome(verdict, asked, lang)
        return page(asked, lang, notice, status)

    return [Route("/approve/{token}", show, methods=["GET"]), Route("/approve/{token}", decide, methods=["POST"])]
