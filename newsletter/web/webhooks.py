"""POST /webhooks/{provider}: bounces, complaints and provider-side unsubscribes, once the provider's own
authentication is verified (each provider's module verifies and parses); 401 without a configured secret."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.web.app import Site
from newsletter.web.common import RecentTokens, read_body

log = logging.getLogger("newsletter.web")
MAX_WEBHOOK_BODY = 1024 * 1024  # a webhook batch is a few kilobytes
WEBHOOK_PROVIDERS = ("postmark", "sendgrid", "mailgun", "ses", "resend")


def routes(site: Site) -> list[Route]:
    store = site.store
    replays = RecentTokens()

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

    return [Route("/webhooks/{provider}", webhook, methods=["POST"])]
