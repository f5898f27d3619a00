"""/u/{token}: the unsubscribe page, the person's other lists (their preferences), and RFC 8058 one-click POSTs.

GET shows a page: which list, the address partly hidden, one button, and the person's other lists with their
states. A GET never unsubscribes: mail scanners prefetch links. POST unsubscribes (one-click, urlencoded or
multipart, or the page's button) with no cookie, session or CSRF token (the signed token is the authority), never
redirects, and is idempotent. action=resubscribe undoes it, but never after a bounce or a complaint;
action=leave with list=SLUG leaves another of the person's lists; action=leave-all leaves every one;
action=lang with lang=CODE (one of the list's languages) makes it the person's language.

Every answer speaks the person's language (config.reader_language: theirs if the list offers it, else the list's
first); a list of several languages offers a button to receive it in each other one, in that language.

A POST is answered once its change is committed with others in one durable transaction (writes.GroupWriter).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.config import reader_language
from newsletter.i18n import translate
from newsletter.store import LIST_SLUG, ListRow, MembershipStatus, StatusChange
from newsletter.web.common import MAX_BODY, form_fields, hashed, header, mask, read_body
from newsletter.web.site import Site

log = logging.getLogger("newsletter.web")
LEAVING_FROM = (MembershipStatus.SUBSCRIBED, MembershipStatus.UNCONFIRMED)  # a bounce or a complaint stays what it is


def routes(site: Site) -> list[Route]:
    store, config = site.store, site.config

    def list_name(mailing_list: ListRow, lang: str) -> str:
        """A list's name as a reader of lang reads it: newsletter.toml's title in lang where it gives one per
        language, else the store's name (as it always was)."""
        if isinstance(config.list_settings(mailing_list.slug).title, dict):
            return config.list_title(mailing_list.slug, lang) or mailing_list.title(config.name)
        return mailing_list.title(config.name)

    def others(subscriber_id: int, list_id: int, lang: str) -> list[dict]:
        return [
            {"slug": found.slug, "title": list_name(found, lang), "status": status}
            for found, status in store.memberships_of(subscriber_id)
            if found.id != list_id
        ]

    async def show(
        state: str,
        subscriber_id: int,
        mailing_list: ListRow,
        address: str,
        lang: str | None,
        undo: bool = False,
        switched: bool = False,
    ) -> Response:
        page_lang = reader_language(config, mailing_list.slug, lang)
        switches = [
            (code, translate(code, "language_switch"))
            for code in config.list_languages(mailing_list.slug)
            if code != page_lang
        ]
        return site.render(
            "unsubscribe.html.j2",
            page_lang,
            state=state,
            undo=undo,
            email=mask(address),
            list=list_name(mailing_list, page_lang),
            others=await asyncio.to_thread(others, subscriber_id, mailing_list.id, page_lang),
            publisher=config.publisher.name or "",
            switches=switches,
            switched=switched,
        )

    async def as_it_is(subscriber_id: int, list_slug: str, switched: bool = False) -> Response | None:
        """The page as a GET shows it (None when there is no such membership)."""
        membership = await asyncio.to_thread(store.membership, subscriber_id, list_slug)
        if membership is None:
            return None
        mailing_list, address, status, lang = membership
        if status != MembershipStatus.SUBSCRIBED:  # undo after an unsubscription only: a bounce is never undone here
            undo = status == MembershipStatus.UNSUBSCRIBED
            return await show("already", subscriber_id, mailing_list, address, lang, undo=undo, switched=switched)
        return await show("confirm", subscriber_id, mailing_list, address, lang, switched=switched)

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        found = site.signer.verify(token)
        answer = await as_it_is(*found) if found else None
        if answer is None:
            log.info("GET /u/%s refused", hashed(token))
            return site.invalid(request)
        return answer

    async def switch_language(request: Request, token: str, subscriber_id: int, mailing_list: ListRow, lang: str):
        """action=lang: the person's language becomes `lang`, one of the list's; the page again, in it."""
        if lang not in config.list_languages(mailing_list.slug):
            return PlainTextResponse("not a language of this list", status_code=400)
        if await asyncio.to_thread(store.membership, subscriber_id, mailing_list.slug) is None:
            log.info("POST /u/%s refused", hashed(token))
            return site.invalid(request)
        detail = {"user_agent": header(request, b"user-agent")[:300]}
        await site.writer.run(
            lambda connection: store.set_language(
                subscriber_id, lang, "page", detail, list_id=mailing_list.id, connection=connection
            )
        )
        log.debug("POST /u/%s lang", hashed(token))  # the events table records it
        return await as_it_is(subscriber_id, mailing_list.slug, switched=True) or site.invalid(request)

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
        if action == "lang":
            return await switch_language(request, token, subscriber_id, mailing_list, fields.get("lang", ""))
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
        log.debug("POST /u/%s %s (%s)", hashed(token), action, change.source)  # the events table records it
        if one_click:  # answered to a mail provider, never shown to anyone: a line of text is enough
            lang = reader_language(config, mailing_list.slug, result.lang)
            name = list_name(mailing_list, lang)
            return PlainTextResponse(translate(lang, "done", email=mask(result.email), list=name))
        if action == "leave-all":
            await leave_all(subscriber_id, "page", detail)
            return await show("left-all", subscriber_id, mailing_list, result.email, result.lang)
        if action == "resubscribe":
            state = (
                "resubscribed"
                if result.before in (MembershipStatus.UNSUBSCRIBED, MembershipStatus.SUBSCRIBED)
                else "already"
            )
            return await show(state, subscriber_id, mailing_list, result.email, result.lang)
        if action == "leave":
            membership = await asyncio.to_thread(store.membership, subscriber_id, mailing_list.slug)
            state = "confirm" if membership and membership[2] == MembershipStatus.SUBSCRIBED else "already"
            return await show(state, subscriber_id, mailing_list, result.email, result.lang, undo=state == "already")
        return await show("done", subscriber_id, mailing_list, result.email, result.lang)

    return [Route("/u/{token}", page, methods=["GET"]), Route("/u/{token}", post, methods=["POST"])]
