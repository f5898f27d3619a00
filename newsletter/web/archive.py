"""GET /archive/: the web version of every issue a campaign started sending, its images and events' .ics files,
the past issues imported from another tool (archive/imported/), and an Atom feed; and the page of each list's
welcome email, which neither the index nor the feed lists. An issue sent in two languages has its translation's
page at /archive/{slug}/{lang}/ (the pages linking each other relatively: "en/", "../") and that language's
feed at /archive/feed.{lang}.xml.

Only routes: which issues, their pages, the index's data and the feed come from newsletter/archive.py, which
`newsletter archive` also writes as static files.
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.archive import (
    Entry,
    WebVersion,
    archived_entries,
    feed_document,
    feed_languages,
    index_feeds,
    index_issues,
    sent_entries,
    sent_version,
    welcome_entries,
)
from newsletter.archive_import import imported_version
from newsletter.web.site import Site

# An email is styled inline: its page allows inline styles, and still runs and loads nothing else.
ISSUE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; frame-ancestors 'none'"


def routes(site: Site) -> list[Route]:
    workspace, store, config = site.workspace, site.store, site.config
    cache: dict[str, WebVersion] = {}

    def archived(slug: str) -> WebVersion | None:
        """The page of an issue that was sent, as its campaign froze it, made once per process."""
        if slug in cache:
            return cache[slug]
        entry = next((e for e in sent_entries(store) if e.slug == slug), None)
        welcome = False
        if entry is None:  # a list's welcome email: its page, for its view-online link (listed nowhere)
            entry = next((e for e in welcome_entries(store) if e.slug == slug), None)
            welcome = entry is not None
        if entry is None:  # a past issue imported from another tool: read each time, a new import may change it
            return imported_version(workspace, slug)
        unsubscribe = f"{config.base_url or ''}/"
        version = sent_version(workspace, store, entry, unsubscribe_url=unsubscribe, welcome=welcome, page="")
        if version is not None and not welcome:  # a welcome's latest version may change while serve runs
            cache[slug] = version
        return version

    def listed() -> list[Entry]:
        """The index's and the feeds' entries, a sent issue's with its other versions (from its page, made once)."""
        entries = archived_entries(workspace, store)
        sent = {entry.slug for entry in sent_entries(store)}
        return [
            replace(entry, translations=version.entry.translations)
            if entry.slug in sent and (version := archived(entry.slug)) is not None
            else entry
            for entry in entries
        ]

    def version_of(slug: str, lang: str | None) -> WebVersion | None:
        """The issue's page in lang (None: its first language's); None when it has none."""
        found = archived(slug)
        if found is None or lang is None:
            return found
        return next((t for t in found.translations if t.lang == lang), None)

    async def index(request: Request) -> Response:
        entries = await asyncio.to_thread(listed)
        return site.render(
            "archive.html.j2",
            site.lang,
            issues=index_issues(entries, config, site.lang),
            feeds=index_feeds(config, entries),
        )

    async def issue(request: Request) -> Response:
        params = request.path_params
        found = await asyncio.to_thread(version_of, params["slug"], params.get("lang"))
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        return HTMLResponse(
            found.html, headers={"Content-Security-Policy": ISSUE_POLICY, "Cache-Control": "public, max-age=300"}
        )

    async def image(request: Request) -> Response:
        found = await asyncio.to_thread(archived, request.path_params["slug"])
        name = request.path_params["name"]
        data = await asyncio.to_thread(found.image, name) if found else None  # only a name the page shows
        if data is None:
            return PlainTextResponse("not found", status_code=404)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(data, media_type=kind, headers={"Cache-Control": "public, max-age=86400"})

    async def calendar(request: Request) -> Response:
        found = await asyncio.to_thread(version_of, request.path_params["slug"], request.path_params.get("lang"))
        text = found.calendars.get(request.path_params["name"]) if found else None  # only a name the issue has
        if text is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(
            text.encode("utf-8"),
            media_type="text/calendar; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def feed(request: Request) -> Response:
        url = f"{config.base_url}/archive" if config.base_url else None  # never from Host: ids must not change
        lang = request.path_params.get("lang")
        entries = await asyncio.to_thread(listed)
        if lang is not None and lang not in feed_languages(entries):
            return PlainTextResponse("not found", status_code=404)
        return Response(feed_document(config, entries, url, lang=lang), media_type="application/atom+xml")

    return [
        Route("/archive/", index),
        Route("/archive/feed.xml", feed),
        Route("/archive/feed.{lang}.xml", feed),
        Route("/archive/{slug}/", issue),
        Route("/archive/{slug}/images/{name:path}", image),
        Route("/archive/{slug}/{name}", calendar),
        Route("/archive/{slug}/{lang}/", issue),
        Route("/archive/{slug}/{lang}/{name}", calendar),
    ]
