"""/subscribe/{list} and /confirm/{token}: people join a list open to sign-up, by double opt-in.

    GET  /subscribe/{list}    the form: email, name (optional), the list's languages when it has several (its
                              first, or ?lang=, first and chosen), the consent sentence, a honeypot (website)
    POST /subscribe/{list}    for any well-formed address, the same page and status whatever the address's state,
                              so that the form tells nobody who is on a list; one confirmation email for a new or
                              returning address (none to a member, a bounce or a complaint; at most one in
                              ten minutes per address across every list, then 20, 40… minutes apart; none
                              past the block's limit); a malformed address gets a 400 page; a filled honeypot
                              the 200 page and nothing else
    GET  /confirm/{token}     a page with one button: mail scanners open links, so a GET never subscribes
    POST /confirm/{token}     subscribes, idempotently, recording the consent; a link confirms its own request,
                              never once a later one was made or the membership changed since (an unsubscribe,
                              a bounce); that, and anything forged, expired or retired, gets the same 400 page
                              as a bad unsubscribe link; with `[lists.SLUG] welcome`, the person's welcome email
                              queued in the same transaction, and sent once it is committed
A list is open when newsletter.toml says `[lists.SLUG] subscribe = true`; any other answers 404. The page speaks
the list's first language, or the one ?lang= names among the list's; the language chosen in the form is the
answer's, the confirmation email's and its pages', and the person's once they confirm (never before: whoever types
someone's address changes nothing of theirs).
The consent record is the request's event (what was shown, the page, the user agent, a keyed hash of the IP)
and its confirmation's; the address itself is the only thing stored before the person confirms.
The confirmation emails themselves are confirmations.py's, the welcome emails welcome.py's: sent in the background,
and never lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.addresses import clean_name, normalize_address
from newsletter.config import parse_duration, reader_language
from newsletter.i18n import translate
from newsletter.message import Notice, parse_mailbox
from newsletter.pages import language_choice
from newsletter.render import RenderedIssue
from newsletter.store import SignupConfirmation, SignupRequest, now
from newsletter.tokens import ip_hash
from newsletter.web.common import (
    MAX_BODY,
    BlockLimiter,
    address_block,
    form_fields,
    header,
    mask,
    read_body,
)
from newsletter.web.confirmations import RESEND_EVERY, Confirmation, ConfirmationMail
from newsletter.web.site import Site
from newsletter.web.welcome import WELCOME_EVERY, WelcomeMail

if TYPE_CHECKING:
    from newsletter.store import Connection

log = logging.getLogger("newsletter.web")
CONFIRM_VALID = dt.timedelta(days=7)
SIGNUP_WINDOW = 3600.0  # [serve] signups_per_block counts in this window
PURGE_EVERY = 3600.0  # seconds between two purges of the sign-ups never confirmed, when newsletter.toml asks


class OverTheLimit:
    """The sign-ups refused over an address block's limit, in the log as counts: the first at once, then at most a
    line a minute (an attack would fill the log otherwise); never from where."""

    def __init__(self, every: float = 60.0):
        self.every = every
        self.refused, self.blocks = 0, set[str]()
        self.logged_at, self.waiting = -every, False

    def add(self, block: str) -> None:
        self.refused += 1
        self.blocks.add(block)
        if self.waiting:
            return
        wait = self.logged_at + self.every - time.monotonic()
        if wait <= 0:
            self._log()
        else:  # the count so far goes in the next line, due in `wait` seconds
            self.waiting = True
            asyncio.get_running_loop().call_later(wait, self._log)

    def _log(self) -> None:
        log.warning(
            "sign-ups refused over their address block's limit ([serve] signups_per_block) in the last "
            "minute: %d, from %d blocks",
            self.refused,
            len(self.blocks),
        )
        self.refused, self.blocks = 0, set[str]()
        self.logged_at, self.waiting = time.monotonic(), False


def routes(site: Site) -> list[Route]:
    store, config = site.store, site.config
    signups = BlockLimiter(limit=config.serve.signups_per_block, window=SIGNUP_WINDOW)
    over_the_limit = OverTheLimit()
    notices: dict[str, Notice] = {}

    def open_list(slug: str):
        settings = config.lists.get(slug)
        return settings if settings is not None and settings.subscribe else None

    def title(slug: str, lang: str) -> str:
        return config.list_title(slug, lang) or config.name

    def page_language(request: Request, slug: str) -> str:
        """The page's language: ?lang= when the list offers it, else the list's first."""
        return reader_language(config, slug, request.query_params.get("lang"))

    def chosen_language(slug: str, fields: dict[str, str]) -> str | None:
        """The language chosen in the form, when the list offers a choice and it is one of its languages."""
        offered = config.list_languages(slug)
        chosen = fields.get("lang")
        return chosen if len(offered) > 1 and chosen in offered else None

    @functools.cache  # the configuration is read once per process
    def consent(slug: str, lang: str) -> str:
        sentence = config.list_settings(slug).consent_in(lang)
        return sentence or translate(
            lang, "consent_default", list=title(slug, lang), publisher=config.publisher.name or config.name
        )

    def client_hash(request: Request) -> str:
        return ip_hash(site.signer.key, request.client.host if request.client else None)

    # Keyed by the path (which routing matched to an open list) and languages the list offers: never by what else a
    # request sends, so a few entries per list.
    rendered: dict[tuple[str, str, str, str], Response] = {}

    def form_page(request: Request, slug: str, state: str, lang: str, status: int = 200) -> Response:
        """A list's page in one of its three states and one of its languages: the same bytes for everyone, so one
        response each, made once (a Starlette response sends the same bytes each time it is called)."""
        path = request.scope["path"]
        key = (slug, state, path, lang)
        if key not in rendered:
            offered = config.list_languages(slug)
            first = lang == offered[0]
            page = site.pages.text(
                "subscribe.html.j2",
                lang,
                state=state,
                list=title(slug, lang),
                consent=consent(slug, lang),
                action=path if first else f"{path}?lang={lang}",  # the POST knows which consent it showed
                languages=language_choice(offered, lang),
            )
            rendered[key] = HTMLResponse(page, status_code=status)
        return rendered[key]

    async def form(request: Request) -> Response:
        slug = request.path_params["list"]
        if open_list(slug) is None:
            return PlainTextResponse("not found", status_code=404)
        return form_page(request, slug, "form", page_language(request, slug))

    def notice(slug: str, lang: str | None) -> Notice:
        """The confirmation email of a list in a reader's language, rendered once: only the link changes from one
        person to the next."""
        lang = reader_language(config, slug, lang)
        key = f"{slug}:{lang}"
        if key not in notices:
            values = {
                "list": title(slug, lang),
                "publisher": config.publisher.name or config.name,
                "postal_address": config.publisher.postal_address or "",
            }
            html = site.pages.text("confirmation.html.j2", lang, **values)
            text = site.pages.text("confirmation.txt.j2", lang, **values)
            subject = translate(lang, "confirm_subject", list=title(slug, lang))
            rendered = RenderedIssue(f"confirm-{slug}", lang, subject, "", html, text, {})
            sender = parse_mailbox(config.sender.from_ or f"{config.name} <{config.publisher.email}>")
            notices[key] = Notice("confirm", rendered, sender, config.sender.reply_to)
        return notices[key]

    mail = ConfirmationMail(site, notice)
    site.periodic.append((RESEND_EVERY, mail.resend_unsent))
    welcomes = WelcomeMail(site)
    welcomes.prepare()  # ConfigError: serve does not start with a welcome it would not send
    if welcomes.welcomes:
        site.periodic.append((WELCOME_EVERY, welcomes.send_pending))

    def purge(before: dt.datetime) -> dict[str, int]:
        removed = {}
        for slug in store.list_slugs():
            addresses, _ = store.purge_unconfirmed(store.list_id(slug), before)
            if addresses:
                removed[slug] = len(addresses)
        return removed

    async def purge_pending() -> None:
        """[serve] purge_pending_after: the sign-ups never confirmed go once that long has passed since their last
        request, as `subscribers purge-pending` removes them (several servers may: the second finds nothing)."""
        for slug, count in (await asyncio.to_thread(purge, now() - keep_pending)).items():
            log.info("removed %d sign-ups of %s never confirmed", count, slug)

    if config.serve.purge_pending_after:
        keep_pending = dt.timedelta(seconds=parse_duration(config.serve.purge_pending_after))
        site.periodic.append((PURGE_EVERY, purge_pending))

    async def submit(request: Request) -> Response:
        slug = request.path_params["list"]
        if open_list(slug) is None:
            return PlainTextResponse("not found", status_code=404)
        body = await read_body(request, MAX_BODY)
        if body is None:
            return PlainTextResponse("request body too large", status_code=413)
        fields = await form_fields(request, body)
        if fields is None:
            return PlainTextResponse("malformed form", status_code=400)
        shown = page_language(request, slug)  # the page the form was on: the consent it showed
        chosen = chosen_language(slug, fields)
        answer = chosen or shown
        if fields.get("website"):  # the honeypot: the same answer, and nothing happens
            return form_page(request, slug, "sent", answer)
        try:
            address = normalize_address(fields.get("email", ""))
        except ValueError:
            return form_page(request, slug, "error", shown, 400)
        host = request.client.host if request.client else None
        if signups.count(host):
            over_the_limit.add(address_block(host))
            return form_page(request, slug, "sent", answer)
        name = clean_name(fields.get("name", "")) or ""
        detail = {
            "consent": consent(slug, shown),
            # the address posted to when the request names no page (our own form's send no Referer)
            "page": header(request, b"referer")[:500] or f"{config.base_url}/subscribe/{slug}",
            "user_agent": header(request, b"user-agent")[:300],
            "ip_hash": client_hash(request),
        }
        mailing_list = await site.list_named(slug)
        if mailing_list is None:  # open in newsletter.toml, and nobody on it yet
            await site.writer.run(
                lambda connection: store.ensure_list(slug, config.list_title(slug), connection=connection)
            )
            mailing_list = await site.list_named(slug)
            assert mailing_list is not None  # created, committed, and found in the store
        asked = await site.writer.signup(SignupRequest(mailing_list.id, address, name or None, detail, chosen))
        if asked is not None:
            mail.later(
                Confirmation(slug, mailing_list.id, asked.subscriber_id, asked.request_id, address, name, chosen)
            )
        return form_page(request, slug, "sent", answer)

    async def confirmation(request: Request) -> Response:
        """A link confirms its own request, and only while nothing changed since (store._confirming): the same
        link again right after says done; after an unsubscribe, a later request or a purge it is invalid."""
        found = site.signer.verify_confirmation(request.path_params["token"], now(), valid=CONFIRM_VALID)
        mailing_list = await site.list_named(found.list_slug) if found else None
        if found is None or mailing_list is None:
            return site.invalid(request, "confirm_invalid")
        slug, subscriber_id, request_id = found.list_slug, found.subscriber_id, found.request_id
        if request.method == "GET":
            asked = await asyncio.to_thread(store.confirmable, subscriber_id, mailing_list.id, request_id)
            if asked is None:
                return site.invalid(request, "confirm_invalid")
            lang = reader_language(config, slug, asked.lang)
            return site.render("confirm.html.j2", lang, state="ask", email=mask(asked.email), list=title(slug, lang))
        if await read_body(request, MAX_BODY) is None:
            return PlainTextResponse("request body too large", status_code=413)
        detail = {"user_agent": header(request, b"user-agent")[:300], "ip_hash": client_hash(request)}

        def confirm(connection: Connection) -> tuple[SignupConfirmation | None, list[int]]:
            """Subscribe them (their language the one chosen on the form) and, in the same transaction, queue
            their welcome: nobody is confirmed without it."""
            confirmed = store.confirm_signup(
                subscriber_id, mailing_list.id, detail, request_id=request_id, connection=connection
            )
            if confirmed is None:
                return None, []
            return confirmed, welcomes.queue(connection, mailing_list.slug, mailing_list.id, confirmed.email)

        confirmed, welcoming = await site.writer.run(confirm)
        if confirmed is None:
            return site.invalid(request, "confirm_invalid")
        welcomes.later(welcoming)
        log.debug("POST /confirm: %s confirmed", slug)
        lang = reader_language(config, slug, confirmed.lang)
        return site.render("confirm.html.j2", lang, state="done", email=mask(confirmed.email), list=title(slug, lang))

    return [
        Route("/subscribe/{list}", form, methods=["GET"]),
        Route("/subscribe/{list}", submit, methods=["POST"]),
        Route("/confirm/{token}", confirmation, methods=["GET", "POST"]),
    ]
