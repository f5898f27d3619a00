"""Local preview: a server on 127.0.0.1 that rebuilds the issue as its files change, and PNG screenshots.

The page at / shows the desktop (600 px), mobile (375 px) and plain-text views side by side or one at a time,
and the problems `check` finds. An issue with a translation beside issue.yaml (issue.en.yaml) shows it at /en/,
each version's page linking to the others (its language switch); `--lang en` screenshots that version. What they
show is the message a member gets, its HTML and text parts built by the code that builds a send's messages
(sending.send.member_message): the same footer, with the https one-click unsubscribe link and the view-online link,
and the placeholders filled, for a sample member (or with --list, the list's first subscribed member). The build's
web version (build/<slug>/index.html) is not a preview.

A small script, added to the live server's pages only (never to a build, nor to a screenshot), polls /__version
and reloads when a rebuild happened. Screenshots use the system's Chromium through Playwright.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import os
import secrets
import shutil
import socket
import threading
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from watchfiles import awatch

from newsletter.checks import CheckResult, VersionsCheck, address_problem, check_versions
from newsletter.config import CONFIG_FILE
from newsletter.errors import NewsletterError, PreviewError
from newsletter.i18n import LANGUAGES, translate
from newsletter.message import Outgoing, Recipient
from newsletter.render import PACKAGE_TEMPLATES, RenderedIssue, image_size
from newsletter.sending.send import member_message
from newsletter.sending.wiring import open_store
from newsletter.store import ListRow, Member, MembershipStatus
from newsletter.tokens import TokenSigner
from newsletter.transports import Dsn, transport_dsn
from newsletter.workspace import Workspace

if TYPE_CHECKING:  # imported when a screenshot is taken: Playwright is slow to import
    from playwright.sync_api import Browser, Page, Playwright
    from playwright.sync_api import Route as PageRoute

DEFAULT_PORT = 8642
VIEWS = {"desktop": 600, "mobile": 375}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Without the networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RELOAD_SCRIPT = (
    "<script>/* newsletter preview only: reload after a rebuild */(function(){var seen=null;"
    "setInterval(function(){fetch('/__version',{cache:'no-store'}).then(function(r){return r.text()})"
    ".then(function(v){if(seen!==null&&v!==seen){location.reload()}seen=v}).catch(function(){})},500)})();"
    "</script>"
)
# Who the preview shows the message to without --list: nobody (subscriber 0, as a test send's recipient, so that
# its unsubscribe link changes nothing), named in the issue's language, on a domain reserved by RFC 2606.
SAMPLE_MEMBERS = {
    "fr": ("Camille Tremblay", "camille.tremblay@example.org"),
    "en": ("Alex Taylor", "alex.taylor@example.org"),
}
SAMPLE_LIST = "exemple"  # the list its sample unsubscribe link names
# Only the headers carry the sender, which the preview does not show: an issue without one still previews.
SAMPLE_SENDER = "Newsletter <newsletter@example.org>"
# The text part as sent: every line as it is (no re-wrap, no URL cut at a hyphen), 78 columns within 600 px.
TEXT_STYLE = "white-space: pre; font: 12px/1.45 ui-monospace, monospace; padding: 10px; margin: 0;"


@dataclass
class VersionView:
    """One version of the issue as the preview shows it: the member's message of its render, served under its path
    ("" for issue.yaml, "en/" for issue.en.yaml: /en/email.html, whose relative links climb to /images/)."""

    lang: str
    path: str
    result: CheckResult
    html: str = ""
    text: str = ""
    recipient: str = ""  # "Name <address>" of the member shown
    note: str = ""  # what the page says of that member and of its unsubscribe link

    @property
    def rendered(self) -> RenderedIssue | None:
        return self.result.rendered

    @property
    def subject(self) -> str | None:
        return self.result.issue.model.subject if self.result.issue is not None else None


class PreviewState:
    """The latest build of one issue as a member gets it, every version of it, rebuilt on demand; `version` grows
    with every rebuild.

    list_slug: show the message of that list's first subscribed member instead of a sample member's.
    """

    def __init__(self, folder: Path, list_slug: str | None = None):
        self.folder = folder
        self.list_slug = list_slug
        self.version = 0
        self.checked: VersionsCheck | None = None
        self.views: list[VersionView] = []  # issue.yaml's first, then each translation's
        self.failure: str | None = None
        self.lock = threading.Lock()
        # Signs the sample's unsubscribe link when NEWSLETTER_SECRET_KEY is not set: made here, known nowhere else,
        # so that the link is the shape of a real one but works nowhere (and stays the same across rebuilds).
        self.ephemeral_key = secrets.token_urlsafe(32)
        self.rebuild()

    @property
    def workspace(self) -> Workspace:
        return Workspace.discover(self.folder.parent)

    def watched_trees(self) -> list[Path]:
        """Folders whose files feed the build: the issue, the workspace's templates, the packaged templates."""
        return [p for p in (self.folder, self.workspace.templates_dir, PACKAGE_TEMPLATES) if p.is_dir()]

    def rebuild(self) -> None:
        with self.lock:
            try:
                workspace = self.workspace  # newsletter.toml may have changed too
                # Relative image URLs, whatever asset_base_url says: the preview serves the images itself.
                checked = check_versions(self.folder, workspace.config, workspace.templates_dir, asset_base_url=None)
                views = []
                for version in checked.versions:
                    result = version.result
                    path = result.issue.web_path if result.issue is not None else ""
                    view = VersionView(version.lang or "", path, result)
                    if result.rendered is not None:
                        message = self.member_message(workspace, result, view)
                        view.html, view.text = message.html, message.text
                    views.append(view)
                self.checked, self.views, self.failure = checked, views, None
            except NewsletterError as exc:  # e.g. newsletter.toml became invalid while being edited
                self.checked, self.views, self.failure = None, [], str(exc)
            self.version += 1

    def member_message(self, workspace: Workspace, result: CheckResult, view: VersionView) -> Outgoing:
        """The message the member shown gets of this render, as a send builds it; sets the view's recipient and
        note."""
        assert result.rendered is not None and result.issue is not None
        config, model = workspace.config, result.issue.model
        sender = model.from_ or config.sender.from_
        if not sender or address_problem(sender):  # check reports it
            sender = SAMPLE_SENDER
        secret_key = os.environ.get("NEWSLETTER_SECRET_KEY", "")
        signer = TokenSigner(secret_key or self.ephemeral_key)
        key_said = "NEWSLETTER_SECRET_KEY" if secret_key else "a key made for this preview"
        if self.list_slug is None:
            name, address = SAMPLE_MEMBERS.get(result.rendered.lang, SAMPLE_MEMBERS["en"])
            mailing_list, recipient = ListRow(0, SAMPLE_LIST, SAMPLE_LIST), Recipient(0, address, name)
            view.recipient = f"{name} <{address}>"
            view.note = (
                f"As a member gets it, here {view.recipient}, a sample member: its unsubscribe link "
                f"(…/u/…) is a sample too, for nobody, signed with {key_said}."
            )
        else:
            mailing_list, member = self.first_member(workspace, self.list_slug)
            recipient = Recipient(member.subscriber_id, member.email, member.name, member.fields, member.lang)
            view.recipient = f"{member.name} <{member.email}>" if member.name else member.email
            works = "it works: following it unsubscribes them" if secret_key else "it works nowhere"
            view.note = (
                f"As {view.recipient}, the first subscribed member of {mailing_list.slug}, gets it; its "
                f"unsubscribe link is theirs, signed with {key_said} ({works})."
            )
        if _uses_provider_unsubscribe():
            # The provider replaces its own placeholder per recipient; the preview has no page of theirs to show.
            view.note += (
                " NEWSLETTER_TRANSPORT uses the provider's unsubscribe (unsubscribe=provider): its messages carry "
                "the provider's link where this shows this tool's."
            )
        reply_to = model.reply_to or config.sender.reply_to
        return member_message(workspace, result.rendered, sender, reply_to, mailing_list, recipient, signer)

    @staticmethod
    def first_member(workspace: Workspace, list_slug: str) -> tuple[ListRow, Member]:
        """The list and its first subscribed member (as a send's first message goes to); NewsletterError if none."""
        store = open_store(workspace)
        try:
            mailing_list = store.find_list(list_slug)
            member = next(store.iter_members(mailing_list.id, MembershipStatus.SUBSCRIBED, limit=1, page=1), None)
        finally:
            store.close()
        if member is None:
            raise NewsletterError(
                f"the list '{list_slug}' has nobody subscribed; preview without --list shows a sample member"
            )
        return mailing_list, member

    def diagnostics(self) -> list[dict]:
        if self.failure:
            return [{"severity": "error", "code": "config", "message": self.failure}]
        return [d.to_json() for d in self.checked.report.diagnostics] if self.checked else []

    def view(self, lang: str | None = None) -> VersionView | None:
        """The version in lang (None: issue.yaml's); None before a first build that worked."""
        return next((v for v in self.views if lang is None or v.lang == lang), None)

    def view_at(self, path: str) -> VersionView | None:
        """The version served under path ("" or "en/")."""
        return next((v for v in self.views if v.path == path), None)

    def check_lang(self, lang: str | None) -> None:
        """NewsletterError unless the issue has a version in lang (None: issue.yaml)."""
        if lang is not None and self.checked is not None:
            self.checked.version(lang)

    # What the main version shows, as before issues had translations.
    @property
    def html(self) -> str:
        view = self.view()
        return view.html if view else ""

    @property
    def text(self) -> str:
        view = self.view()
        return view.text if view else ""

    @property
    def recipient(self) -> str:
        view = self.view()
        return view.recipient if view else ""

    @property
    def note(self) -> str:
        view = self.view()
        return view.note if view else ""

    @property
    def result(self) -> CheckResult | None:
        view = self.view()
        return view.result if view else None

    @property
    def rendered(self) -> RenderedIssue | None:
        """The last render of issue.yaml, None when the issue or the config has errors that stop it."""
        return self.result.rendered if self.result is not None else None

    def rendered_ok(self) -> bool:
        return self.rendered is not None

    def images(self) -> dict[str, Path]:
        """Every image the versions show, by its name under images/ (they share the issue's folder)."""
        return {name: file for view in self.views if view.rendered for name, file in view.rendered.images.items()}


