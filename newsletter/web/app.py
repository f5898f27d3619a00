"""The Starlette app behind `newsletter serve`, and what its groups of routes share (the Site).

It only routes: tokens are checked by tokens.py, memberships and events written by store.py, issues rendered by
render.py, webhooks verified and parsed by each provider's module, pages rendered from templates/pages/.
Stateless apart from the store (and per-process limits), so several copies can run behind a proxy on one
PostgreSQL database.

    GET  /u/{token}, POST /u/{token}            unsubscribe.py: the page and preferences, RFC 8058 one-click, undo
    /subscribe/{list}, /confirm/{token}         subscribe.py: sign-up forms, double opt-in
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
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.config import CONFIG_FILE, Config, toml_line
from newsletter.errors import ConfigError
from newsletter.store import ListRow, Store
from newsletter.tokens import TokenSigner
from newsletter.transports import Transport, transport_dsn, transport_for
from newsletter.web.common import BlockLimiter, SecurityHeaders
from newsletter.web.pages import Pages
from newsletter.web.writes import GroupWriter
from newsletter.workspace import Workspace

log = logging.getLogger("newsletter.web")
STOPPING_WAIT = 30.0  # seconds a stopping server gives its background sends


@dataclass
class Site:
    """What the routes of one app share."""

    workspace: Workspace
    store: Store
    signer: TokenSigner
    pages: Pages
    # Refused tokens per address block: past 30 a minute, 429 instead of 400 (genuine clicks are never counted).
    refusals: BlockLimiter = field(default_factory=lambda: BlockLimiter(limit=30, window=60.0))
    writer: GroupWriter = field(init=False)
    # Mail the server sends itself (confirmations), still going when it is told to stop: awaited before it stops.
    background: set[asyncio.Task] = field(default_factory=set)
    # Work a running server does now and then, (seconds between, the work): started with the server, each run
    # finished before it stops.
    periodic: list[tuple[float, Callable[[], Coroutine]]] = field(default_factory=list)
    # The lists found, by the name looked up: only names the store holds (a miss is not kept), so a few.
    lists: dict[str, tuple[float, ListRow]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.writer = GroupWriter(self.store)

    _transport: Transport | None = None

    def transport(self) -> Transport:
        """The server's transport, for the mail it sends itself (confirmations): NEWSLETTER_TRANSPORT's DSN."""
        if self._transport is None:
            self._transport = transport_for(self.workspace, transport_dsn(None))
        return self._transport

    def in_background(self, work: Coroutine) -> asyncio.Task:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def list_named(self, name: str) -> ListRow | None:
        """The list a token names, from a cache kept a minute (lists are few and rarely change)."""
        cached = self.lists.get(name)
        if cached is not None and cached[0] >= time.monotonic():
            return cached[1]
        found = await asyncio.to_thread(self.store.lookup_list, name)
        if found is None:
            self.lists.pop(name, None)
        else:
            self.lists[name] = (time.monotonic() + 60, found)
        return found

    @property
    def config(self) -> Config:
        return self.workspace.config

    @property
    def lang(self) -> str:
        return self.config.lang

    def invalid(self, request: Request, message: str = "invalid") -> Response:
        """The one page for any refused token (429 once this block has been refused too often)."""
        status = 429 if self.refusals.count(request.client.host if request.client else None) else 400
        return self.pages.render("invalid.html.j2", self.lang, status, message=message)


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
    from newsletter.web import archive, subscribe, unsubscribe, webhooks

    if problem := links_problem(workspace.config):
        raise ConfigError(problem)
    site = Site(workspace, store, signer, Pages(workspace.config, workspace.templates_dir))

    async def healthz(request: Request) -> Response:
        await asyncio.to_thread(store.version)
        return PlainTextResponse("ok")

    routes = [
        *unsubscribe.routes(site),
        *subscribe.routes(site),
        *webhooks.routes(site),
        *archive.routes(site),
        Route("/assets/page.css", lambda request: site.pages.stylesheet()),
        Route("/healthz", healthz),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        stopping = asyncio.Event()

        async def every(seconds: float, work: Callable[[], Coroutine]) -> None:
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
