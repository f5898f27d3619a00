"""The Site: what the groups of routes of one app share (workspace, store, signer, pages, writer, limits, caches,
background work). Every route module takes a Site and depends on this module and common.py only, never on the
app (app.py) or on another route module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.config import Config
from newsletter.pages import Pages
from newsletter.store import ListRow, Store
from newsletter.tokens import TokenSigner
from newsletter.transports import Transport, transport_dsn, transport_for
from newsletter.web.common import BlockLimiter
from newsletter.web.writes import GroupWriter
from newsletter.workspace import Workspace


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
    # Mail the server sends itself (confirmations, welcomes), still going when it is told to stop: awaited before it
    # stops.
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # Work a running server does now and then, (seconds between, the work): started with the server, each run
    # finished before it stops.
    periodic: list[tuple[float, Callable[[], Coroutine[Any, Any, None]]]] = field(default_factory=list)
    # The lists found, by the name looked up: only names the store holds (a miss is not kept), so a few.
    lists: dict[str, tuple[float, ListRow]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.writer = GroupWriter(self.store)

    _transport: Transport | None = None

    def transport(self) -> Transport:
        """The server's transport, for the mail it sends itself (confirmations, welcomes): NEWSLETTER_TRANSPORT."""
        if self._transport is None:
            self._transport = transport_for(self.workspace, transport_dsn(None))
        return self._transport

    def in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
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

    def render(self, name: str, lang: str, status: int = 200, **values: object) -> HTMLResponse:
        """A page of templates/pages/ as the response."""
        return HTMLResponse(self.pages.text(name, lang, **values), status_code=status)

    def stylesheet(self) -> Response:
        """/assets/page.css: the one stylesheet of the pages."""
        return Response(self.pages.css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})

    def invalid(self, request: Request, message: str = "invalid") -> Response:
        """The one page for any refused token (429 once this block has been refused too often)."""
        status = 429 if self.refusals.count(request.client.host if request.client else None) else 400
        return self.render("invalid.html.j2", self.lang, status, message=message)
