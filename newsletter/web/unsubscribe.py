"""/u/{token}: the unsubscribe page and RFC 8058 one-click POSTs.

GET shows a page: which list, the address partly hidden, one button. A GET never unsubscribes: mail scanners
prefetch links. POST unsubscribes (one-click, urlencoded or multipart, or the page's button) with no cookie,
session or CSRF token (the signed token is the authority), never redirects, and is idempotent.
action=resubscribe undoes it, but never after a bounce or a complaint.

A POST is answered once its change is committed with others in one durable transaction (writes.GroupWriter).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.i18n import translate
from newsletter.store import SUBSCRIBED, UNCONFIRMED, UNSUBSCRIBED, StatusChange
from newsletter.web.app import Site
from newsletter.web.common import MAX_BODY, hashed, mask, read_body

log = logging.getLogger("newsletter.web")


async def form_fields(request: Request, body: bytes) -> dict[str, str]:
    """A small form's fields. Urlencoded (Gmail's one-click, a page's button) is parsed here: Starlette's form
    parser costs more than the rest of the request."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=0, max_fields=20)
        return {key: value for key, value in form.items() if isinstance(value, str)}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), max_num_fields=20))


def routes(site: Site) -> list[Route]:
    store, config = site.store, site.config

    def show(state: str, address: str, list_name: str, undo: bool = False) -> Response:
        return site.pages.render("unsubscribe.html.j2", site.lang, state=state, undo=undo, email=mask(address),
                                 list=list_name)  # fmt: skip

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        found = site.signer.verify(token)
        membership = await asyncio.to_thread(store.membership, *found) if found else None
        if membership is None:
            log.info("GET /u/%s refused", hashed(token))
            return site.invalid(request)
        mailing_list, address, status = membership
        name = mailing_list.title(config.name)
        if status != SUBSCRIBED:
            return show("already", address, name, undo=status == UNSUBSCRIBED)  # a bounce is never undone here
        return show("confirm", address, name)

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
        fields = await form_fields(request, body)
        one_click = fields.get("List-Unsubscribe") == "One-Click"
        detail = {"user_agent": request.headers.get("user-agent", "")[:300]}
        undo = fields.get("action") == "resubscribe" and not one_click
        if undo:  # from an unsubscription only: never after a bounce or a complaint
            change = StatusChange(
                found[0], mailing_list.id, SUBSCRIBED, (UNSUBSCRIBED,), "page", {**detail, "undo": True}
            )
        else:
            source = "one-click" if one_click else "page"
            change = StatusChange(found[0], mailing_list.id, UNSUBSCRIBED, (SUBSCRIBED, UNCONFIRMED), source, detail)
        result = await site.writer.change(change)
        if not result.found:
            log.info("POST /u/%s refused", hashed(token))
            return site.invalid(request)
        name = mailing_list.title(config.name)
        if undo:
            log.debug("POST /u/%s resubscribe", hashed(token))
            return show(
                "resubscribed" if result.before in (UNSUBSCRIBED, SUBSCRIBED) else "already", result.email, name
            )
        log.debug("POST /u/%s unsubscribed (%s)", hashed(token), change.source)  # the events table records it
        if one_click:  # answered to a mail provider, never shown to anyone: a line of text is enough
            return PlainTextResponse(translate(site.lang, "done", email=mask(result.email), list=name))
        return show("done", result.email, name)

    return [Route("/u/{token}", page, methods=["GET"]), Route("/u/{token}", post, methods=["POST"])]
