"""The commands that send: send, status, delivery, worker, campaigns, approve, decline, and `campaign
show|pause|resume|cancel`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from newsletter.cli.common import Commands, IssueArg, JsonOpt, ListOpt, print_json
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from newsletter.sending.send import SendSummary
    from newsletter.store.approvals import Decision
    from newsletter.workspace import Workspace

T = TypeVar("T")


TRANSPORT_HELP = "Where to send: outbox://DIR, smtp://…, postmark+api://…, … (default outbox://build/outbox)."


TransportOpt = Annotated[
    str | None,
    typer.Option(
        "--transport",
        envvar="NEWSLETTER_TRANSPORT",
        show_envvar=True,
        help=TRANSPORT_HELP,
    ),
]


SegmentOpt = Annotated[
    str | None,
    typer.Option(
        "--segment",
        help="Only the members it matches: a name from [lists.SLUG.segments], or an expression such as "
        '\'tag:rimouski or municipalite in ["Matane", "Amqui"]\' (see docs/subscribers.md).',
    ),
]


def send(
    issue: IssueArg,
    list_slug: ListOpt,
    transport: TransportOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run", help="Only show what would be sent.")] = True,
    to: Annotated[
        str | None,
        typer.Option(
            help="Send one test message, subject prefixed [TEST], to this address (an issue in two languages: one "
            "in each)."
        ),
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
    no_approval: Annotated[
        bool,
        typer.Option(
            "--no-approval",
            help="Send without asking the approvers of [approval] in newsletter.toml (a person's own send).",
        ),
    ] = False,
    segment: SegmentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send an issue to a list, or to a segment of it. A dry run by default; run it again to resume an interrupted send.

    Safe to run twice at once, here or on another host sharing the database: both work on one campaign and
    nobody gets it twice. With approvers in [approval], a real send or schedule waits for one of them to
    approve it (each gets the issue by email, with Approve and Decline buttons) unless --no-approval.
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
            approval=not no_approval,
            requested_by=who_asks(),
            segment=segment,
        )

    summary = asyncio.run(_until_stopped(sending, "run the same command again to resume"))
    if progress is not None:
        progress.close()
    if as_json:
        print_json(summary.to_json())
    else:
        _show_send(summary, workspace)
    if not summary.dry_run and not summary.ok:
        raise typer.Exit(1)


def who_asks() -> str:
    """Who a request or a decision made at this terminal names: the user and the host."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "someone"
    return f"{user}@{socket.gethostname()}"


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
        for sample in (
            (summary.samples or {}).values() if summary.samples else [summary.sample] if summary.sample else []
        ):
            typer.echo(sample)
            typer.echo("-" * 72)
        if summary.languages is not None:
            typer.echo("by language: " + ", ".join(f"{lang} {count}" for lang, count in summary.languages.items()))
        first = ", ".join(summary.recipients) + (" …" if summary.audience > len(summary.recipients) else "")
        part = f" of the segment {segment_shown(summary.segment)}" if summary.segment else ""
        typer.echo(
            f"dry run: would send to {summary.audience} recipient{'s' if summary.audience != 1 else ''}{part} "
            f"through {summary.transport}" + (f": {first}" if first else "")
        )
        for refusal in summary.refusals:
            where = ":".join(str(refusal[k]) for k in ("file", "line") if refusal.get(k))
            typer.echo(f"a real send would refuse {where}: {refusal['message']}", err=True)
        typer.echo("nothing was sent; add --no-dry-run to send")
        return
    if summary.status in (CampaignStatus.SCHEDULED, CampaignStatus.AWAITING_APPROVAL):
        for address, reason in summary.failures:
            typer.echo(f"approval request not sent: {address}: {reason}", err=True)
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


def segment_shown(segment: dict) -> str:
    """A segment as a person reads it: its name and expression, or its expression."""
    return f"{segment['name']} ({segment['expression']})" if segment.get("name") else segment["expression"]


def status(issue: IssueArg, list_slug: ListOpt, segment: SegmentOpt = None, as_json: JsonOpt = False) -> None:
    """Show a campaign's progress: sent, pending, failed, skipped (--segment: the campaign to that segment)."""
    from newsletter.sending.send import campaign_status
    from newsletter.store import CampaignStatus
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    summary = campaign_status(workspace, folder.name, list_slug, segment)
    if as_json:
        print_json(summary.to_json())
        return
    if summary.campaign is None:
        typer.echo(f"{folder.name} was never sent to {list_slug}")
        return
    if summary.status not in (CampaignStatus.SCHEDULED, CampaignStatus.AWAITING_APPROVAL):
        _show_send(summary, workspace)
    typer.echo(f"campaign {summary.campaign}: {summary.status}, {summary.note}")
    if summary.segment is not None:
        typer.echo(f"segment: {segment_shown(summary.segment)}")
    if summary.approval is not None:
        typer.echo(f"approval: {approval_line(summary.approval)}")


