"""POST /webhooks/{provider}: bounces, complaints and provider-side unsubscribes, once the provider's own
authentication is verified (each provider's WebhookHandler verifies and parses; the providers, their handlers
and their secrets' variables, NEWSLETTER_WEBHOOK_SECRET_<PROVIDER>, are newsletter.transports.WEBHOOK_PROVIDERS);
401 without a configured secret.

A provider that signs a token rather than the event (Mailgun: webhook_token) has each token reserved in the store
in the transaction that applies the request's events (store.apply_webhook): a token reserved before is a replay,
refused (401) by every server and after a restart; a request whose events fail to apply leaves its token free
for the provider's retry. Tokens go once the provider's own check would refuse them by their age.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.store import now
from newsletter.transports import WEBHOOK_PROVIDERS
from newsletter.web.common import read_body
from newsletter.web.site import Site

log = logging.getLogger("newsletter.web")
MAX_WEBHOOK_BODY = 1024 * 1024  # a webhook batch is a few kilobytes
FORGET_TOKENS_EVERY = 3600.0  # seconds between two removals of the webhook tokens past their provider's window


def routes(site: Site) -> list[Route]:
    store = site.store

    async def forget_webhook_tokens() -> None:
        """The tokens no provider would let through any more go (several servers may: the second finds none)."""
        await asyncio.to_thread(store.forget_webhook_tokens, now())

    site.periodic.append((FORGET_TOKENS_EVERY, forget_webhook_tokens))

    async def webhook(request: Request) -> Response:
        name = request.path_params["provider"]
        provider = WEBHOOK_PROVIDERS.get(name)
        if provider is None:
            return PlainTextResponse("unknown provider", status_code=404)
        body = await read_body(request, MAX_WEBHOOK_BODY)
        if body is None:
            return PlainTextResponse("request body too large", status_code=413)
        secret = provider.webhook_secret()
        handler = provider.webhook_handler()
        # In a thread: verifying may fetch a certificate the first time (Amazon SNS).
        if handler is None or not secret or not await asyncio.to_thread(handler.verify, request.headers, body, secret):
            log.info("POST /webhooks/%s refused", name)
            return PlainTextResponse("unauthorized", status_code=401)
        if url := handler.confirmation_url(body):
            async with httpx.AsyncClient(timeout=10) as client:  # SNS: visiting the URL confirms the subscription
                await client.get(url)
            return JSONResponse({"confirmed": True})
        try:
            events = handler.parse(body, request.headers)
        except ValueError as exc:
            return PlainTextResponse(f"malformed payload: {exc}", status_code=400)
        # Mailgun signs a timestamp and a token, not the event: a token acted on before is a replay.
        token = handler.replay_token(body) if handler.replay_tokens else None
        reports = [
            (event.kind, event.email, event.key, {"provider": name, "detail": event.detail, "provider_id": pid})
            for event in events
            for pid in (event.provider_id,)
        ]
        changed = None
        if not handler.replay_tokens or token is not None:
            changed = await asyncio.to_thread(store.apply_webhook, name, token, reports, keep=handler.token_kept)
        if changed is None:
            log.info("POST /webhooks/%s refused: its token was used before", name)
            return PlainTextResponse("unauthorized", status_code=401)
        log.info("POST /webhooks/%s: %d events, %d memberships changed", name, len(events), changed)
        return JSONResponse({"events": len(events), "changed": changed})

    return [Route("/webhooks/{provider}", webhook, methods=["POST"])]
