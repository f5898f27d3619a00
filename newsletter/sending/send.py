"""What `send`, `status` and `campaign pause/resume/cancel` do: refuse what must not be sent, dry-run, test-send,
schedule, or run the campaign; say how a campaign stands; pause, resume or cancel it.

A real send is refused when the issue has errors; when the transport leaves this machine (anything but outbox://
and null://) and base_url, NEWSLETTER_SECRET_KEY or absolute image URLs (asset_base_url) are missing, or a link,
the sender or the publisher is on a reserved name or the postal address is a placeholder (checks.real_send_refusals,
which the dry run lists whatever the transport); when the list has nobody subscribed; and when the issue changed
since a campaign to the same list began (--new-campaign starts another one deliberately).

With a provider's hosted unsubscribe (a transport's `unsubscribe=provider`), the links are the provider's: no
base_url nor NEWSLETTER_SECRET_KEY is needed, only a web version for "view online" (archive_url, or base_url),
and the provider's suppression list is applied before sending, so whoever left through its page is skipped.

A campaign freezes what every message shares when it is made (the rendered issue, sender, list, links, limits:
`Prepared.freeze`, see frozen.py), so that any sender, on any host, builds the same messages from the store alone.
Two `send` commands started at once agree on one campaign (the list is locked while they decide) and share its
ledger, which the runner (runner.py) works through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsletter.addresses import normalize_address
from newsletter.approval import approval_of, void
from newsletter.checks import check_versions, real_send_refusals, refusal_text
from newsletter.config import Config, parse_duration
from newsletter.errors import ConfigError, IssueError, NewsletterError
from newsletter.message import Campaign, HostedUnsubscribe, Outgoing, Recipient, parse_mailbox
from newsletter.render import RenderedIssue
from newsletter.sending.approval import approval_required, ask, make_requests, unreached
from newsletter.sending.frozen import LOCAL_BASE_URL, FrozenCampaign, content_hash, freeze, frozen_segment
from newsletter.sending.runner import Pacing, run, sender_id, test_recipient
from newsletter.sending.wiring import (
    LOCAL_SCHEMES,
    check_transport_fits,
    hosted_unsubscribe,
    open_store,
    pacing_for,
    ready,
)
from newsletter.store import (
    CampaignRow,
    CampaignStatus,
    Connection,
    DeliveryStatus,
    ListRow,
    MembershipStatus,
    Store,
)
from newsletter.tokens import TokenSigner
from newsletter.transports import Dsn, Transport, transport_for
from newsletter.transports.base import preflight
from newsletter.workspace import Workspace

SAMPLE_RECIPIENTS = 5


@dataclass
class SendSummary:
    campaign: int | None
    transport: str
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    recipients: list[str] = field(default_factory=list)  # dry run: the first few addresses
    audience: int = 0  # dry run: how many would get it
    sample: str | None = None  # dry run / test send: one whole message
    unsubscribe: str | None = None  # dry run / test send: the mechanism its messages carry
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False
    note: str | None = None
    status: str | None = None  # the campaign's
    scheduled_at: dt.datetime | None = None
    message: str | None = None  # dry run: the message_digest of what would be sent, which an agent's code binds
    refusals: list[dict] = field(default_factory=list)  # dry run: what a real send would refuse (file, line, why)
    approval: dict | None = None  # where a person's approval stands (approval.approval_of), when it was asked for
    segment: dict | None = None  # the part of the list it goes to: {"name": …, "expression": …}; None: all of it
    # dry run of an issue in two languages: how many get each version, and one whole message of each (by language)
    languages: dict[str, int] | None = None
    samples: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        finished_or_waiting = self.status in (
            None,
            CampaignStatus.RUNNING,
            CampaignStatus.FINISHED,
            CampaignStatus.SCHEDULED,
            CampaignStatus.AWAITING_APPROVAL,
        )
        return (
            finished_or_waiting
            and not self.counts.get("failed")
            and not self.counts.get("pending")
            and not self.stopped
        )

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "campaign": self.campaign,
            "status": self.status,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "sent": self.counts.get("sent", 0),
            "failed": self.counts.get("failed", 0),
            "skipped": self.counts.get("skipped", 0),
            "pending": self.counts.get("pending", 0),
            "transport": self.transport,
            "dry_run": self.dry_run,
        }
        if self.dry_run:
            document.update(
                audience=self.audience,
                recipients=self.recipients,
                sample=self.sample,
                unsubscribe=self.unsubscribe,
                real_send_refuses=self.refusals,
            )
            if self.languages is not None:
                document.update(languages=self.languages, samples=self.samples)
        if self.segment is not None:
            document["segment"] = self.segment
        if self.approval is not None:
            document["approval"] = self.approval
        if self.failures:
            document["failures"] = [{"email": e, "reason": r} for e, r in self.failures]
        if self.note:
            document["note"] = self.note
        return document


@dataclass
class Prepared:
    workspace: Workspace
    rendered: RenderedIssue
    dsn_text: str
    dsn: Dsn
    sender_text: str
    signer: TokenSigner
    local_only: str | None  # why its messages must not leave this machine (no base_url, relative images), or None
    hosted: HostedUnsubscribe | None = None  # the provider's unsubscribe, when the transport uses it
    reply_to: str | None = None  # the issue's reply_to, else [sender]'s
    refusals: list[dict] = field(default_factory=list)  # what a real send refuses in its settings (checks)
    # the issue's other versions by language: those in the list's languages (prepare's list_slug)
    translations: dict[str, RenderedIssue] = field(default_factory=dict)

    def digest(self) -> str:
        """content_hash of what a campaign sends: the first language's version and each translation's."""
        return content_hash(self.rendered, self.translations)

    def unsubscribe(self) -> str:
        """What the dry run says of the messages' unsubscribe."""
        if self.hosted is not None:
            return self.hosted.description
        base = self.workspace.config.base_url or LOCAL_BASE_URL
        return f"this tool's signed one-click links ({base}/u/…, answered by `newsletter serve`)"

    def freeze(self, mailing_list: ListRow, segment: Chosen | None = None) -> FrozenCampaign:
        """What a campaign of this issue to this list (or to a segment of it) freezes now."""
        return freeze(
            self.workspace.config,
            self.rendered,
            mailing_list,
            sender=parse_mailbox(self.sender_text),
            reply_to=self.reply_to,
            hosted=self.hosted,
            local_only=self.local_only,
            segment=segment.expression if segment else None,
            segment_name=segment.name if segment else None,
            translations=self.translations,
        )