def delivery(
    address: Annotated[str, typer.Argument(help="The person's email address.")],
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many of the latest campaigns to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Why did someone not get it? What became of their copy of each recent campaign of their lists, newest first.

    Sent (when, the provider's id), deferred (tries, the last error, the next try), failed, bounced, soft-bounced,
    complained, unsubscribed (when, how), skipped (no longer subscribed when its turn came), or not in the
    audience and why (joined after it started, not subscribed then, outside its segment, had it already); with
    their lists at the top. Exit code 1 for an address nobody has.
    """
    from newsletter.delivery import delivery_report
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    report = delivery_report(workspace, address, limit=limit)
    if as_json:
        print_json(report.to_json())
        return
    for line in report.text(workspace.config.zone):
        typer.echo(line)


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
            print_json(report.to_json())
    if not as_json:
        typer.echo(f"worker: {report.sent} sent, {report.failed} failed, campaigns {report.campaigns or 'none'}")


def approval_line(approval: dict) -> str:
    """Where a campaign's approval stands, in a line (approval.approval_of's document)."""
    state = approval["state"]
    if state == "awaiting-approval":
        done = f", approved by {', '.join(approval['approved_by'])}" if approval["approved_by"] else ""
        return (
            f"awaiting {approval['required']} of {', '.join(approval['approvers'])}{done} (asked by "
            f"{approval['requested_by']}, until {approval['expires_at']})"
        )
    if state == "approved":
        return f"approved by {', '.join(approval['by'])} at {approval['at']}"
    if state == "declined":
        comment = f": {approval['comment']}" if approval.get("comment") else ""
        return f"declined by {approval['by']} at {approval['at']}{comment}"
    if state == "voided":
        return f"void: {approval['reason']}"
    return state


def _campaign_json(row, list_slug: str, counts: dict[str, int], approval: dict | None = None) -> dict:
    from newsletter.sending.frozen import frozen_segment, frozen_subjects

    document = {
        "id": row.id,
        "issue": row.issue_slug,
        "list": list_slug,
        "status": row.status,
        "scheduled_at": row.scheduled_at.isoformat() if row.scheduled_at else None,
        **{key: counts.get(key, 0) for key in ("sent", "pending", "failed", "skipped")},
    }
    segment = frozen_segment(row.content)
    if segment is not None:
        document["segment"] = segment
    if subjects := frozen_subjects(row.content):
        document["subjects"] = subjects
    if approval is not None:
        document["approval"] = approval
    if row.welcome:
        document["welcome"] = True
    return document


def campaigns(
    list_slug: Annotated[str | None, typer.Option("--list", help="Only this list's campaigns.")] = None,
    welcome: Annotated[
        bool, typer.Option("--welcome", help="The welcome emails instead: one campaign per list and version.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every campaign, newest first: id, issue, list, status, when scheduled, and sent/pending/failed/skipped,
    and where a person's approval stands. The lists' welcome emails are campaigns apart, shown by --welcome."""
    from newsletter.approval import approval_of
    from newsletter.sending.frozen import frozen_segment
    from newsletter.sending.send import shown
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    store = open_store(workspace)
    try:
        store.expire_overdue()  # shown as expired: campaign_list only reads
        found = [
            (row, slug, counts, approval_of(store, row.id))
            for row, slug, counts in store.campaign_list(
                store.list_id(list_slug) if list_slug else None, welcome=welcome
            )
        ]
    finally:
        store.close()
    if as_json:
        print_json({"campaigns": [_campaign_json(*item) for item in found]})
        return
    zone = workspace.config.zone
    for row, slug, counts, approval in found:
        when = f" for {shown(row.scheduled_at, zone)}" if row.scheduled_at else ""
        segment = frozen_segment(row.content)
        part = f" [{segment_shown(segment)}]" if segment else " (welcome)" if row.welcome else ""
        typer.echo(
            f"{row.id}\t{row.issue_slug} → {slug}{part}\t{row.status}{when}\t{counts['sent']} sent, "
            f"{counts['pending']} pending, {counts['failed']} failed, {counts['skipped']} skipped"
            + (f"\t{approval_line(approval)}" if approval else "")
        )
    if not found:
        typer.echo("no welcome emails yet" if welcome else "no campaigns yet", err=True)


campaign_app = typer.Typer(
    cls=Commands, no_args_is_help=True, rich_markup_mode=None, help="Show, pause, resume or cancel a campaign."
)


CampaignArg = Annotated[int, typer.Argument(help="The campaign's id (see `newsletter campaigns`).")]


def _decide(campaign_id: int, decision: Decision, approver: str | None, reason: str | None, as_json: bool) -> None:
    from newsletter.approval import approval_of, decide_on_terminal
    from newsletter.errors import NewsletterError
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    store = open_store(workspace)
    try:
        verdict = decide_on_terminal(
            workspace, store, campaign_id, decision, by=who_asks(), approver=approver, comment=reason
        )
        row = store.campaign(campaign_id)
        approval = approval_of(store, campaign_id)
    finally:
        store.close()
    assert row is not None
    if not verdict.changed:
        raise NewsletterError(f"campaign {campaign_id} ({row.status}): {verdict.reason}; nothing changed")
    if as_json:
        print_json({"campaign": campaign_id, "outcome": verdict.outcome, "status": row.status, "approval": approval})
        return
    typer.echo(f"campaign {campaign_id}: {verdict.outcome}, now {row.status}")
    if row.status == "running":
        typer.echo("a running `newsletter worker` sends it now (or `newsletter send` it again)", err=True)


ApproverOpt = Annotated[
    str | None,
    typer.Option("--as", help="Whose request this decides, by the approver's address (default: the oldest open)."),
]


def approve(campaign_id: CampaignArg, approver: ApproverOpt = None, as_json: JsonOpt = False) -> None:
    """Approve a campaign that awaits a person's approval, at a terminal instead of the email's button.

    Once approved it is scheduled, or it starts: a running `newsletter worker` sends it.
    """
    _decide(campaign_id, "approved", approver, None, as_json)


def decline(
    campaign_id: CampaignArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for whoever asked (the agent sees it).")] = None,
    approver: ApproverOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decline a campaign that awaits a person's approval: nothing of it is ever sent."""
    _decide(campaign_id, "declined", approver, reason, as_json)


@campaign_app.command("show")
def campaign_show(campaign_id: CampaignArg, as_json: JsonOpt = False) -> None:
    """A campaign: its issue, list, status and counts, its approval requests, and its events (who, when)."""
    from newsletter.approval import approval_of
    from newsletter.errors import NewsletterError
    from newsletter.sending.frozen import frozen_subjects
    from newsletter.sending.send import shown
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    store = open_store(workspace)
    try:
        store.expire_overdue()
        found = store.campaign_list(welcome=None, campaign_id=campaign_id)
        if not found:
            raise NewsletterError(f"no campaign {campaign_id}; `newsletter campaigns` lists them")
        row, slug, counts = found[0]
        approval = approval_of(store, campaign_id)
        requests = store.approval_requests(campaign_id)
        events = store.campaign_events(campaign_id)
    finally:
        store.close()
    if as_json:
        document = _campaign_json(row, slug, counts, approval)
        document["requests"] = [
            {
                "id": r.id,
                "approver": r.approver,
                "requested_by": r.requested_by,
                "requested_at": r.requested_at.isoformat(),
                "expires_at": r.expires_at.isoformat(),
                "decision": r.decision,
                "decided_by": r.decided_by,
                "decided_at": r.used_at.isoformat() if r.used_at else None,
                "comment": r.comment,
            }
            for r in requests
        ]
        document["events"] = [{"kind": e.kind, "at": e.at.isoformat(), **e.detail} for e in events]
        print_json(document)
        return
    zone = workspace.config.zone
    welcome = " (the list's welcome email)" if row.welcome else ""
    typer.echo(f"campaign {row.id}: {row.issue_slug} → {slug}{welcome}, {row.status}")
    subjects = frozen_subjects(row.content)
    for lang, subject in subjects.items() or [(None, row.subject)]:
        typer.echo(f"subject ({lang}): {subject}" if lang else f"subject: {subject}")
    typer.echo(
        f"{counts['sent']} sent, {counts['pending']} pending, {counts['failed']} failed, {counts['skipped']} skipped"
    )
    if approval is not None:
        typer.echo(f"approval: {approval_line(approval)}")
    for event in events:
        detail = ", ".join(f"{k}={v}" for k, v in event.detail.items() if v not in (None, ""))
        typer.echo(f"{shown(event.at, zone)}\t{event.kind}\t{detail}")


def _control(campaign_id: int, action: str, as_json: bool) -> None:
    from newsletter.sending.send import change_campaign
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover())
    try:
        row = change_campaign(store, campaign_id, action)
        store.expire_overdue()  # shown as expired: campaign_list only reads
        (found,) = store.campaign_list(row.list_id, welcome=None, campaign_id=campaign_id)
    finally:
        store.close()
    if as_json:
        print_json(_campaign_json(*found))
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
