"""The Starlette app behind `newsletter serve`: its groups of routes, each given the Site they share (site.py).

It only routes: tokens are checked by tokens.py, memberships and events written by store.py, issues rendered by
render.py, webhooks verified and parsed by each provider's module, pages rendered from templates/pages/.
Stateless apart from the store (and per-process limits), so several copies can run behind a proxy on one
PostgreSQL database.

    GET  /u/{token}, POST /u/{token}            unsubscribe.py: the page and preferences, RFC 8058 one-click, undo
    /subscribe/{list}, /confirm/{token}         subscribe.py: sign-up forms, double opt-in
    GET, POST /approve/{token}                  approvals.py: a person approves or declines a send
    GET  /archive/…                             archive.py: the web versions and their Atom feed
    POST /webhooks/{provider}                   webhooks.py: bounces, complaints, provider-side unsubscribes
    GET  /assets/page.css, /healthz
A token that is forged, truncated, for an unknown list or subscriber, or signed with a retired key gets the same
400 page whatever the reason. Nothing about a subscriber is logged but a hash of the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.config import CONFIG_FILE, Config, toml_line
from newsletter.errors import ConfigError
from newsletter.pages import Pages
from newsletter.store import Store
from newsletter.tokens import TokenSigner
from newsletter.web import approvals, archive, subscribe, unsubscribe, webhooks
from newsletter.web.common import SecurityHeaders
from newsletter.web.site import Site
from newsletter.workspace import Workspace

log = logging.getLogger("newsletter.web")
STOPPING_WAIT = 30.0  # seconds a stopping server gives its background sends


def links_problem(config: Config) -> str | None:
    """Why serve cannot mail links for this configuration: a list open to sign-up and no base_url. The links in a
    confirmation email come from newsletter.toml only, never from a request's Host, which anyone can write."""
    open_lists = [slug for slug, settings in config.lists.items() if settings.subscribe]
    if config.base_url or not open_lists:
        return None
    file = config.file.read_text(encoding="utf-8") if config.file else ""
    line = toml_line(file, ("lists", open_lists[0], "subscribe"))
    return (
        f"{CONFIG_FILE}{f':{line}' if line else ''}: [lists.{open_lists[0]}] subscribe = true needs base_url, the "
        'public URL of `newsletter serve` its confirmation links point to: set base_url = "https://…" there (or '
        "NEWSLETTER_BASE_URL)"
    )


def create_app(workspace: Workspace, store: Store, signer: TokenSigner) -> Starlette:
    """The app; ConfigError when newsletter.toml asks for what it cannot do safely (see links_problem)."""
    if problem := links_problem(workspace.config):
        raise ConfigError(problem)
    site = Site(workspace, store, signer, Pages(workspace.config, workspace.templates_dir))

    async def healthz(request: Request) -> Response:
        await asyncio.to_thread(store.version)
        return PlainTextResponse("ok")

    routes: list[BaseRoute] = [
        *unsubscribe.routes(site),
        *subscribe.routes(site),
        *webhooks.routes(site),
        *archive.routes(site),
        *approvals.routes(site),
        Route("/assets/page.css", lambda request: site.stylesheet()),
        Route("/healthz", healthz),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stopping = asyncio.Event()

        async def every(seconds: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
            while not stopping.is_set():
                try:
                    await work()
                except Exception as exc:  # the next run tries again
                    log.warning("%s failed: %s", getattr(work, "__name__", "periodic work"), exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), seconds)

        for seconds, work in site.periodic:
            site.in_background(every(seconds, work))
        yield
        stopping.set()
        if site.background:  # a restart (a deploy) loses no confirmation that was waiting to go
            _, unfinished = await asyncio.wait(site.background, timeout=STOPPING_WAIT)
            if unfinished:
                log.warning("stopped with %d background sends unfinished after %.0f s", len(unfinished), STOPPING_WAIT)
        await site.writer.run(lambda connection: None)  # commits what the writer holds for later
        if site._transport is not None:
            await site._transport.aclose()

    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)
    app.state.site = site  # what a test looks at: the caches' sizes
    return app