@dataclass(frozen=True)
class Chosen:
    """The segment a send goes to: its canonical expression, and the name newsletter.toml gives it, if any."""

    name: str | None
    expression: str

    @classmethod
    def of(cls, config: Config, list_slug: str, text: str | None) -> Chosen | None:
        """The segment `--segment TEXT` names (a name in [lists.SLUG.segments], or an expression); None: the whole
        list. NewsletterError (pointing at the column) for a malformed one."""
        if text is None or not text.strip():
            return None
        from newsletter.segments import resolve

        name, segment = resolve(config, list_slug, text)
        return cls(name, str(segment))


def leaving_problem(
    config: Config,
    rendered: RenderedIssue,
    hosted: HostedUnsubscribe | None = None,
    translations: Sequence[RenderedIssue] = (),
) -> str | None:
    """What stops this issue's messages (in any of its versions) from working outside this machine, or None."""
    if hosted is not None and not (config.archive_url or config.base_url):
        return (
            "no web version for the footer's 'view online' link: publish `newsletter archive` and set archive_url "
            "in newsletter.toml (or NEWSLETTER_ARCHIVE_URL), or set base_url"
        )
    if hosted is None and not config.base_url:
        return (
            "base_url is not set: unsubscribe links need the public URL of `newsletter serve`; set base_url in "
            "newsletter.toml or NEWSLETTER_BASE_URL, or use a provider's hosted unsubscribe (unsubscribe=provider "
            "in an API transport's DSN)"
        )
    if (rendered.images or any(t.images for t in translations)) and not config.asset_base_url:
        return (
            "the images would not load in an inbox: their URLs are relative. Publish build/ and set "
            "asset_base_url in newsletter.toml (or NEWSLETTER_ASSET_BASE_URL)"
        )
    return None


