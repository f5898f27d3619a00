"""The `newsletter` command: parse arguments, call one library function, print, exit. No logic of its own.

Exit codes: 0 success, 1 the command failed (errors found, bad input), 2 bad usage.
Any NewsletterError becomes `error: <message>` on stderr; `--json` prints one JSON document on stdout.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from newsletter import __version__
from newsletter.errors import NewsletterError
from newsletter.i18n import LANGUAGES

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from newsletter.errors import Diagnostic
    from newsletter.sending.send import SendSummary
    from newsletter.workspace import Workspace

T = TypeVar("T")


class _Commands(TyperGroup):
    """Turns every NewsletterError, from any command, into one line on stderr and exit code 1."""

    # Any: the click Context TyperGroup takes is typer's own copy of click's (typer._click) since typer 0.25.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Write an email newsletter as files: check it, build it, preview it, send it.",
)

IssueArg = Annotated[str, typer.Argument(help="The issue: its folder (issues/2025-02-hiver) or its slug.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _print_json(document: object) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


def _relative(path: str | Path | None) -> str | None:
    """A path as a person reads it: relative below the current folder, absolute elsewhere."""
    if path is None:
        return None
    absolute = Path(path).absolute()
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)


def _show(diagnostic: Diagnostic) -> str:
    return diagnostic.format().replace(str(diagnostic.file), _relative(diagnostic.file) or "", 1)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(errors: int, warnings: int) -> str:
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Folder for the new workspace (created if needed).")] = Path("."),
    name: Annotated[str, typer.Option(help="The newsletter's name.")] = "My newsletter",
    lang: Annotated[str, typer.Option(help=f"Language of its issues: {', '.join(LANGUAGES)}.")] = "fr",
    force: Annotated[bool, typer.Option("--force", help="Rewrite newsletter.toml if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace: newsletter.toml, issues/, templates/, subscribers/, issue.schema.json."""
    from newsletter.workspace import init_workspace

    written = init_workspace(path, name, lang, force=force)
    if as_json:
        _print_json({"workspace": str(path.resolve()), "files": [str(p) for p in written]})
        return
    for file in written:
        typer.echo(f"wrote {_relative(file)}")
    typer.echo("next: fill in [publisher] in newsletter.toml, then `newsletter new SLUG`")


