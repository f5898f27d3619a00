"""`newsletter subscribers …`: import, add, list, remove, pending, purge-pending, show, forget, export, sync."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import Commands, JsonOpt, ListOpt, print_json, relative
from newsletter.errors import NewsletterError

subscribers_app = typer.Typer(
    cls=Commands, no_args_is_help=True, rich_markup_mode=None, help="Keep the subscriber lists."
)


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
        print_json(report.to_json())
        return
    for line, reason in report.rejected:
        typer.echo(f"{relative(csv_file)}:{line}: rejected: {reason}", err=True)
    for line, address, why in report.refused:
        typer.echo(f"{relative(csv_file)}:{line}: not re-subscribed: {address} ({why})", err=True)
    unshown = report.rejected_count - len(report.rejected) + report.refused_count - len(report.refused)
    if unshown:
        where = f"{relative(rejects)} has them all" if rejects else "--rejects FILE writes them all"
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
        print_json({"email": address, "list": list_slug, "result": result})
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
        print_json({"email": address, "list": list_slug, "result": "unsubscribed" if changed else "unchanged"})
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
        print_json({"list": list_slug, "pending": pending})
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
        print_json({"list": list_slug, "older_than": older_than, "removed": removed, "erased": erased})
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
        print_json(json.loads(json.dumps(person, default=str)))
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
        print_json({"email": address, "forgotten": True})
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
        print_json(report.to_json())
    else:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.kinds.items())) or "nothing"
        typer.echo(f"{report.seen} suppressed addresses ({kinds}); {report.changed} memberships changed")


async def _sync(store, transport, list_id: int | None):
    from newsletter.subscribers import sync_suppressions

    try:
        return await sync_suppressions(store, transport, list_id=list_id)
    finally:
        await transport.aclose()
