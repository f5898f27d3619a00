"""The commands that serve and publish: serve, archive, archive-import, mcp, form, and `db upgrade`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import Commands, JsonOpt, print_json, relative
from newsletter.errors import NewsletterError

db_app = typer.Typer(cls=Commands, no_args_is_help=True, rich_markup_mode=None, help="The database.")


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply the schema migrations the database lacks (NEWSLETTER_DATABASE_URL, or subscribers/newsletter.db)."""
    from newsletter.store import Store, database_url, engine_name
    from newsletter.workspace import Workspace

    url = database_url(Workspace.discover().root)
    store = Store.open(url, upgrade=False)
    try:
        applied, version = store.upgrade(), store.version()
    finally:
        store.close()
    if as_json:
        print_json({"database": engine_name(url), "applied": applied, "version": version})
    else:
        done = f"applied {', '.join(map(str, applied))}" if applied else "already up to date"
        typer.echo(f"{engine_name(url)}: {done} (schema version {version})")


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 behind a proxy in a container).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the unsubscribe links, one-click POSTs, the archive and provider webhooks (needs NEWSLETTER_SECRET_KEY)."""
    import logging

    import uvicorn

    from newsletter.sending.wiring import open_store
    from newsletter.tokens import TokenSigner
    from newsletter.web import create_app
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    signer = TokenSigner.from_environment(required=True)
    store = open_store(workspace)
    web_app = create_app(workspace, store, signer)  # refuses a configuration it cannot serve safely
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    typer.echo(
        f"serving {workspace.config.name} on http://{host}:{port}/ (database {store.engine.url.render_as_string()})"
    )
    # No access log: its lines would hold the unsubscribe tokens; web.py logs a hash of each path instead.
    # X-Forwarded-For only from the proxies newsletter.toml names ([serve] trusted_proxies): by default uvicorn
    # believes anyone who connects from 127.0.0.1, whatever is in front of it.
    trusted = workspace.config.serve.trusted_proxies
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        access_log=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        log_level="warning",
    )


def archive(
    issues: Annotated[
        list[str] | None,
        typer.Argument(help="Issues to publish before they are sent (folders or slugs); the sent ones are always in."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: build/archive).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the web archive `serve` shows as static files (index, a page per issue with its images, Atom feed)."""
    from newsletter.archive import write_archive
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    named = [Workspace.for_issue(ref) for ref in issues or []]
    workspace = named[0][0] if named else Workspace.discover()
    store = open_store(workspace)
    try:
        result = write_archive(workspace, store, [folder for _, folder in named], out)
    finally:
        store.close()
    for slug in result.skipped:
        typer.echo(f"warning: {slug} was sent but its folder is gone or no longer renders; not archived", err=True)
    if as_json:
        print_json(result.to_json())
        return
    if result.left:
        typer.echo(f"left in place, no longer in the archive: {', '.join(result.left)} (delete them to unpublish)")
    shown_issues = ", ".join(result.issues) or "no issue yet"
    typer.echo(f"wrote {relative(result.out / 'index.html')}: {shown_issues} ({result.files} files)")


def archive_import(
    export: Annotated[
        Path,
        typer.Argument(
            help="Mailchimp's account export or Substack's export: the .zip it gave, or the folder it unzips to."
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be imported; write nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bring the past issues of a Mailchimp or Substack export into the archive, as sent, without their tracking.

    Each sent campaign becomes archive/imported/<date>-<subject>/ (its page and meta.json), which `archive` and
    `serve` list among the sent issues; delete a folder to take one out. Running it again changes nothing.
    """
    from newsletter.archive_import import import_archive
    from newsletter.workspace import Workspace

    report = import_archive(Workspace.discover(), export, dry_run=dry_run)
    if as_json:
        print_json(report.to_json())
    else:
        typer.echo(f"{report.summary()}, in {relative(report.folder)}")


def mcp_server(
    workspace: Annotated[
        Path | None, typer.Option(help="The workspace to serve (default: the one around the current folder).")
    ] = None,
) -> None:
    """Serve the MCP tools on stdio, for an agent's host: draft, check, preview, dry-run and send issues.

    stdout carries only the protocol; logs go to stderr. A send needs the confirmation code of a dry run.
    """
    from newsletter.mcp import serve as serve_mcp
    from newsletter.workspace import Workspace

    serve_mcp(Workspace.discover(workspace).root)


def form(
    list_slug: Annotated[str, typer.Argument(help="The list open to sign-up, e.g. alliances.")],
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="The form's language, one of the list's (default: its first language)."),
    ] = None,
) -> None:
    """Print an HTML sign-up form for LIST to paste in a website (it posts to base_url/subscribe/LIST); a list of
    several languages lets the person choose theirs."""
    from newsletter.errors import ConfigError
    from newsletter.i18n import translate
    from newsletter.pages import Pages, language_choice
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    config = workspace.config
    settings = config.lists.get(list_slug)
    if settings is None or not settings.subscribe:
        raise NewsletterError(
            f"the list '{list_slug}' is not open to sign-up: add [lists.{list_slug}] subscribe = true to "
            "newsletter.toml"
        )
    if not config.base_url:
        raise ConfigError("base_url is not set: the form posts to the public URL of `newsletter serve`")
    offered = config.list_languages(list_slug)
    if lang is not None and lang not in offered:
        raise NewsletterError(
            f"--lang {lang}: {list_slug} is in {', '.join(offered)}; add it to [lists.{list_slug}] langs first"
        )
    lang = lang or offered[0]
    title = config.list_title(list_slug, lang) or config.name
    consent = settings.consent_in(lang) or translate(
        lang, "consent_default", list=title, publisher=config.publisher.name or config.name
    )
    action = f"{config.base_url}/subscribe/{list_slug}" + ("" if lang == offered[0] else f"?lang={lang}")
    snippet = Pages(config, workspace.templates_dir).text(
        "form.html.j2", lang, action=action, consent=consent, languages=language_choice(offered, lang)
    )
    typer.echo(snippet.strip())
    typer.echo(
        "<!-- Hide the honeypot where your site has no stylesheet for it: "
        ".away{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden} -->"
    )