def prepare(
    workspace: Workspace,
    folder: Path,
    dsn_text: str,
    list_slug: str,
    *,
    real: bool,
    hosted: HostedUnsubscribe | None = None,
) -> Prepared:
    """Check the issue (each of its versions in the list's languages) and the settings a send needs; raise
    NewsletterError naming what is missing. An error in any of those versions stops a real send and a dry run
    alike; a translation the list's readers never get is neither checked nor linked to. Each version is rendered
    once here."""
    config = workspace.config
    dsn = Dsn.parse(dsn_text)
    local = dsn.scheme in LOCAL_SCHEMES
    langs = config.list_languages(list_slug)
    checked = check_versions(folder, config, workspace.templates_dir, asset_base_url=config.asset_base_url, langs=langs)
    result = checked.main
    if not checked.report.ok or result.rendered is None or result.issue is None:
        raise IssueError(checked.report.errors)
    translations: dict[str, RenderedIssue] = {}
    for version in checked.translations:
        assert version.lang is not None and version.result.rendered is not None  # the report is ok
        translations[version.lang] = version.result.rendered
    sender_text = result.issue.model.from_ or config.sender.from_
    if not sender_text:
        raise ConfigError('no sender: set [sender] from = "Name <news@example.org>" in newsletter.toml')
    parse_mailbox(sender_text)
    problem = leaving_problem(config, result.rendered, hosted, list(translations.values()))
    if real and not local and problem:
        raise ConfigError(problem)
    refusals = real_send_refusals(config, result.issue)
    for version in checked.translations:  # a translation's own links and reply-to, once each
        refusals += [d for d in real_send_refusals(config, version.result.issue) if d not in refusals]
    if real and not local and refusals:
        raise ConfigError(refusal_text(refusals))
    problem = problem or (refusal_text(refusals) if refusals else None)  # frozen: a worker will not send it on
    # Approval links are signed too: a hosted unsubscribe needs no key, a person's approval does.
    signer = TokenSigner.from_environment(required=real and not local and (hosted is None or approval_required(config)))
    reply_to = result.issue.model.reply_to or config.sender.reply_to
    refused = [d.to_json() for d in refusals]
    return Prepared(
        workspace, result.rendered, dsn_text, dsn, sender_text, signer, problem, hosted, reply_to, refused, translations
    )


def member_message(
    workspace: Workspace,
    rendered: RenderedIssue,
    sender_text: str,
    reply_to: str | None,
    mailing_list: ListRow,
    recipient: Recipient,
    signer: TokenSigner,
) -> Outgoing:
    """The message one member of a list gets of a rendered issue, built as a send builds each of its messages
    (freeze, FrozenCampaign.campaign, Campaign.build): what the preview shows. Nothing is checked nor recorded; the
    unsubscribe is this tool's signed link, as for a transport without a provider's hosted one."""
    null = Dsn.parse("null://")
    prepared = Prepared(workspace, rendered, "null://", null, sender_text, signer, None, reply_to=reply_to)
    return prepared.freeze(mailing_list).campaign("preview", signer).build(recipient)


