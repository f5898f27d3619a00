"""GET /archive/: the web version of every issue a campaign started sending, its images, and an Atom feed."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.checks import check_issue
from newsletter.i18n import format_date
from newsletter.render import web_values
from newsletter.web.app import Site

# An email is styled inline: its page allows inline styles, and still runs and loads nothing else.
ISSUE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; frame-ancestors 'none'"


def routes(site: Site) -> list[Route]:
    workspace, store, config = site.workspace, site.store, site.config
    cache: dict[str, tuple[str, str, dict[str, Path]]] = {}

    def archived(slug: str) -> tuple[str, str, dict[str, Path]] | None:
        """(subject, web HTML, images) of an issue that was sent, rendered once per process."""
        if slug in cache:
            return cache[slug]
        if slug not in {s for s, _, _ in store.sent_issues()}:
            return None
        folder = workspace.issues_dir / slug
        result = check_issue(folder, config, workspace.templates_dir, asset_base_url=None)
        if result.rendered is None:
            return None
        values = {**web_values(config, slug, result.rendered.lang), "unsubscribe_url": f"{config.base_url or ''}/"}
        cache[slug] = (result.rendered.subject, result.rendered.fill(values)[0], result.rendered.images)
        return cache[slug]

    async def index(request: Request) -> Response:
        issues = [
            {"slug": slug, "subject": subject, "date": format_date(at.date(), site.lang)}
            for slug, subject, at in await asyncio.to_thread(store.sent_issues)
        ]
        return site.pages.render("archive.html.j2", site.lang, issues=issues)

    async def issue(request: Request) -> Response:
        found = await asyncio.to_thread(archived, request.path_params["slug"])
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        return HTMLResponse(found[1], headers={"Content-Security-Policy": ISSUE_POLICY,
                                               "Cache-Control": "public, max-age=300"})  # fmt: skip

    async def image(request: Request) -> Response:
        found = await asyncio.to_thread(archived, request.path_params["slug"])
        file = found[2].get(request.path_params["name"]) if found else None
        if file is None or not file.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(file, headers={"Cache-Control": "public, max-age=86400"})

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

    return [
        Route("/archive/", index),
        Route("/archive/feed.xml", feed),
        Route("/archive/{slug}/", issue),
        Route("/archive/{slug}/images/{name:path}", image),
    ]