@app.command()
def new(
    slug: Annotated[str, typer.Argument(help="The issue's folder name, e.g. 2025-02-hiver.")],
    lang: Annotated[
        str | None, typer.Option(help="Its language (default: the previous issue's, else lang in newsletter.toml).")
    ] = None,
    from_issue: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="PREVIOUS",
            help="Start from this issue (its slug): its YAML with dates cleared and comments on what to replace, "
            "and the images it uses.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create issues/SLUG/issue.yaml from a commented skeleton, or from the previous issue with --from."""
    from newsletter.workspace import Workspace, new_issue

    created = new_issue(Workspace.discover(), slug, lang=lang, from_issue=from_issue)
    if as_json:
        _print_json(created.to_json())
        return
    for warning in created.warnings:
        typer.echo(_show(warning), err=True)
    typer.echo(f"wrote {_relative(created.file)}")
    if created.images:
        typer.echo(f"copied {_plural(len(created.images), 'image')}: {', '.join(created.images)}")
    if created.cleared:
        typer.echo(f"cleared {_plural(len(created.cleared), 'date')} to give again: {', '.join(created.cleared)}")
    typer.echo(f"next: edit it, then `newsletter check {_relative(created.folder)}`")


@app.command()
def check(issue: IssueArg, as_json: JsonOpt = False) -> None:
    """Report every problem in an issue with file:line:col. Exit 1 when there are errors."""
    from newsletter.checks import check_issue
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    report = check_issue(folder, workspace.config, workspace.templates_dir).report
    if as_json:
        _print_json(report.to_json())
    else:
        for diagnostic in report.diagnostics:
            typer.echo(_show(diagnostic), err=diagnostic.severity == "error")
        typer.echo(f"{_relative(folder)}: {_summary(len(report.errors), len(report.warnings))}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def build(
    issue: IssueArg,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: build/SLUG).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check and build an issue: build/SLUG/{index.html,index.txt,issue.mjml,images/}."""
    from newsletter.build import build_issue
    from newsletter.errors import IssueError
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    try:
        result = build_issue(workspace, folder, out)
    except IssueError as exc:
        if as_json:
            _print_json({"ok": False, "errors": [d.to_json() for d in exc.diagnostics]})
        for diagnostic in exc.diagnostics:
            typer.echo(_show(diagnostic), err=True)
        typer.echo(f"error: {_relative(folder)} has errors; nothing was built", err=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(result.to_json())
        return
    for warning in result.warnings:
        typer.echo(_show(warning))
    typer.echo(f"built {_relative(result.html)} ({result.html_bytes / 1024:.1f} KB) and {_relative(result.text)}")


@app.command()
def preview(
    issue: IssueArg,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (another free one if taken).")] = 8642,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the default browser.")] = True,
    screenshot: Annotated[
        Path | None, typer.Option(help="Save a full-page PNG of the email to this file, then exit.")
    ] = None,
    width: Annotated[int, typer.Option(min=200, max=2000, help="Screenshot width in px (375 = phone).")] = 600,
    text: Annotated[bool, typer.Option("--text", help="Screenshot the plain-text part instead.")] = False,
    list_slug: Annotated[
        str | None,
        typer.Option("--list", help="Show the message of this list's first subscribed member, not a sample's."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve a live preview (desktop, mobile, text) of a member's message, reloaded on save; or a PNG."""
    from newsletter.preview import serve_preview, take_screenshot
    from newsletter.workspace import Workspace

    _, folder = Workspace.for_issue(issue)
    if screenshot is None:
        serve_preview(
            folder,
            port=port,
            open_browser=open_browser,
            announce=lambda url: typer.echo(f"previewing {_relative(folder)} at {url} (Ctrl-C to stop)"),
            list_slug=list_slug,
        )
        return
    shot = take_screenshot(folder, screenshot, width=width, view="text" if text else "html", list_slug=list_slug)
    errors = [d for d in shot.diagnostics if d["severity"] == "error"]
    if as_json:
        _print_json(shot.to_json())
    else:
        typer.echo(f"wrote {_relative(shot.path)} ({shot.width}×{shot.height} px)")
        if errors:
            typer.echo(f"error: the issue has {len(errors)} errors; run `newsletter check`", err=True)
    if errors:
        raise typer.Exit(1)


subscribers_app = typer.Typer(
    cls=_Commands, no_args_is_help=True, rich_markup_mode=None, help="Keep the subscriber lists."
)
app.add_typer(subscribers_app, name="subscribers")
ListOpt = Annotated[
    str, typer.Option("--list", help="The list's slug: lowercase letters, digits and hyphens, e.g. alliances.")
]
ListNameOpt = Annotated[
    str | None,
    typer.Option("--list-name", help='The name subscribers see, e.g. "Membres 2025" (default: the newsletter\'s).'),
]


@subscribers_app.command("import")
def subscribers_import(
    csv_file: Annotated[
        Path,
        typer.Argument(help="A CSV file: UTF-8, Windows-1252 or UTF-16 (Excel's Unicode Text); , ; or tab separated."),
    ],
    list_slug: ListOpt,
    list_name: ListNameOpt = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="Write every row rejected or not re-subscribed here (CSV: line, email, reason)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add the CSV's addresses to a list (created if needed); report added, updated, rejected with their line.

    Safe to interrupt: the rows already imported stay, and running it again completes the list.
    """
    from newsletter.progress import ProgressBar
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import import_csv
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    shown = not as_json and sys.stdout.isatty() and sys.stderr.isatty()
    progress = ProgressBar("rows", sys.stderr) if shown else None
    store = open_store(workspace)
    try:
        report = import_csv(store, list_slug, csv_file, list_name=list_name, rejects=rejects, progress=progress)
    finally:
        store.close()
        if progress is not None:
            progress.close()
    if as_json:
        _print_json(report.to_json())
        return
    for line, reason in report.rejected:
        typer.echo(f"{_relative(csv_file)}:{line}: rejected: {reason}", err=True)
    for line, address, why in report.refused:
        typer.echo(f"{_relative(csv_file)}:{line}: not re-subscribed: {address} ({why})", err=True)
    unshown = report.rejected_count - len(report.rejected) + report.refused_count - len(report.refused)
    if unshown:
        where = f"{_relative(rejects)} has them all" if rejects else "--rejects FILE writes them all"
        typer.echo(f"… and {unshown} more rows rejected or not re-subscribed: {where}", err=True)
    typer.echo(
        f"{list_slug}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.refused_count} not re-subscribed, {report.rejected_count} rejected "
        f"({report.encoding}, {'tab' if report.delimiter == chr(9) else repr(report.delimiter)} separated)"
    )


@subscribers_app.command("add")
def subscribers_add(
    address: Annotated[str, typer.Argument(help="The email address.")],
    list_slug: ListOpt,
    name: Annotated[str | None, typer.Option(help="The subscriber's name.")] = None,
    list_name: ListNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe one address to a list (created if needed). Someone who unsubscribed is not subscribed again."""
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import add as add_subscriber
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        result = add_subscriber(store, list_slug, address, name, list_name=list_name)
    finally:
        store.close()
    if as_json:
        _print_json({"email": address, "list": list_slug, "result": result})
    else:
        typer.echo(
            f"{address}: {result}" + (" (unsubscribed, bounced or complained before)" if result == "refused" else "")
        )
    if result == "refused":
        raise typer.Exit(1)


@subscribers_app.command("list")
def subscribers_list(
    list_slug: ListOpt,
    status: Annotated[
        str | None, typer.Option(help="Only this status: subscribed, unsubscribed, bounced, complained.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="At most this many members.")] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first (members are in a stable order).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Show a list's members, streamed (a list of any size); --limit and --offset page through it."""
    from newsletter.sending.wiring import open_store
    from newsletter.store import MembershipStatus
    from newsletter.workspace import Workspace

    if status is not None and status not in tuple(MembershipStatus):
        raise NewsletterError(f"unknown status '{status}'; use one of {', '.join(MembershipStatus)}")
    store = open_store(Workspace.discover())
    try:
        members = store.iter_members(store.list_id(list_slug), status, offset=offset, limit=limit)
        out = sys.stdout
        if as_json:  # one JSON array, written a member at a time
            separator = "[\n  "
            for m in members:
                item = {"email": m.email, "name": m.name, "status": m.status, "fields": m.fields}
                out.write(separator + json.dumps(item, ensure_ascii=False))
                separator = ",\n  "
            out.write("[]\n" if separator.startswith("[") else "\n]\n")
            return
        count = 0
        for member in members:
            out.write(f"{member.email}\t{member.name or ''}\t{member.status}\n")
            count += 1
        out.flush()
        typer.echo(f"{count} member{'s' if count != 1 else ''}", err=True)
    finally:
        store.close()


@subscribers_app.command("remove")
def subscribers_remove(
    address: Annotated[str, typer.Argument(help="The email address.")], list_slug: ListOpt, as_json: JsonOpt = False
) -> None:
    """Unsubscribe an address from a list; the record and its history are kept."""
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import remove as remove_subscriber
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        changed = remove_subscriber(store, list_slug, address)
    finally:
        store.close()
    if as_json:
        _print_json({"email": address, "list": list_slug, "result": "unsubscribed" if changed else "unchanged"})
    else:
        typer.echo(f"{address}: {'unsubscribed' if changed else 'was not subscribed'} from {list_slug}")


@subscribers_app.command("pending")
def subscribers_pending(list_slug: ListOpt, as_json: JsonOpt = False) -> None:
    """Sign-ups waiting for their confirmation (oldest first), with when each last asked."""
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        waiting = store.unconfirmed(store.list_id(list_slug))
    finally:
        store.close()
    if as_json:
        pending = [
            {"email": email, "since": first.isoformat(), "last_asked": last.isoformat()}
            for email, first, last in waiting
        ]
        _print_json({"list": list_slug, "pending": pending})
        return
    for address, first, last in waiting:
        typer.echo(f"{address}\tsince {first:%Y-%m-%d %H:%M} UTC\tlast asked {last:%Y-%m-%d %H:%M} UTC")
    typer.echo(f"{len(waiting)} waiting for confirmation", err=True)


@subscribers_app.command("purge-pending")
def subscribers_purge_pending(
    list_slug: ListOpt,
    older_than: Annotated[
        str, typer.Option(help="Last asked longer ago than this: 7d (a confirmation link's life), 30d, …")
    ] = "7d",
    as_json: JsonOpt = False,
) -> None:
    """Remove the sign-ups never confirmed (Law 25, GDPR: keep nothing longer than needed), and the person when
    nothing else is held about them. A link of a removed sign-up no longer confirms."""
    from newsletter.config import parse_duration
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    try:
        age = dt.timedelta(seconds=parse_duration(older_than))
    except ValueError as exc:
        raise NewsletterError(f"--older-than: {exc}") from None
    store = open_store(Workspace.discover())
    try:
        removed, erased = store.purge_unconfirmed(store.list_id(list_slug), dt.datetime.now(dt.UTC) - age)
    finally:
        store.close()
    if as_json:
        _print_json({"list": list_slug, "older_than": older_than, "removed": removed, "erased": erased})
        return
    for address in removed:
        typer.echo(address)
    typer.echo(f"{len(removed)} unconfirmed sign-ups removed from {list_slug}; {erased} people erased whole", err=True)


@subscribers_app.command("show")
def subscribers_show(
    address: Annotated[str, typer.Argument(help="The email address.")], as_json: JsonOpt = False
) -> None:
    """Everything held about one person: memberships, events (consent), deliveries."""
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        person = store.person(address)
    finally:
        store.close()
    if person is None:
        raise NewsletterError(f"nothing is held about {address}")
    if as_json:
        _print_json(json.loads(json.dumps(person, default=str)))
        return
    typer.echo(f"{person['email']}\t{person['name'] or ''}\tsince {person['created_at']:%Y-%m-%d}")
    for membership in person["memberships"]:
        typer.echo(f"list {membership['list']}: {membership['status']} since {membership['updated_at']:%Y-%m-%d %H:%M}")
    for event in person["events"]:
        typer.echo(f"{event['at']:%Y-%m-%d %H:%M} {event['kind']} ({event['source']}) {event['list'] or ''}")
    for delivery in person["deliveries"]:
        typer.echo(f"campaign {delivery['campaign']} ({delivery['issue']}): {delivery['status']}")


@subscribers_app.command("forget")
def subscribers_forget(
    address: Annotated[str, typer.Argument(help="The email address.")], as_json: JsonOpt = False
) -> None:
    """Erase a person (Law 25, GDPR): only a one-way hash of the address stays, so nobody mails them again."""
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        forgotten = store.forget(address)
    finally:
        store.close()
    if not forgotten:
        raise NewsletterError(f"nothing is held about {address}")
    if as_json:
        _print_json({"email": address, "forgotten": True})
    else:
        typer.echo(f"{address}: forgotten; only a hash of the address is kept, so that no import mails them again")


@subscribers_app.command("export")
def subscribers_export(
    list_slug: ListOpt,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
) -> None:
    """Write a list as CSV on stdout (email, name, status, other fields), streamed: a list of any size."""
    from newsletter.progress import ProgressBar
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import export_csv
    from newsletter.workspace import Workspace

    progress = ProgressBar("rows", sys.stderr) if sys.stderr.isatty() else None  # stdout is the file: not the bar
    store = open_store(Workspace.discover())
    try:
        count = export_csv(store, list_slug, sys.stdout, status, progress=progress)
    finally:
        store.close()
        if progress is not None:
            progress.close()
    typer.echo(f"{count} exported", err=True)


TRANSPORT_HELP = "Where to send: outbox://DIR, smtp://…, postmark+api://…, … (default outbox://build/outbox)."


@subscribers_app.command("sync")
def subscribers_sync(
    transport: Annotated[
        str | None,
        typer.Option("--transport", envvar="NEWSLETTER_TRANSPORT", show_envvar=True, help="The provider's DSN."),
    ] = None,
    list_slug: Annotated[
        str | None,
        typer.Option("--list", help="The list sent through this provider: its unsubscribes count for it alone."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the provider's suppression list: bounces and complaints to every list, unsubscribes to --list (or,
    without it, to every list)."""
    import asyncio

    from newsletter.sending.wiring import open_store
    from newsletter.transports import transport_dsn, transport_from_dsn
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        list_id = store.list_id(list_slug) if list_slug else None
        report = asyncio.run(_sync(store, transport_from_dsn(transport_dsn(transport)), list_id))
    finally:
        store.close()
    if as_json:
        _print_json(report.to_json())
    else:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.kinds.items())) or "nothing"
        typer.echo(f"{report.seen} suppressed addresses ({kinds}); {report.changed} memberships changed")


async def _sync(store, transport, list_id: int | None):
    from newsletter.subscribers import sync_suppressions

    try:
        return await sync_suppressions(store, transport, list_id=list_id)
    finally:
        await transport.aclose()


TransportOpt = Annotated[
    str | None,
    typer.Option(
        "--transport",
        envvar="NEWSLETTER_TRANSPORT",
        show_envvar=True,
        help=TRANSPORT_HELP,
    ),
]


@app.command()
def send(
    issue: IssueArg,
    list_slug: ListOpt,
    transport: TransportOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run", help="Only show what would be sent.")] = True,
    to: Annotated[
        str | None, typer.Option(help="Send one test message, subject prefixed [TEST], to this address.")
    ] = None,
    new_campaign: Annotated[
        bool, typer.Option("--new-campaign", help="Start a new campaign for a changed issue.")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(
            help='Schedule it instead: "2027-02-10 09:00" (in newsletter.toml\'s timezone) or ISO 8601 with an '
            "offset; `newsletter worker` sends it then."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send an issue to a list. A dry run by default; run it again to resume an interrupted send.

    Safe to run twice at once, here or on another host sharing the database: both work on one campaign and
    nobody gets it twice.
    """
    import asyncio

    from newsletter.progress import ProgressLine
    from newsletter.sending.send import send as send_issue
    from newsletter.transports import transport_dsn
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    # A terminal gets the counts; a log only why it waits. The stream of this call, not progress.py's default, the
    # one at its import (imported here, that may be a test's CliRunner's of an earlier call).
    progress = None if as_json else ProgressLine(sys.stderr)
    dsn = transport_dsn(transport)

    def sending(stop: asyncio.Event):
        return send_issue(
            workspace,
            folder,
            list_slug,
            dsn_text=dsn,
            dry_run=dry_run,
            to=to,
            new_campaign=new_campaign,
            at=at,
            stop=stop,
            progress=progress,
        )

    summary = asyncio.run(_until_stopped(sending, "run the same command again to resume"))
    if progress is not None:
        progress.close()
    if as_json:
        _print_json(summary.to_json())
    else:
        _show_send(summary, workspace)
    if not summary.dry_run and not summary.ok:
        raise typer.Exit(1)


async def _until_stopped(start: Callable[[asyncio.Event], Awaitable[T]], resume_hint: str) -> T:
    """Run start(stop); the first Ctrl-C or SIGTERM stops taking new batches, the second abandons those in flight."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None  # asyncio.run's

    def interrupt() -> None:
        if stop.is_set():
            task.cancel()
            return
        stop.set()
        typer.echo("\nstopping after the batches in flight (Ctrl-C again to abandon them)…", err=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    try:
        return await start(stop)
    except asyncio.CancelledError:
        raise NewsletterError(f"abandoned the batches in flight; {resume_hint}") from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _show_send(summary: SendSummary, workspace: Workspace) -> None:
    from newsletter.store import CampaignStatus

    if summary.dry_run:
        if summary.sample:
            typer.echo(summary.sample)
            typer.echo("-" * 72)
        first = ", ".join(summary.recipients) + (" …" if summary.audience > len(summary.recipients) else "")
        typer.echo(
            f"dry run: would send to {summary.audience} recipient{'s' if summary.audience != 1 else ''} "
            f"through {summary.transport}" + (f": {first}" if first else "")
        )
        for refusal in summary.refusals:
            where = ":".join(str(refusal[k]) for k in ("file", "line") if refusal.get(k))
            typer.echo(f"a real send would refuse {where}: {refusal['message']}", err=True)
        typer.echo("nothing was sent; add --no-dry-run to send")
        return
    if summary.status == CampaignStatus.SCHEDULED:
        typer.echo(f"campaign {summary.campaign}: {summary.note}")
        return
    counts = summary.counts
    for address, reason in summary.failures:
        typer.echo(f"failed: {address}: {reason}", err=True)
    where = f"campaign {summary.campaign}, " if summary.campaign else ""
    typer.echo(
        f"{where}{summary.transport}: {counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('pending', 0)} pending"
    )
    if summary.status in (CampaignStatus.PAUSED, CampaignStatus.CANCELLED):
        typer.echo(f"{summary.note}; `newsletter campaigns` shows where it stands", err=True)
    elif counts.get("pending"):
        typer.echo("some messages are still pending: run the same command again to resume", err=True)


@app.command()
def status(issue: IssueArg, list_slug: ListOpt, as_json: JsonOpt = False) -> None:
    """Show a campaign's progress: sent, pending, failed, skipped."""
    from newsletter.sending.send import campaign_status
    from newsletter.store import CampaignStatus
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    summary = campaign_status(workspace, folder.name, list_slug)
    if as_json:
        _print_json(summary.to_json())
        return
    if summary.campaign is None:
        typer.echo(f"{folder.name} was never sent to {list_slug}")
        return
    if summary.status != CampaignStatus.SCHEDULED:
        _show_send(summary, workspace)
    typer.echo(f"campaign {summary.campaign}: {summary.status}, {summary.note}")


@app.command()
def worker(
    transport: TransportOpt = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Send what is due now, then exit (for cron or CI).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send every campaign that is due or running, beside any other worker or send, until stopped (SIGTERM).

    Starts scheduled campaigns at their time; needs NEWSLETTER_SECRET_KEY for any transport but outbox:// and null://.
    """
    import asyncio

    from newsletter.sending.worker import WorkerReport, work
    from newsletter.transports import transport_dsn
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    dsn = transport_dsn(transport)
    report = WorkerReport()

    def working(stop: asyncio.Event):
        log = (lambda line: None) if as_json else (lambda line: typer.echo(line, err=True))
        return work(workspace, dsn, until_idle=until_idle, stop=stop, log=log)

    try:
        report = asyncio.run(_until_stopped(working, "their messages go out with the next run"))
    finally:
        if as_json:
            _print_json(report.to_json())
    if not as_json:
        typer.echo(f"worker: {report.sent} sent, {report.failed} failed, campaigns {report.campaigns or 'none'}")


def _campaign_json(row, list_slug: str, counts: dict[str, int]) -> dict:
    return {
        "id": row.id,
        "issue": row.issue_slug,
        "list": list_slug,
        "status": row.status,
        "scheduled_at": row.scheduled_at.isoformat() if row.scheduled_at else None,
        **{key: counts.get(key, 0) for key in ("sent", "pending", "failed", "skipped")},
    }


@app.command()
def campaigns(
    list_slug: Annotated[str | None, typer.Option("--list", help="Only this list's campaigns.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every campaign, newest first: id, issue, list, status, when scheduled, and sent/pending/failed/skipped."""
    from newsletter.sending.send import shown
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    store = open_store(workspace)
    try:
        store.expire_overdue()  # shown as expired: campaign_list only reads
        found = store.campaign_list(store.list_id(list_slug) if list_slug else None)
    finally:
        store.close()
    if as_json:
        _print_json({"campaigns": [_campaign_json(*item) for item in found]})
        return
    zone = workspace.config.zone
    for row, slug, counts in found:
        when = f" for {shown(row.scheduled_at, zone)}" if row.scheduled_at else ""
        typer.echo(
            f"{row.id}\t{row.issue_slug} → {slug}\t{row.status}{when}\t{counts['sent']} sent, "
            f"{counts['pending']} pending, {counts['failed']} failed, {counts['skipped']} skipped"
        )
    if not found:
        typer.echo("no campaigns yet", err=True)


campaign_app = typer.Typer(
    cls=_Commands, no_args_is_help=True, rich_markup_mode=None, help="Pause, resume or cancel a campaign."
)
app.add_typer(campaign_app, name="campaign")
CampaignArg = Annotated[int, typer.Argument(help="The campaign's id (see `newsletter campaigns`).")]


def _control(campaign_id: int, action: str, as_json: bool) -> None:
    from newsletter.sending.send import change_campaign
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        row = change_campaign(store, campaign_id, action)
        store.expire_overdue()  # shown as expired: campaign_list only reads
        found = next(item for item in store.campaign_list(row.list_id) if item[0].id == campaign_id)
    finally:
        store.close()
    if as_json:
        _print_json(_campaign_json(*found))
    else:
        typer.echo(f"campaign {campaign_id}: {found[0].status}")


@campaign_app.command("pause")
def campaign_pause(campaign_id: CampaignArg, as_json: JsonOpt = False) -> None:
    """Stop every sender, on every host: at most the message in flight and the next go on each SMTP connection."""
    _control(campaign_id, "pause", as_json)


@campaign_app.command("resume")
def campaign_resume(campaign_id: CampaignArg, as_json: JsonOpt = False) -> None:
    """Let senders go on with a paused campaign (a running `worker` picks it up; or run `send` again)."""
    _control(campaign_id, "resume", as_json)


@campaign_app.command("cancel")
def campaign_cancel(campaign_id: CampaignArg, as_json: JsonOpt = False) -> None:
    """End a campaign for good: what is still pending is never sent."""
    _control(campaign_id, "cancel", as_json)


db_app = typer.Typer(cls=_Commands, no_args_is_help=True, rich_markup_mode=None, help="The database.")
app.add_typer(db_app, name="db")


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
        _print_json({"database": engine_name(url), "applied": applied, "version": version})
    else:
        done = f"applied {', '.join(map(str, applied))}" if applied else "already up to date"
        typer.echo(f"{engine_name(url)}: {done} (schema version {version})")


@app.command()
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


@app.command()
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
        _print_json(result.to_json())
        return
    if result.left:
        typer.echo(f"left in place, no longer in the archive: {', '.join(result.left)} (delete them to unpublish)")
    shown_issues = ", ".join(result.issues) or "no issue yet"
    typer.echo(f"wrote {_relative(result.out / 'index.html')}: {shown_issues} ({result.files} files)")


@app.command("mcp")
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


@app.command()
def form(list_slug: Annotated[str, typer.Argument(help="The list open to sign-up, e.g. alliances.")]) -> None:
    """Print an HTML sign-up form for LIST to paste in a website (it posts to base_url/subscribe/LIST)."""
    from newsletter.errors import ConfigError
    from newsletter.i18n import translate
    from newsletter.pages import Pages
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
    lang = settings.lang or config.lang
    title = settings.title or config.name
    consent = settings.consent or translate(
        lang, "consent_default", list=title, publisher=config.publisher.name or config.name
    )
    snippet = Pages(config, workspace.templates_dir).text(
        "form.html.j2", lang, action=f"{config.base_url}/subscribe/{list_slug}", consent=consent
    )
    typer.echo(snippet.strip())
    typer.echo(
        "<!-- Hide the honeypot where your site has no stylesheet for it: "
        ".away{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden} -->"
    )


@app.command()
def schema(as_json: JsonOpt = False) -> None:
    """Print the JSON Schema of issue.yaml (for editors and agents)."""
    from newsletter.workspace import schema_text

    sys.stdout.write(schema_text())


def main() -> None:
    app()
