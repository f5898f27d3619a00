"""/u/{token}: the unsubscribe page and RFC 8058 one-click POSTs.

GET shows a page: which list, the address partly hidden, one button. A GET never unsubscribes: mail scanners
prefetch links. POST unsubscribes (one-click, urlencoded or multipart, or the page's button) with no cookie,
session or CSRF token (the signed token is the authority), never redirects, and is idempotent.
action=resubscribe undoes it, but never after a bounce or a complaint.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.store import SUBSCRIBED, UNSUBSCRIBED
from newsletter.web.app import Site
from newsletter.web.common import MAX_BODY, hashed, mask, read_body

log = logging.getLogger("newsletter.web")


def routes(site: Site) -> list[Route]:
    store, config = site.store, site.config

    def resolve(token: str) -> tuple[int, int, str, str, str] | None:
        """(subscriber id, list id, address, list name, status) for a genuine token of an existing membership."""
        found = site.signer.verify(token)
        if found is None:
            return None
        subscriber_id, list_slug = found
        membership = store.membership(subscriber_id, list_slug)
        if membership is None:
            return None
        found_list, address, status = membership
        return subscriber_id, found_list.id, address, found_list.title(config.name), status

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        found = await asyncio.to_thread(resolve, token)
        if request.method == "POST":
            body = await read_body(request, MAX_BODY)
            if body is None:
                return PlainTextResponse("request body too large", status_code=413)
        if found is None:
            log.info("%s /u/%s refused", request.method, hashed(token))
            return site.invalid(request)
        subscriber_id, list_id, address, list_name, status = found

        def show(state: str, undo: bool = False) -> Response:
            return site.pages.render("unsubscribe.html.j2", site.lang, state=state, undo=undo, email=mask(address),
                                     list=list_name)  # fmt: skip

        if request.method == "GET":
            if status != SUBSCRIBED:
                return show("already", undo=status == UNSUBSCRIBED)  # a bounce or a complaint is never undone here
            return show("confirm")
        form = await request.form(max_files=0, max_fields=20)
        one_click = form.get("List-Unsubscribe") == "One-Click"
        detail = {"user_agent": request.headers.get("user-agent", "")[:300]}
        if form.get("action") == "resubscribe" and not one_click:
            if status not in (UNSUBSCRIBED, SUBSCRIBED):  # never after a bounce or a complaint
                return show("already")
            await asyncio.to_thread(store.change_status, subscriber_id, list_id, SUBSCRIBED, "page",
                                    {**detail, "undo": True})  # fmt: skip
            log.info("POST /u/%s resubscribe", hashed(token))
            return show("resubscribed")
        source = "one-click" if one_click else "page"
        await asyncio.to_thread(store.change_status, subscriber_id, list_id, UNSUBSCRIBED, source, detail)
        log.info("POST /u/%s unsubscribed (%s)", hashed(token), source)
        return show("done")

    return [Route("/u/{token}", unsubscribe, methods=["GET", "POST"])]
