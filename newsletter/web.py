"""The Starlette app behind `newsletter serve`: unsubscribe pages and one-click POSTs, the archive, webhooks.

It only routes: tokens are checked by tokens.py, memberships and events written by store.py, issues rendered by
render.py, webhooks verified and parsed by each provider's module. Stateless apart from the store, so several
copies can run behind a proxy on one PostgreSQL database.

    GET  /u/{token}            a page: which list, the address partly hidden, one button. A GET never
                               unsubscribes: mail scanners prefetch links.
    POST /u/{token}            unsubscribes (RFC 8058 one-click, urlencoded or multipart, or the page's button);
                               no cookie, session or CSRF token (the signed token is the authority); never
                               redirects; idempotent. action=resubscribe undoes it.
    GET  /archive/, /archive/{slug}/, /archive/{slug}/images/{file}, /archive/feed.xml   the web versions
    POST /webhooks/{provider}  bounces, complaints, provider-side unsubscribes; 401 unless verified
    GET  /healthz
A token that is forged, truncated, for an unknown list or subscriber, or signed with a retired key gets the same
400 page whatever the reason. Nothing about a subscriber is logged but a hash of the path.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import html
import importlib
import ipaddress
import logging
import os
import time
from collections import defaultdict, deque
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.checks import check_issue
from newsletter.i18n import format_date, translate
from newsletter.render import web_values
from newsletter.store import SUBSCRIBED, UNSUBSCRIBED, Store
from newsletter.tokens import TokenSigner
from newsletter.workspace import Workspace

log = logging.getLogger("newsletter.web")
MAX_BODY = 16 * 1024  # a one-click POST is 26 bytes; a webhook batch a few kilobytes
MAX_WEBHOOK_BODY = 1024 * 1024
WEBHOOK_PROVIDERS = ("postmark", "sendgrid", "mailgun", "ses", "resend")
STYLE = (
    "body{font:17px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#eef1f3;color:#24292f}"
    "main{max-width:34rem;margin:10vh auto;background:#fff;padding:2rem;border-radius:8px}"
    "button{font:inherit;background:#00677f;color:#fff;border:0;border-radius:6px;padding:.7rem 1.3rem;cursor:pointer}"
    "form{margin:1.2rem 0 0}.quiet button{background:#5b6770}h1{font-size:1.4rem;margin-top:0}"
)
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src 'self' https: data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token must not leak to the pages linked from here
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """Adds the security headers a response does not set itself (pure ASGI: streaming responses keep working)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.decode().lower() for k, _ in headers}
                headers += [
                    (k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.lower() not in present
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class FailureLimiter:
    """Counts refused tokens per address block (IPv4 /24, IPv6 /48); past the limit, answers 429 instead of 400.

    Only refusals count, so no genuine one-click is ever limited, however many come from one provider's block.
    """

    def __init__(self, limit: int = 30, window: float = 60.0):
        self.limit, self.window = limit, window
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    @staticmethod
    def block(host: str | None) -> str:
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return "unknown"
        prefix = 24 if address.version == 4 else 48
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

    def refuse(self, host: str | None) -> bool:
        """Count one refusal; True when this block is over its limit."""
        moment = time.monotonic()
        failures = self.failures[self.block(host)]
        while failures and failures[0] < moment - self.window:
            failures.popleft()
        failures.append(moment)
        return len(failures) > self.limit


class RecentTokens:
    """Webhook tokens seen in the last hours (per process: copies behind a proxy each keep their own)."""

    def __init__(self, keep: float = 9 * 3600):
        self.keep = keep
        self.seen: dict[str, float] = {}

    def recent(self) -> set[str]:
        cutoff = time.monotonic() - self.keep
        self.seen = {token: at for token, at in self.seen.items() if at > cutoff}
        return set(self.seen)

    def add(self, token: str) -> None:
        self.seen[token] = time.monotonic()


def mask(address: str) -> str:
    """m•••@example.org: enough for its owner to recognise, not enough to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


def page(lang: str, body: str, status: int = 200) -> HTMLResponse:
    title = html.escape(translate(lang, "page_title"))
    document = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title}</title><style>{STYLE}</style></head>'
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status)


def button(label: str, action: str, quiet: bool = False) -> str:
    css = ' class="quiet"' if quiet else ""
    return (
        f'<form method="post"{css}><input type="hidden" name="action" value="{action}">'
        f'<button type="submit">{html.escape(label)}</button></form>'
    )


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than limit (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's request.form() reads the cached body
    return body


def create_app(workspace: Workspace, store: Store, signer: TokenSigner) -> Starlette:
    config = workspace.config
    lang = config.lang
    limiter = FailureLimiter()
    replays = RecentTokens()
    archive_cache: dict[str, tuple[str, str, dict[str, Path]]] = {}

    def hashed(path: str) -> str:
        return hashlib.sha256(path.encode()).hexdigest()[:12]

    def invalid(request: Request) -> Response:
        status = 429 if limiter.refuse(request.client.host if request.client else None) else 400
        return page(lang, f"<h1>{html.escape(translate(lang, 'page_title'))}</h1>"
                          f"<p>{html.escape(translate(lang, 'invalid'))}</p>", status)  # fmt: skip

    def resolve(token: str) -> tuple[int, int, str, str, str] | None:
        """(subscriber id, list id, address, list name, status) for a genuine token of an existing membership."""
        found = signer.verify(token)
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
            return invalid(request)
        subscriber_id, list_id, address, list_name, status = found
        values = {"email": html.escape(mask(address)), "list": html.escape(list_name)}
        if request.method == "GET":
            if status != SUBSCRIBED:
                undo = ""
                if status == UNSUBSCRIBED:  # a bounce or a complaint is never undone from here
                    undo = f"<p>{html.escape(translate(lang, 'undo_question'))}</p>" + button(
                        translate(lang, "undo_button"), "resubscribe", quiet=True
                    )
                return page(lang, f"<p>{translate(lang, 'already', **values)}</p>{undo}")
            return page(lang, f"<h1>{html.escape(translate(lang, 'page_title'))}</h1>"
                              f"<p>{translate(lang, 'confirm_question', **values)}</p>"
                              + button(translate(lang, "confirm_button"), "unsubscribe"))  # fmt: skip
        form = await request.form(max_files=0, max_fields=20)
        one_click = form.get("List-Unsubscribe") == "One-Click"
        detail = {"user_agent": request.headers.get("user-agent", "")[:300]}
        if form.get("action") == "resubscribe" and not one_click:
            if status not in (UNSUBSCRIBED, SUBSCRIBED):  # never after a bounce or a complaint
                return page(lang, f"<p>{translate(lang, 'already', **values)}</p>")
            await asyncio.to_thread(store.change_status, subscriber_id, list_id, SUBSCRIBED, "page",
                                    {**detail, "undo": True})  # fmt: skip
            log.info("POST /u/%s resubscribe", hashed(token))
            return page(lang, f"<p>{translate(lang, 'resubscribed', **values)}</p>")
        source = "one-click" if one_click else "page"
        await asyncio.to_thread(store.change_status, subscriber_id, list_id, UNSUBSCRIBED, source, detail)
        log.info("POST /u/%s unsubscribed (%s)", hashed(token), source)
        return page(lang, f"<p>{translate(lang, 'done', **values)}</p>"
                          f"<p>{html.escape(translate(lang, 'undo_question'))}</p>"
                          + button(translate(lang, "undo_button"), "resubscribe", quiet=True))  # fmt: skip

    async def webhook(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in WEBHOOK_PROVIDERS:
            return PlainTextResponse("unknown provider", status_code=404)
        body = await read_body(request, MAX_WEBHOOK_BODY)
        if body is None:
            return PlainTextResponse("request body too large", status_code=413)
        secret = os.environ.get(f"NEWSLETTER_WEBHOOK_SECRET_{provider.upper()}", "")
        module = importlib.import_module(f"newsletter.transports.{provider}")
        verify, parse = getattr(module, "verify_webhook", None), getattr(module, "parse_webhook", None)
        # Mailgun signs a timestamp and a token, not the event: a token seen before is a replay.
        token_of = getattr(module, "webhook_token", None)
        options = {"seen_tokens": replays.recent()} if token_of is not None else {}
        # In a thread: verifying may fetch a certificate the first time (Amazon SNS).
        verified = bool(secret) and verify is not None and parse is not None
        if not verified or not await asyncio.to_thread(verify, request.headers, body, secret, **options):
            log.info("POST /webhooks/%s refused", provider)
            return PlainTextResponse("unauthorized", status_code=401)
        confirm = getattr(module, "subscription_confirmation_url", None)
        if confirm is not None and (url := confirm(body)):
            async with httpx.AsyncClient(timeout=10) as client:  # SNS: visiting the URL confirms the subscription
                await client.get(url)
            return JSONResponse({"confirmed": True})
        try:
            events = parse(body, request.headers)
        except ValueError as exc:
            return PlainTextResponse(f"malformed payload: {exc}", status_code=400)
        changed = 0
        for event in events:
            detail = {"provider": provider, "detail": event.detail, "provider_id": event.provider_id}
            changed += await asyncio.to_thread(store.apply_event, event.kind, event.email, event.key, "webhook", detail)
        if token_of is not None and (token := token_of(body)):
            replays.add(token)  # remembered once recorded, so that a retry after a failure still gets through
        log.info("POST /webhooks/%s: %d events, %d memberships changed", provider, len(events), changed)
        return JSONResponse({"events": len(events), "changed": changed})

    def archived(slug: str) -> tuple[str, str, dict[str, Path]] | None:
        """(subject, web HTML, images) of an issue that was sent, rendered once per process."""
        if slug in archive_cache:
            return archive_cache[slug]
        if slug not in {s for s, _, _ in store.sent_issues()}:
            return None
        folder = workspace.issues_dir / slug
        result = check_issue(folder, config, workspace.templates_dir, asset_base_url=None)
        if result.rendered is None:
            return None
        values = {**web_values(config, slug, result.rendered.lang), "unsubscribe_url": f"{config.base_url or ''}/"}
        archive_cache[slug] = (result.rendered.subject, result.rendered.fill(values)[0], result.rendered.images)
        return archive_cache[slug]

    async def archive_index(request: Request) -> Response:
        items = "".join(
            f'<li><a href="{html.escape(slug)}/">{html.escape(subject)}</a> — {format_date(at.date(), lang)}</li>'
            for slug, subject, at in await asyncio.to_thread(store.sent_issues)
        )
        title = html.escape(f"{config.name} — {translate(lang, 'archive_title')}")
        return page(lang, f'<h1>{title}</h1><ul>{items}</ul><p><a href="feed.xml">Atom</a></p>')

    async def archive_issue(request: Request) -> Response:
        found = await asyncio.to_thread(archived, request.path_params["slug"])
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        # An email is styled inline: its page allows inline styles, and still runs and loads nothing else.
        policy = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; frame-ancestors 'none'"
        return HTMLResponse(
            found[1], headers={"Content-Security-Policy": policy, "Cache-Control": "public, max-age=300"}
        )

    async def archive_image(request: Request) -> Response:
        found = await asyncio.to_thread(archived, request.path_params["slug"])
        image = found[2].get(request.path_params["name"]) if found else None
        if image is None or not image.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(image, headers={"Cache-Control": "public, max-age=86400"})

    async def feed(request: Request) -> Response:
        base = config.base_url or str(request.base_url).rstrip("/")
        entries = "".join(
            f'<entry><title>{html.escape(subject)}</title><link href="{base}/archive/{slug}/"/>'
            f"<id>{base}/archive/{slug}/</id><updated>{at.isoformat()}</updated></entry>"
            for slug, subject, at in await asyncio.to_thread(store.sent_issues)
        )
        updated = dt.datetime.now(dt.UTC).isoformat()
        document = (
            '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{html.escape(config.name)}</title><id>{base}/archive/</id><updated>{updated}</updated>"
            f'<link href="{base}/archive/"/>{entries}</feed>'
        )
        return Response(document, media_type="application/atom+xml")

    async def healthz(request: Request) -> Response:
        await asyncio.to_thread(store.version)
        return PlainTextResponse("ok")

    routes = [
        Route("/u/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/webhooks/{provider}", webhook, methods=["POST"]),
        Route("/archive/", archive_index),
        Route("/archive/feed.xml", feed),
        Route("/archive/{slug}/", archive_issue),
        Route("/archive/{slug}/images/{name:path}", archive_image),
        Route("/healthz", healthz),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
