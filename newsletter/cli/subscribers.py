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


WelcomeOpt = Annotated[
    bool,
    typer.Option(
        "--welcome",
        help="Queue the list's welcome email ([lists.SLUG] welcome) for whoever this adds to the list; a running "
        "`newsletter serve` or `newsletter worker` sends it through NEWSLETTER_TRANSPORT.",
    ),
]


ListNameOpt = Annotated[
    str | None,
    typer.Option("--list-name", help='The name subscribers see, e.g. "Membres 2025" (default: the newsletter\'s).'),
]


@subscribers_app.command("import")
def subscribers_import(
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="A CSV file (UTF-8, Windows-1252 or UTF-16; , ; or tab separated), or a mailer's export: "
            "Mailchimp's audience export (.zip or its folder), Substack's email_list CSV, listmonk's subscribers CSV."
        ),
    ],
    list_slug: ListOpt,
    list_name: ListNameOpt = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="Write every row rejected or not re-subscribed here (CSV: line, email, reason, file)."
        ),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep", help="Import this column as a field too, though it is left out by default (MEMBER_RATING)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what the import would do; write nothing.")] = False,
    welcome: WelcomeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a file's people to a list (created if needed), each with the status the file gives: those who left,
    bounced or never opted in are recorded as such and never mailed, and nobody who left is subscribed again.

    Reports added, updated, held back and rejected rows with their line. Safe to interrupt: the rows already
    imported stay, and running it again completes the list; running it twice changes nothing. Nobody gets the
    list's welcome email unless --welcome.
    """
    from newsletter.importing import consent_key, import_list
    from newsletter.progress import ProgressBar
    from newsletter.sending.welcome import welcome_for_command
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    welcoming = welcome_for_command(workspace, list_slug) if welcome else None
    shown = not as_json and sys.stdout.isatty() and sys.stderr.isatty()
    progress = ProgressBar("rows", sys.stderr) if shown else None
    store = open_store(workspace)
    try:
        report = import_list(
            store,
            list_slug,
            csv_file,
            list_name=list_name,
            rejects=rejects,
            progress=progress,
            keep=keep or (),
            dry_run=dry_run,
            ip_key=consent_key(),
            welcome=welcoming,
        )
    finally:
        store.close()
        if progress is not None:
            progress.close()
    if as_json:
        print_json(report.to_json())
        return

    def where(file: str) -> str:  # the file of a folder or a zip, or the file given
        return f"{relative(csv_file)}/{file}" if file and file != csv_file.name else str(relative(csv_file))

    for file, line, reason in report.rejected:
        typer.echo(f"{where(file)}:{line}: rejected: {reason}", err=True)
    for file, line, address, why in report.refused:
        typer.echo(f"{where(file)}:{line}: not re-subscribed: {address} ({why})", err=True)
    unshown = report.rejected_count - len(report.rejected) + report.refused_count - len(report.refused)
    if unshown:
        all_of_them = f"{relative(rejects)} has them all" if rejects else "--rejects FILE writes them all"
        typer.echo(f"… and {unshown} more rows rejected or not re-subscribed: {all_of_them}", err=True)
    if report.ips_left_out:
        typer.echo(
            "note: the consent IPs were left out: set NEWSLETTER_SECRET_KEY to record them as keyed hashes", err=True
        )
    for read in report.files:
        delimiter = "tab" if read["delimiter"] == chr(9) else repr(read["delimiter"])
        kind = f"{read['status']}, " if read["status"] else ""
        typer.echo(f"read {read['name']}: {read['rows']} rows ({kind}{read['encoding']}, {delimiter} separated)")
    typer.echo(report.summary(list_slug))
    if report.welcomed and not dry_run:
        typer.echo(WELCOME_NOTE, err=True)


WELCOME_NOTE = "a running `newsletter serve` or `newsletter worker` sends the welcome emails (NEWSLETTER_TRANSPORT)"


@subscribers_app.command("add")
def subscribers_add(
    address: Annotated[str, typer.Argument(help="The email address.")],
    list_slug: ListOpt,
    name: Annotated[str | None, typer.Option(help="The subscriber's name.")] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", help="A field, NAME=VALUE (repeatable): --field Ville=Rimouski.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeat it): --tag Rimouski.")] = None,
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="The language they read in: fr or en (default: theirs, else the list's first)."),
    ] = None,
    list_name: ListNameOpt = None,
    welcome: WelcomeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe one address to a list (created if needed), with fields, tags and their language. Someone who
    unsubscribed is not subscribed again. With --welcome, a person new to the list gets its welcome email."""
    from newsletter.i18n import parse_language
    from newsletter.sending.welcome import welcome_for_command
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import add_welcomed, field_options
    from newsletter.workspace import Workspace

    fields = field_options(field or [])
    try:
        code = parse_language(lang) if lang is not None else None
    except ValueError as exc:
        raise NewsletterError(f"--lang: {exc}") from None
    workspace = Workspace.discover()
    welcoming = welcome_for_command(workspace, list_slug) if welcome else None
    store = open_store(workspace)
    try:
        result, queued = add_welcomed(
            store,
            list_slug,
            address,
            name,
            welcome=welcoming,
            list_name=list_name,
            fields=fields,
            tags=tag or (),
            lang=code,
        )
    finally:
        store.close()
    offered = workspace.config.list_languages(list_slug)
    if code is not None and code not in offered:
        typer.echo(
            f"note: {list_slug} is sent in {', '.join(offered)} only ([lists.{list_slug}] langs): {address} gets "
            f"{offered[0]} there; {code} is kept as their language",
            err=True,
        )
    if as_json:
        document: dict = {"email": address, "list": list_slug, "result": result, "lang": code}
        if welcome:
            document["welcome"] = "queued" if queued else None
        print_json(document)
    else:
        typer.echo(
            f"{address}: {result}"
            + (" (unsubscribed, bounced or complained before)" if result == "refused" else "")
            + ("; welcome email queued" if queued else "")
        )
        if queued:
            typer.echo(WELCOME_NOTE, err=True)
    if result == "refused":
        raise typer.Exit(1)