def _uses_provider_unsubscribe() -> bool:
    try:
        return Dsn.parse(transport_dsn(None)).options.get("unsubscribe") == "provider"
    except NewsletterError:  # a DSN send would refuse: not the preview's to report
        return False


async def watch_and_rebuild(state: PreviewState, stop: asyncio.Event) -> None:
    """Rebuild when a file of the issue, a template or newsletter.toml changes, until stop is set.

    The workspace root is watched on its own, not recursively (it may hold a virtualenv or build/), for
    newsletter.toml and for a templates/ folder created after the preview started; that restarts the recursive
    watch of the template and issue folders, followed by one more rebuild for what changed while it restarted.
    """
    root = state.workspace.root
    relevant = {root / CONFIG_FILE, root / "templates"}
    watching: list[Path] = []
    trees_changed = asyncio.Event()

    async def rebuild() -> None:
        await asyncio.to_thread(state.rebuild)

    async def watch_root() -> None:
        async for changes in awatch(root, stop_event=stop, recursive=False, debounce=150, step=50):
            if any(Path(path) in relevant for _, path in changes):
                await rebuild()
                if state.watched_trees() != watching:
                    trees_changed.set()

    async def watch_trees(trees: list[Path], restart: asyncio.Event) -> None:
        async for _ in awatch(*trees, stop_event=restart, debounce=150, step=50):
            await rebuild()

    async def rebuild_soon() -> None:
        await asyncio.sleep(0.5)
        await rebuild()

    root_watcher = asyncio.create_task(watch_root())
    restarted = False
    while not stop.is_set():
        watching[:] = state.watched_trees()
        trees_changed.clear()
        restart = asyncio.Event()
        tasks = [asyncio.create_task(watch_trees(list(watching), restart))]
        if restarted:
            tasks.append(asyncio.create_task(rebuild_soon()))
        waiters = [asyncio.create_task(trees_changed.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        restart.set()
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        restarted = True
    await asyncio.gather(root_watcher, return_exceptions=True)


def create_app(state: PreviewState, *, watch: bool = True) -> Starlette:
    """The preview's pages. watch: rebuild as files change, and add the reload script to the pages (else, as for
    a screenshot, every page is the member's part as it is).

    /email.html is the member's HTML part, /email.txt their text part (text/plain), /text.html that text in a page
    that shows it as sent (what the text screenshot takes); a translation's are under its language, /en/email.html
    (and its page, /en/). The images are served here, by relative URLs (the preview renders without
    asset_base_url), not from where the messages link them.
    """
    script = RELOAD_SCRIPT if watch else ""

    def version_of(request: Request) -> VersionView | None:
        """The version a request names by its path (/ or /en/), None for none; the main one before a first build
        (whose page says what stops it)."""
        lang = request.path_params.get("lang")
        return state.view() if lang is None else state.view_at(f"{lang}/")

    def under(
        lang: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """endpoint for the version in lang: its page at /LANG/…"""

        async def version_endpoint(request: Request) -> Response:
            request.path_params["lang"] = lang
            return await endpoint(request)

        return version_endpoint

    async def shell(request: Request) -> Response:
        if "lang" in request.path_params and version_of(request) is None:
            return PlainTextResponse("not found", status_code=404)
        return HTMLResponse(_shell_page(state, version_of(request)))

    async def email_html(request: Request) -> Response:
        view = version_of(request)
        if view is None and "lang" in request.path_params:
            return PlainTextResponse("not found", status_code=404)
        if view is None or view.rendered is None:
            return HTMLResponse(_problems_page(state) + script, status_code=200)
        return HTMLResponse(_inject(view.html, script), headers={"Cache-Control": "no-store"})

    async def email_text(request: Request) -> Response:
        view = version_of(request)
        if view is None and "lang" in request.path_params:
            return PlainTextResponse("not found", status_code=404)
        return PlainTextResponse(view.text if view else "", headers={"Cache-Control": "no-store"})

    async def text_page(request: Request) -> Response:
        view = version_of(request)
        if view is None and "lang" in request.path_params:
            return PlainTextResponse("not found", status_code=404)
        if view is None or view.rendered is None:
            return HTMLResponse(_problems_page(state) + script, status_code=200)
        return HTMLResponse(_text_page(view) + script, headers={"Cache-Control": "no-store"})

    async def image(request: Request) -> Response:
        name = request.path_params["name"]
        images = state.images()
        if name not in images or not images[name].is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(images[name], headers={"Cache-Control": "no-store"})

    async def version(request: Request) -> Response:
        return PlainTextResponse(str(state.version), headers={"Cache-Control": "no-store"})

    async def status(request: Request) -> Response:
        return JSONResponse({"version": state.version, "diagnostics": state.diagnostics()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_and_rebuild(state, stop)) if watch else None
        try:
            yield
        finally:
            stop.set()
            if task:
                await asyncio.wait([task], timeout=2)

    routes = [
        Route("/", shell),
        Route("/email.html", email_html),
        Route("/email.txt", email_text),
        Route("/text.html", text_page),
        Route("/images/{name:path}", image),
        Route("/__version", version),
        Route("/status.json", status),
    ]
    for lang in LANGUAGES:  # a translation's pages, under its language: the same pages of that version
        routes += [
            Route(f"/{lang}/", under(lang, shell)),
            Route(f"/{lang}/email.html", under(lang, email_html)),
            Route(f"/{lang}/email.txt", under(lang, email_text)),
            Route(f"/{lang}/text.html", under(lang, text_page)),
        ]
    return Starlette(routes=routes, lifespan=lifespan)


def _inject(page: str, script: str) -> str:
    index = page.rfind("</body>")
    return page[:index] + script + page[index:] if index >= 0 else page + script


def _problem_list(state: PreviewState) -> str:
    items = []
    for d in state.diagnostics():
        where = ":".join(str(d[k]) for k in ("file", "line", "column") if d.get(k) is not None)
        where = where.replace(str(state.folder.parent.parent) + os.sep, "")
        items.append(
            f'<li class="{d["severity"]}"><b>{d["severity"]}</b> {html_lib.escape(where)} '
            f"{html_lib.escape(d['message'])}</li>"
        )
    return f'<ul class="problems">{"".join(items)}</ul>' if items else ""


def _problems_page(state: PreviewState) -> str:
    return (
        "<!doctype html><meta charset=utf-8><title>Problems</title>"
        "<style>body{font:15px system-ui,sans-serif;margin:24px}li{margin:6px 0}.error b{color:#b00020}"
        ".warning b{color:#9a6700}</style><h1>This issue does not render</h1>" + _problem_list(state)
    )


def _text_page(view: VersionView) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>Plain text</title><style>body {{ margin: 0; background: #fff; }} pre {{ {TEXT_STYLE} }}</style>"
        f"</head><body><pre>{html_lib.escape(view.text)}</pre></body></html>"
    )


def _version_switch(state: PreviewState, shown: VersionView | None) -> str:
    """Links to each version's page, in its own language ("Français", "English"), when there are several."""
    if len(state.views) < 2:
        return ""
    links = []
    for view in state.views:
        current = ' aria-current="page"' if view is shown else ""
        name = html_lib.escape(translate(view.lang, "version_name"))
        links.append(f'<a href="/{view.path}" hreflang="{view.lang}" lang="{view.lang}"{current}>{name}</a>')
    return f'<nav class="versions" aria-label="Versions">{"".join(links)}</nav>'


def _shell_page(state: PreviewState, shown: VersionView | None = None) -> str:
    subject = (shown.subject if shown else None) or state.folder.name
    prefix = "/" + (shown.path if shown else "")  # its pages: /email.html, or /en/email.html
    text = shown.text if shown else ""
    note = shown.note if shown else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview: {html_lib.escape(subject)}</title>
<style>
body {{ margin: 0; font: 14px system-ui, sans-serif; background: #dfe3e6; color: #222; }}
header {{ position: sticky; top: 0; background: #1f2428; color: #fff; padding: 10px 16px; display: flex;
  gap: 12px; align-items: center; z-index: 1; }}
header h1 {{ font-size: 15px; margin: 0 12px 0 0; font-weight: 600; }}
header button {{ background: #3a4147; color: #fff; border: 0; border-radius: 4px; padding: 6px 12px;
  cursor: pointer; }}
header button[aria-pressed="true"] {{ background: #0a84ff; }}
nav.versions {{ display: flex; gap: 4px; margin-left: auto; }}
nav.versions a {{ color: #fff; background: #3a4147; border-radius: 4px; padding: 6px 12px; text-decoration: none; }}
nav.versions a[aria-current="page"] {{ background: #0a84ff; }}
.problems {{ margin: 0; padding: 8px 16px 8px 32px; background: #fff8e1; }}
.problems .error b {{ color: #b00020; }} .problems .warning b {{ color: #9a6700; }}
main {{ display: flex; flex-wrap: wrap; gap: 24px; padding: 24px; align-items: flex-start;
  justify-content: center; }}
figure {{ margin: 0; }} figcaption {{ font-weight: 600; margin-bottom: 6px; }}
iframe {{ border: 0; background: #fff; box-shadow: 0 1px 4px rgba(0,0,0,.2); display: block; }}
pre {{ {TEXT_STYLE} background: #fff; max-width: calc(100vw - 48px); overflow-x: auto;
  box-shadow: 0 1px 4px rgba(0,0,0,.2); }}
.member {{ margin: 0; padding: 8px 16px; background: #eef4f8; }}
main[data-view="desktop"] figure:not(#desktop), main[data-view="mobile"] figure:not(#mobile),
main[data-view="text"] figure:not(#text) {{ display: none; }}
</style></head>
<body>
<header><h1>{html_lib.escape(subject)}</h1>
<button data-view="all" aria-pressed="true">Side by side</button>
<button data-view="desktop">Desktop 600 px</button>
<button data-view="mobile">Mobile 375 px</button>
<button data-view="text">Plain text</button>
{_version_switch(state, shown)}</header>
<p class="member">{html_lib.escape(note)}</p>
{_problem_list(state)}
<main data-view="all">
<figure id="desktop"><figcaption>Desktop, 600 px</figcaption>
<iframe src="{prefix}email.html" width="{VIEWS["desktop"]}" height="800" title="Desktop view"></iframe></figure>
<figure id="mobile"><figcaption>Mobile, 375 px</figcaption>
<iframe src="{prefix}email.html" width="{VIEWS["mobile"]}" height="800" title="Mobile view"></iframe></figure>
<figure id="text"><figcaption>Plain text</figcaption><pre>{html_lib.escape(text)}</pre></figure>
</main>
<script>
document.querySelectorAll('iframe').forEach(function (frame) {{
  frame.addEventListener('load', function () {{
    frame.style.height = frame.contentDocument.documentElement.scrollHeight + 'px';
  }});
}});
var main = document.querySelector('main');
function show(view) {{
  main.dataset.view = view;
  document.querySelectorAll('header button').forEach(function (b) {{
    b.setAttribute('aria-pressed', String(b.dataset.view === view));
  }});
  location.hash = view === 'all' ? '' : view;
}}
document.querySelectorAll('header button').forEach(function (b) {{
  b.addEventListener('click', function () {{ show(b.dataset.view); }});
}});
if (location.hash.length > 1) show(location.hash.slice(1));
document.querySelectorAll('nav.versions a').forEach(function (a) {{
  a.addEventListener('click', function () {{ a.href = a.getAttribute('href').split('#')[0] + location.hash; }});
}});
</script>
{RELOAD_SCRIPT}
</body></html>"""


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        if port == 0:
            raise
        sock.bind(("127.0.0.1", 0))  # the usual port is taken: any free one will do
    sock.listen(128)
    return sock


def _server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    return uvicorn.Server(config)


def serve_preview(
    folder: Path,
    *,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    announce: Callable[[str], object] = print,
    list_slug: str | None = None,
    lang: str | None = None,
) -> None:
    """Serve the preview until interrupted (Ctrl-C); lang: open the page of that version (/en/)."""
    state = _started(folder, list_slug)
    shown = _shown(state, lang)
    sock = _bind(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/{shown.path if shown else ''}"
    announce(url)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    _server(create_app(state)).run(sockets=[sock])


def _started(folder: Path, list_slug: str | None) -> PreviewState:
    """The first build; what stops it before any page (no such list, a bad NEWSLETTER_SECRET_KEY) is an error
    then, where a later rebuild shows it in the page."""
    state = PreviewState(folder, list_slug)
    if state.failure:
        raise PreviewError(state.failure)
    return state


def _shown(state: PreviewState, lang: str | None) -> VersionView | None:
    """The version in lang (None: issue.yaml's); NewsletterError naming the versions when there is none."""
    state.check_lang(lang)
    return state.view(lang)


@contextmanager
def running_preview(
    folder: Path, *, watch: bool = False, list_slug: str | None = None
) -> Iterator[tuple[str, PreviewState]]:
    """Run the preview server in a background thread for the duration of the block; yield (base URL, state)."""
    state = _started(folder, list_slug)
    sock = _bind(0)
    server = _server(create_app(state, watch=watch))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise PreviewError("the preview server did not start")
        threading.Event().wait(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", state
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def chromium_executable() -> str:
    """The Chromium to drive: $NEWSLETTER_CHROMIUM, else the first Chromium or Chrome on PATH."""
    explicit = os.environ.get("NEWSLETTER_CHROMIUM")
    if explicit:
        if not Path(explicit).is_file():
            raise PreviewError(f"NEWSLETTER_CHROMIUM={explicit} does not exist")
        return explicit
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    raise PreviewError(
        "Chromium not found: install it (Debian/Ubuntu: apt-get install chromium) "
        "or set NEWSLETTER_CHROMIUM to a Chromium or Chrome executable"
    )


def launch_chromium(playwright: Playwright) -> Browser:
    """Launch the system's headless Chromium through Playwright (never a downloaded browser build)."""
    args = list(CHROMIUM_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to sandbox as root
    try:
        return playwright.chromium.launch(executable_path=chromium_executable(), args=args)
    except PreviewError:
        raise
    except Exception as exc:  # Playwright raises its own Error types for a browser that will not start
        raise PreviewError(f"Chromium failed to start: {str(exc).splitlines()[0]}") from None


def block_remote_requests(page: Page) -> None:
    """Let the page load only from this machine: a preview must not call out (and here it cannot)."""

    def route(route: PageRoute) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "file:", "data:", "about:")):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", route)


@dataclass
class Screenshot:
    path: Path
    width: int  # the PNG's: wider than the viewport when the page scrolls sideways (a text line over the width)
    height: int
    view: str
    diagnostics: list[dict]
    viewport: int = 0  # the width asked for
    recipient: str = ""  # the member whose message it shows
    note: str = ""

    def to_json(self) -> dict:
        return {
            "png": str(self.path),
            "width": self.width,
            "height": self.height,
            "viewport": self.viewport or self.width,
            "view": self.view,
            "recipient": self.recipient,
            "note": self.note,
            "diagnostics": self.diagnostics,
        }


def capture_full_page(page: Page, output: Path, *, tries: int = 3) -> None:
    """page.screenshot(full_page=True), tried again after a moment: on a busy machine Chromium's compositor may
    not have a frame ready ("Unable to capture screenshot"), which the next try finds."""
    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(1, tries + 1):
        try:
            page.screenshot(path=str(output), full_page=True)
            return
        except PlaywrightError as exc:
            if attempt == tries:
                raise PreviewError(f"Chromium could not take the screenshot: {str(exc).splitlines()[0]}") from None
            page.wait_for_timeout(250 * attempt)


def take_screenshot(
    folder: Path,
    output: Path,
    *,
    width: int = VIEWS["desktop"],
    view: str = "html",
    list_slug: str | None = None,
    lang: str | None = None,
) -> Screenshot:
    """Render the issue as a member gets it, open it in headless Chromium at width px, and save a full-page PNG.
    lang: of the version in that language (issue.en.yaml); None: issue.yaml's."""
    return take_screenshots(folder, [(width, output)], view=view, list_slug=list_slug, lang=lang)[0]


def take_screenshots(
    folder: Path,
    shots: list[tuple[int, Path]],
    *,
    view: str = "html",
    list_slug: str | None = None,
    lang: str | None = None,
) -> list[Screenshot]:
    """One full-page PNG per (width, file), from one render and one browser: the HTML part (view "html") or the
    text part as sent (view "text") of the version in lang (None: issue.yaml's), with nothing added to either."""
    from playwright.sync_api import sync_playwright

    taken = []
    with running_preview(folder, list_slug=list_slug) as (base, state):
        shown = _shown(state, lang)  # before a browser starts: no such version is a one-line error
        path = shown.path if shown else ""
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                for width, output in shots:
                    page = browser.new_page(viewport={"width": width, "height": 800})
                    try:
                        block_remote_requests(page)
                        page.goto(f"{base}/{path}{'text' if view == 'text' else 'email'}.html", wait_until="load")
                        output.parent.mkdir(parents=True, exist_ok=True)
                        capture_full_page(page, output)
                    finally:
                        page.close()
                    png_width, png_height = image_size(output) or (width, 0)  # Chromium writes a PNG
                    recipient, note = (shown.recipient, shown.note) if shown else ("", "")
                    shot = Screenshot(output, png_width, png_height, view, state.diagnostics(), width, recipient, note)
                    taken.append(shot)
            finally:
                browser.close()
    return taken