def parse_at(text: str, zone: dt.tzinfo | None, *, at: dt.datetime | None = None) -> dt.datetime:
    """`--at`: an ISO 8601 time with its offset, or a local time in `zone` (None: the machine's); in UTC.

    A time that is not in the future is refused.
    """
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise NewsletterError(
            f"--at '{text}' is not a time; write it as 2027-02-10 09:00 (local) or 2027-02-10T14:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone) if zone else moment.astimezone()
    moment = moment.astimezone(dt.UTC)
    if moment <= (at or dt.datetime.now(dt.UTC)):
        raise NewsletterError(f"--at {text} is in the past; give a time to come")
    return moment


def shown(moment: dt.datetime | None, zone: dt.tzinfo | None) -> str:
    """A time as the user reads it: in the configured zone (or the machine's), with the zone's name."""
    if moment is None:
        return ""
    local = moment.astimezone(zone) if zone else moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M %Z")


async def send(
    workspace: Workspace,
    folder: Path,
    list_slug: str,
    *,
    dsn_text: str,
    dry_run: bool = True,
    to: str | None = None,
    new_campaign: bool = False,
    at: str | None = None,
    pacing: Pacing | None = None,
    stop: asyncio.Event | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
    content: str | None = None,
    approval: bool = True,
    requested_by: str = "newsletter send",
    segment: str | None = None,
) -> SendSummary:
    """Dry-run, test-send, schedule, or send an issue to a list (joining or resuming its campaign).

    content: the message_digest an agent's dry run showed (SendSummary.message); what would be sent now must be
    the same, or nothing is sent. With approvers in [approval], a real send or schedule makes the campaign
    awaiting approval and mails each approver a request (requested_by names who asks), unless approval is False
    (`send --no-approval`, which the MCP server never passes). segment: a segment's name or expression: the
    campaign goes to those of the list it matches (and is a campaign of its own beside one to the whole list).
    """
    async with contextlib.aclosing(transport_for(workspace, dsn_text)) as transport:
        prepared = prepare(
            workspace, folder, dsn_text, list_slug, real=not dry_run, hosted=hosted_unsubscribe(transport)
        )
        config = workspace.config
        scheduled_at = parse_at(at, config.zone) if at is not None else None
        chosen = Chosen.of(config, list_slug, segment)
        store = open_store(workspace)
        try:
            mailing_list = store.find_list(list_slug)
            if to is not None:
                return await _test_send(prepared, transport, mailing_list, single_address(to), dry_run)
            digest = prepared.digest()
            if dry_run:
                latest = store.latest_campaign(prepared.rendered.slug, mailing_list.id, _expression(chosen))
                resume = _campaign_to_resume(latest, digest, new_campaign, None)
                frozen = _frozen(prepared, mailing_list, resume, chosen)
                _same_as_shown(frozen, content, folder)
                return _dry_run(prepared, store, mailing_list, resume, frozen)
            await ready(store, transport, mailing_list.id)  # before the audience is fixed: who left is out
            awaiting = approval and approval_required(config)
            row, requests = _open_campaign(
                store,
                prepared,
                mailing_list,
                digest,
                new_campaign,
                scheduled_at,
                content,
                awaiting,
                requested_by,
                chosen,
            )
            if row.status == CampaignStatus.AWAITING_APPROVAL:
                if not awaiting:
                    raise NewsletterError(
                        f"campaign {row.id} awaits a person's approval: `newsletter approve {row.id}` approves it, "
                        f"`newsletter campaign cancel {row.id}` drops it"
                    )
                return await _ask_for_approval(store, prepared, transport, row, requests, requested_by)
            if row.status == CampaignStatus.SCHEDULED:
                when = shown(row.scheduled_at, config.zone)
                return SendSummary(
                    row.id,
                    str(prepared.dsn),
                    False,
                    store.counts(row.id),
                    status=row.status,
                    scheduled_at=row.scheduled_at,
                    note=f"scheduled for {when}: a running `newsletter worker` sends it then",
                )
            if row.content is None:  # begun by a version that did not freeze it: the same content, by its hash
                store.set_content(row.id, prepared.freeze(mailing_list).to_json())
                found = store.campaign(row.id)
                assert found is not None
                row = found
            frozen = FrozenCampaign.of(row)
            campaign = frozen.campaign(row.id, prepared.signer)
            check_transport_fits(campaign, transport)
            report = await run(
                store,
                transport,
                campaign,
                row.id,
                row.list_id,
                pacing or pacing_for(config, frozen),
                owner=sender_id(),
                stop=stop,
                progress=progress,
            )
            note = None
            if report.status in (CampaignStatus.PAUSED, CampaignStatus.CANCELLED):
                note = f"campaign {row.id} was {report.status} while this command sent it"
            return SendSummary(
                campaign=row.id,
                transport=str(transport),
                dry_run=False,
                counts=report.counts,
                failures=store.failures(row.id),
                stopped=report.stopped,
                status=report.status,
                note=note,
            )
        finally:
            store.close()


async def _ask_for_approval(
    store: Store,
    prepared: Prepared,
    transport: Transport,
    row: CampaignRow,
    requests: list[tuple[str, int, str]],
    requested_by: str,
) -> SendSummary:
    """Mail the new requests (or, joining a campaign already awaiting, ask again whoever was never reached) and say
    where the approval stands; NewsletterError when no request reached anyone (the campaign waits)."""
    config = prepared.workspace.config
    if not requests:
        again = unreached(store, row, config.approval.approvers)
        if again:
            requests = make_requests(store, config, row.id, again, FrozenCampaign.of(row), requested_by=requested_by)
    sent = await ask(
        prepared.workspace, store, transport, row, requests, requested_by=requested_by, signer=prepared.signer
    )
    failed = [(approver, reason) for approver, reason in sent if reason is not None]
    if sent and len(failed) == len(sent):
        raise NewsletterError(
            f"campaign {row.id} awaits approval, but no request reached an approver ({failed[0][0]}: "
            f"{failed[0][1]}); run the same command again to ask again"
        )
    reached = [a for a, reason in sent if reason is None]
    asked = f"a request went to {', '.join(reached)}" if reached else "every approver was asked already"
    return SendSummary(
        row.id,
        str(prepared.dsn),
        False,
        {},
        failures=failed,
        status=row.status,
        scheduled_at=row.scheduled_at,
        approval=approval_of(store, row.id),
        note=f"awaiting approval: {asked}; nothing is sent until one approves it, in the email or with "
        f"`newsletter approve {row.id}`",
    )


async def prepare_real_send(workspace: Workspace, folder: Path, dsn_text: str, list_slug: str) -> Prepared:
    """What a real send to the list checks before the store: raise NewsletterError with what it would be refused
    for."""
    async with contextlib.aclosing(transport_for(workspace, dsn_text)) as transport:
        return prepare(workspace, folder, dsn_text, list_slug, real=True, hosted=hosted_unsubscribe(transport))


def _open_campaign(
    store: Store,
    prepared: Prepared,
    mailing_list: ListRow,
    digest: str,
    new_campaign: bool,
    scheduled_at: dt.datetime | None,
    shown_digest: str | None = None,
    awaiting: bool = False,
    requested_by: str = "",
    chosen: Chosen | None = None,
) -> tuple[CampaignRow, list[tuple[str, int, str]]]:
    """The campaign this send works on: the one it resumes or joins, or a new one (scheduled, running, or awaiting
    approval with its requests: (approver, request id, nonce) each, made in the same transaction).

    Decided with the list locked: two commands started at once take the same campaign. With shown_digest (an
    agent's dry run), the campaign's frozen content must be what that dry run showed, else nothing is created.
    A campaign awaiting approval of other content (or at another time) is voided by the new one.
    """
    config = prepared.workspace.config
    rendered = prepared.rendered
    with store.transaction() as connection:
        store.lock_list(mailing_list.id, connection=connection)
        latest = store.latest_campaign(rendered.slug, mailing_list.id, _expression(chosen), connection=connection)
        asked = latest is not None and bool(store.approval_requests(latest.id, connection=connection))
        found = _campaign_to_resume(latest, digest, new_campaign, scheduled_at, config.zone, asked)
        frozen = _frozen(prepared, mailing_list, found, chosen)
        _same_as_shown(frozen, shown_digest, prepared.workspace.issues_dir / rendered.slug)
        if found is not None:
            return found, []
        if latest is not None and latest.status == CampaignStatus.AWAITING_APPROVAL:
            void(store, latest.id, "replaced by a newer request", noticed_by=requested_by, connection=connection)
        if scheduled_at is None:
            audience = store.count_audience(
                mailing_list.id, _expression(chosen), rendered.slug, digest, connection=connection
            )
            if audience == 0:
                raise NewsletterError(_nobody(mailing_list, chosen, store, connection))
        lateness = dt.timedelta(seconds=parse_duration(config.sending.max_lateness))
        campaign_id = store.create_campaign(
            mailing_list.id,
            rendered.slug,
            digest,
            rendered.subject,
            frozen.to_json(),
            scheduled_at=scheduled_at,
            expires_at=scheduled_at + lateness if scheduled_at else None,
            awaiting_approval=awaiting,
            connection=connection,
        )
        requests = []
        if awaiting:
            approvers = config.approval.approvers
            requests = make_requests(
                store, config, campaign_id, approvers, frozen, requested_by=requested_by, connection=connection
            )
    found = store.campaign(campaign_id)
    assert found is not None
    return found, requests


def _frozen(
    prepared: Prepared, mailing_list: ListRow, resume: CampaignRow | None, chosen: Chosen | None = None
) -> FrozenCampaign:
    """What the messages of this send are built from: the frozen content of the campaign it resumes, else what a new
    campaign would freeze now."""
    if resume is not None and resume.content:
        return FrozenCampaign.of(resume)
    return prepared.freeze(mailing_list, chosen)


def _expression(chosen: Chosen | None) -> str | None:
    return chosen.expression if chosen else None


def _nobody(mailing_list: ListRow, chosen: Chosen | None, store: Store, connection: Connection) -> str:
    """Why a send has nobody to go to, in one line."""
    if store.count_members(mailing_list.id, MembershipStatus.SUBSCRIBED, connection=connection) == 0:
        return f"the list '{mailing_list.slug}' has nobody subscribed; nothing to send"
    if chosen is not None:
        named = f"'{chosen.name}' ({chosen.expression})" if chosen.name else f"'{chosen.expression}'"
        return (
            f"nobody subscribed to '{mailing_list.slug}' is in the segment {named} who has not had this issue "
            "already; nothing to send"
        )
    return f"everyone subscribed to '{mailing_list.slug}' has had this issue already; nothing to send"


def _same_as_shown(frozen: FrozenCampaign, shown_digest: str | None, folder: Path) -> None:
    if shown_digest is not None and frozen.message_digest() != shown_digest:
        raise NewsletterError(
            f"{folder.name} changed since its dry run (its text, sender, reply-to, images or the list's settings); "
            "run the dry run again"
        )


def _campaign_to_resume(
    latest: CampaignRow | None,
    digest: str,
    new_campaign: bool,
    scheduled_at: dt.datetime | None,
    zone: dt.tzinfo | None = None,
    asked: bool = False,
) -> CampaignRow | None:
    """The campaign to go on with, or None to start one; NewsletterError when neither is right.

    The same content resumes its campaign, with or without --new-campaign: a command run again (or kept in a
    script) never mails the list twice. Changed content, or a campaign that was cancelled or expired, needs
    --new-campaign; a paused one needs `campaign resume`. One that a person was asked to approve (asked) and that
    never started was sent to nobody: declined, cancelled or expired, it makes way for a new one; still awaiting,
    it is joined by the same content at the same time, and replaced otherwise.
    """
    if latest is None:
        return None
    if asked and latest.started_at is None:
        waiting = latest.status == CampaignStatus.AWAITING_APPROVAL
        if waiting and latest.content_hash == digest and latest.scheduled_at == scheduled_at:
            return latest
        if waiting or latest.status in (CampaignStatus.DECLINED, CampaignStatus.CANCELLED, CampaignStatus.EXPIRED):
            return None
    if latest.content_hash != digest:
        if new_campaign:
            return None
        raise NewsletterError(
            f"the issue changed since campaign {latest.id} to this list began on "
            f"{latest.created_at:%Y-%m-%d %H:%M} UTC; `newsletter status` shows who got the earlier version. "
            "To send the changed issue to the whole list as a new campaign, add --new-campaign"
        )
    if latest.status in (CampaignStatus.CANCELLED, CampaignStatus.EXPIRED):
        if new_campaign:
            return None
        raise NewsletterError(
            f"campaign {latest.id} of this issue to this list was {latest.status}; to send the issue to the "
            "whole list as a new campaign, add --new-campaign"
        )
    if latest.status == CampaignStatus.PAUSED:
        raise NewsletterError(f"campaign {latest.id} is paused; `newsletter campaign resume {latest.id}` goes on")
    if latest.status == CampaignStatus.SCHEDULED and latest.scheduled_at != scheduled_at:
        raise NewsletterError(
            f"campaign {latest.id} is scheduled for {shown(latest.scheduled_at, zone)}; to send it at another "
            f"time, `newsletter campaign cancel {latest.id}`, then send again with --new-campaign"
        )
    if scheduled_at is not None and latest.status != CampaignStatus.SCHEDULED:
        raise NewsletterError(f"campaign {latest.id} of this issue to this list is already {latest.status}")
    return latest


def _dry_run(
    prepared: Prepared, store: Store, mailing_list: ListRow, resume: CampaignRow | None, frozen: FrozenCampaign
) -> SendSummary:
    """What a send would do, its sample built from exactly the content the send would freeze or resume."""
    campaign = frozen.campaign(resume.id if resume else "dry-run", prepared.signer)
    had_it = 0
    if resume is not None and resume.started_at is not None:
        counts = store.counts(resume.id)
        audience = counts[DeliveryStatus.PENDING]
        first = store.pending(resume.id, limit=SAMPLE_RECIPIENTS)
        recipients = [Recipient(d.subscriber_id, d.email, d.name, d.fields, d.lang) for d in first]
    else:
        slug, digest = frozen.slug, prepared.digest()
        counts = {}
        audience = store.count_audience(mailing_list.id, frozen.segment, slug, digest)
        first_few = store.audience_sample(mailing_list.id, frozen.segment, slug, digest, SAMPLE_RECIPIENTS)
        recipients = [Recipient(*member) for member in first_few]
        had_it = store.had_it_already(mailing_list.id, frozen.segment, slug, digest, audience)
    sample = campaign.build(recipients[0]).to_bytes().decode("utf-8", errors="replace") if recipients else None
    languages = samples = None
    if frozen.versions:
        languages, samples = _per_language(store, mailing_list, resume, frozen, campaign, recipients, prepared)
    return SendSummary(
        languages=languages,
        samples=samples,
        unsubscribe=prepared.unsubscribe(),
        campaign=resume.id if resume else None,
        transport=str(prepared.dsn),
        dry_run=True,
        counts=counts,
        recipients=[r.email for r in recipients],
        audience=audience,
        sample=sample,
        note=_dry_run_note(audience, had_it),
        status=resume.status if resume else None,
        scheduled_at=resume.scheduled_at if resume else None,
        message=frozen.message_digest(),
        refusals=prepared.refusals,
        segment=frozen_segment(frozen.to_json()),
    )


def _per_language(
    store: Store,
    mailing_list: ListRow,
    resume: CampaignRow | None,
    frozen: FrozenCampaign,
    campaign: Campaign,
    recipients: list[Recipient],
    prepared: Prepared,
) -> tuple[dict[str, int], dict[str, str]]:
    """A bilingual dry run's audience by the version each gets (a campaign begun: who is still pending in its
    ledger; a new one: everyone it would go to), and the first member's message in each version."""
    if resume is not None and resume.started_at is not None:
        counts = campaign.by_version(store.pending_languages(resume.id))
    else:
        digest = prepared.digest()
        counts = campaign.by_version(store.audience_languages(mailing_list.id, frozen.segment, frozen.slug, digest))
    samples = {}
    if recipients:
        first = recipients[0]
        for lang in counts:
            member = dataclasses.replace(first, lang=lang)
            samples[lang] = campaign.build(member).to_bytes().decode("utf-8", errors="replace")
    return counts, samples


def _dry_run_note(audience: int, had_it: int) -> str | None:
    """What a dry run says beside its count: who is left out for having had this issue, or that nobody would get it."""
    already = (
        f"{had_it} member{'s' if had_it != 1 else ''} left out: an earlier campaign of this issue (to another "
        "segment, or before a cancel) already sent them the same content"
        if had_it > 0
        else ""
    )
    if not audience:
        return "nobody would receive it" + (f"; {already}" if already else "")
    return already or None


def single_address(text: str) -> str:
    """The one address a test send goes to, checked as a subscriber's is: a second address, a name or a header
    smuggled after a line break is refused."""
    try:
        return normalize_address(text)
    except ValueError as exc:
        raise NewsletterError(f"--to {text!r} is not one email address ({exc}); give a single address") from None


async def _test_send(
    prepared: Prepared, transport: Transport, mailing_list: ListRow, address: str, dry_run: bool
) -> SendSummary:
    frozen = prepared.freeze(mailing_list)
    # An issue in several languages: one message in each, since the test shows what each reader would get; each
    # its own key (its Message-ID, the outbox's file).
    messages = [
        frozen.campaign(
            "test" if lang == frozen.lang else f"test-{lang}", prepared.signer, subject_prefix="[TEST] "
        ).build(dataclasses.replace(test_recipient(address), lang=lang))
        for lang in (frozen.lang, *frozen.versions)
    ]
    summary = SendSummary(
        campaign=None,
        transport=str(prepared.dsn),
        dry_run=dry_run,
        recipients=[address],
        audience=1,
        sample=messages[0].to_bytes().decode("utf-8", errors="replace"),
        unsubscribe=prepared.unsubscribe(),
    )
    if frozen.versions:
        summary.languages = {lang: 1 for lang in (frozen.lang, *frozen.versions)}
        summary.samples = {
            lang: m.to_bytes().decode("utf-8", errors="replace")
            for lang, m in zip(summary.languages, messages, strict=True)
        }
    if dry_run:
        return summary
    await preflight(transport)  # a test send shows what the list would get: refused as the send would be
    outcomes = await transport.send_batch(messages)
    summary.transport = str(transport)
    sent = sum(o.status == "sent" for o in outcomes)
    summary.counts = {"sent": sent, "failed": len(outcomes) - sent}
    summary.failures = [(address, o.reason or o.status) for o in outcomes if o.status != "sent"]
    return summary


def campaign_status(workspace: Workspace, issue_slug: str, list_slug: str, segment: str | None = None) -> SendSummary:
    """Where the latest campaign of an issue to a list (or to a segment of it) stands."""
    zone = workspace.config.zone
    chosen = Chosen.of(workspace.config, list_slug, segment)
    store = open_store(workspace)
    try:
        list_id = store.list_id(list_slug)
        store.expire_overdue()
        latest = store.latest_campaign(issue_slug, list_id, _expression(chosen))
        if latest is None:
            where = f"the segment {chosen.expression} of this list" if chosen else "this list"
            return SendSummary(None, transport="", dry_run=False, note=f"never sent to {where}")
        if latest.started_at:
            when = f"started {shown(latest.started_at, zone)}"
        elif latest.scheduled_at:
            when = f"scheduled for {shown(latest.scheduled_at, zone)}"
        else:
            when = f"made {shown(latest.created_at, zone)}"
        if latest.finished_at:
            ended = "finished" if latest.status == CampaignStatus.FINISHED else latest.status
            when += f", {ended} {shown(latest.finished_at, zone)}"
        return SendSummary(
            campaign=latest.id,
            transport="",
            dry_run=False,
            counts=store.counts(latest.id),
            failures=store.failures(latest.id),
            note=when,
            status=latest.status,
            scheduled_at=latest.scheduled_at,
            approval=approval_of(store, latest.id),
            segment=frozen_segment(latest.content),
        )
    finally:
        store.close()


def change_campaign(store: Store, campaign_id: int, action: str) -> CampaignRow:
    """pause, resume or cancel a campaign, for every sender on every host; NewsletterError when it cannot."""
    row = store.campaign(campaign_id)
    if row is None:
        raise NewsletterError(f"no campaign {campaign_id}; `newsletter campaigns` lists them")
    if row.welcome and action == "cancel":  # whoever joins next would get no welcome, and nobody would know why
        raise NewsletterError(
            f"campaign {campaign_id} is the welcome email of its list: `newsletter campaign pause {campaign_id}` holds "
            "it (the newcomers' welcomes wait for resume); to stop welcoming, remove welcome from newsletter.toml"
        )
    if action == "pause":
        to = CampaignStatus.PAUSED
    elif action == "resume":  # back to where it was: running once its audience is fixed, else scheduled
        to = CampaignStatus.RUNNING if row.started_at else CampaignStatus.SCHEDULED
    else:
        to = CampaignStatus.CANCELLED
    done = store.change_campaign_status(campaign_id, to, action)  # as store.campaigns.TRANSITIONS allows
    if not done:
        now_row = store.campaign(campaign_id)
        raise NewsletterError(f"campaign {campaign_id} is {now_row.status if now_row else 'gone'}: it cannot {action}")
    found = store.campaign(campaign_id)
    assert found is not None
    return found