def _retag(address: str, tags: list[str], as_json: bool, *, remove: bool) -> None:
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import retag
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        changed = retag(store, address, tags, remove=remove)
        now = store.tags_of(store.find_subscriber(address.strip()) or 0)
    finally:
        store.close()
    if as_json:
        print_json({"email": address, "removed" if remove else "added": changed, "tags": now})
        return
    did = "untagged" if remove else "tagged"
    typer.echo(f"{address}: {did} {', '.join(changed) if changed else 'nothing new'}; tags: {', '.join(now) or '—'}")


TagsArg = Annotated[list[str], typer.Argument(help='Tags; quote one with spaces: "MRC Rimouski-Neigette".')]


@subscribers_app.command("tag")
def subscribers_tag(
    address: Annotated[str, typer.Argument(help="The email address.")], tags: TagsArg, as_json: JsonOpt = False
) -> None:
    """Add tags to a person (matched whatever their case and accents), for segments: `send --segment tag:X`."""
    _retag(address, tags, as_json, remove=False)


@subscribers_app.command("untag")
def subscribers_untag(
    address: Annotated[str, typer.Argument(help="The email address.")], tags: TagsArg, as_json: JsonOpt = False
) -> None:
    """Take tags off a person."""
    _retag(address, tags, as_json, remove=True)


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
        members = store.iter_members(store.list_id(list_slug), status, offset=offset, limit=limit, tags=as_json)
        out = sys.stdout
        if as_json:  # one JSON array, written a member at a time
            separator = "[\n  "
            for m in members:
                joined = m.joined_at.isoformat() if m.joined_at else None
                item = {
                    "email": m.email,
                    "name": m.name,
                    "status": m.status,
                    "joined_at": joined,
                    "lang": m.lang,
                    "fields": m.fields,
                    "tags": list(m.tags),
                }
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
    from newsletter.subscribers import event_line, welcome_line

    typer.echo(f"{person['email']}\t{person['name'] or ''}\tsince {person['created_at']:%Y-%m-%d}")
    if person["lang"]:
        typer.echo(f"language: {person['lang']}")
    for name, value in person["fields"].items():
        typer.echo(f"{name}: {value}")
    if person["tags"]:
        typer.echo(f"tags: {', '.join(person['tags'])}")
    for membership in person["memberships"]:
        joined = f", joined {membership['joined_at']:%Y-%m-%d}" if membership["joined_at"] else ""
        since = f"{membership['updated_at']:%Y-%m-%d %H:%M}"
        typer.echo(f"list {membership['list']}: {membership['status']} since {since}{joined}")
    for event in person["events"]:
        typer.echo(event_line(event))
    for delivery in person["deliveries"]:
        if delivery["welcome"]:
            typer.echo(welcome_line(delivery))
        else:
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
