"""/u/{token}: the unsubscribe page, the person's other lists (their preferences), and RFC 8058 one-click POSTs.

GET shows a page: which list, the address partly hidden, one button, and the person's other lists with their
states. A GET never unsubscribes: mail scanners prefetch links. POST unsubscribes (one-click, urlencoded or
multipart, or the page's button) with no cookie, session or CSRF token (the signed token is the authority), never
redirects, and is idempotent. action=resubscribe undoes it, but never after a bounce or a complaint;
action=leave with list=SLUG leaves another of the person's lists; action=leave-all leaves every one.

A POST is answered once its change is committed with others in one durable transaction (writes.GroupWriter).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.i18n import translate
from newsletter.store import LIST_SLUG, MembershipStatus, StatusChange
from newsletter.web.common import MAX_BODY, form_fields, hashed, header, mask, read_body
from newsletter.web.site import Site

log = logging.getLogger("newsletter.web")
LEAVING_FROM = (MembershipStatus.SUBSCRIBED, MembershipStatus.UNCONFIRMED)  # a bounce or a complaint stays what it is


def routes(site: Site) -> list[Route]:
    store, config = site.store, site.config

    def others(subscriber_id: int, list_id: int) -> list[dict]:
        return [
            {"slug": found.slug, "title": found.title(config.name), "status": status}
            for found, status in store.memberships_of(subscriber_id)
            if found.id != list_id
        ]

    async def show(state: str, subscriber_id: int, list_id: int, address: str, list_name: str, undo=False) -> Response:
        return site.render(
            "unsubscribe.html.j2",
            site.lang,
            state=state,
            undo=undo,
            email=mask(address),
            list=list_name,
            others=await asyncio.to_thread(others, subscriber_id, list_id),
            publisher=config.publisher.name or "",
        )

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        found = site.signer.verify(token)
        membership = await asyncio.to_thread(store.membership, *found) if found else None
        if found is None or membership is None:
            log.info("GET /u/%s refused", hashed(token))
            return site.invalid(request)
        mailing_list, address, status = membership
        name = mailing_list.title(config.name)
        if status != MembershipStatus.SUBSCRIBED:  # undo after an unsubscription only: a bounce is never undone here
            return await show(
                "already", found[0], mailing_list.id, address, name, undo=status == MembershipStatus.UNSUBSCRIBED
            )
        return await show("confirm", found[0], mailing_list.id, address, name)

    async def leave_all(subscriber_id: int, source: str, detail: dict) -> None:
        changes = [
            StatusChange(subscriber_id, found.id, MembershipStatus.UNSUBSCRIBED, LEAVING_FROM, source, detail)
            for found, status in await asyncio.to_thread(store.memberships_of, subscriber_id)
            if status in LEAVING_FROM
        ]
        await site.writer.run(lambda connection: store.apply_changes(changes, connection=connection))

    async def post(request: Request) -> Response:
        token = request.path_params["token"]
        body = await read_body(request, MAX_BODY)
        if body is None:
            return PlainTextResponse("request body too large", status_code=413)
        found = site.signer.verify(token)
        mailing_list = await site.list_named(found[1]) if found else None
        if found is None or mailing_list is None:
            log.info("POST /u/%s refused", hashed(token))
            return site.invalid(request)
        subscriber_id = found[0]
        fields = await form_fields(request, body)
        if fields is None:
            return PlainTextResponse("malformed form", status_code=400)
        one_click = fields.get("List-Unsubscribe") == "One-Click"
        action = "unsubscribe" if one_click else fields.get("action", "unsubscribe")
        detail = {"user_agent": header(request, b"user-agent")[:300]}
        target = mailing_list
        if action == "leave":  # another of the person's lists, from the preferences: only one of theirs
            named = fields.get("list", "")
            mine = LIST_SLUG.fullmatch(named)
            theirs = await asyncio.to_thread(store.membership, subscriber_id, named) if mine else None
            if not theirs:
                return PlainTextResponse("not one of your lists", status_code=400)
            target = theirs[0]
        if action == "resubscribe":
            change = StatusChange(
                subscriber_id,
                target.id,
                MembershipStatus.SUBSCRIBED,
                (MembershipStatus.UNSUBSCRIBED,),
                "page",
                {**detail, "undo": True},
            )
        else:
            source = "one-click" if one_click else "page"
            change = StatusChange(subscriber_id, target.id, MembershipStatus.UNSUBSCRIBED, LEAVING_FROM, source, detail)
        result = await site.writer.change(change)
        if not result.found or result.email is None:  # found, it has its address
            log.info("POST /u/%s refused", hashed(token))
            return site.invalid(request)
        name = mailing_list.title(config.name)
        log.debug("POST /u/%s %s (%s)", hashed(token), action, change.source)  # the events table records it
        if one_click:  # answered to a mail provider, never shown to anyone: a line of text is enough
            return PlainTextResponse(translate(site.lang, "done", email=mask(result.email), list=name))
        if action == "leave-all":
            await leave_all(subscriber_id, "page", detail)
            return await show("left-all", subscriber_id, mailing_list.id, result.email, name)
        if action == "resubscribe":
            state = (
                "resubscribed"
                if result.before in (MembershipStatus.UNSUBSCRIBED, MembershipStatus.SUBSCRIBED)
                else "already"
            )
            return await show(state, subscriber_id, mailing_list.id, result.email, name)
        if action == "leave":
            membership = await asyncio.to_thread(store.membership, subscriber_id, mailing_list.slug)
            state = "confirm" if membership and membership[2] == MembershipStatus.SUBSCRIBED else "already"
            return await show(state, subscriber_id, mailing_list.id, result.email, name, undo=state == "already")
        return await show("done", subscriber_id, mailing_list.id, result.email, name)

    return [Route("/u/{token}", page, methods=["GET"]), Route("/u/{token}", post, methods=["POST"])]
