"""What `send` and `status` do: refuse what must not be sent, dry-run, test-send, or run the campaign.

A real send is refused when the issue has errors; when the transport leaves this machine (anything but outbox://
and null://) and base_url, NEWSLETTER_SECRET_KEY or absolute image URLs (asset_base_url) are missing; when the
list has nobody subscribed; and when the issue changed since a campaign to the same list began (--new-campaign
starts another one deliberately).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.campaign import Pacing, content_hash, run, test_recipient
from newsletter.checks import check_issue
from newsletter.errors import ConfigError, IssueError, NewsletterError
from newsletter.message import Campaign, DkimSigner, Recipient, parse_mailbox
from newsletter.render import RenderedIssue
from newsletter.store import PENDING, SUBSCRIBED, CampaignRow, ListRow, Store, database_url
from newsletter.tokens import TokenSigner
from newsletter.transports import DEFAULT_DSN, Dsn, Transport, transport_from_dsn
from newsletter.workspace import Workspace

LOCAL_SCHEMES = ("outbox", "null")  # nothing leaves this machine
LOCAL_BASE_URL = "http://127.0.0.1:8000"  # where `newsletter serve` listens by default
SAMPLE_RECIPIENTS = 5
FAR_FUTURE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


@dataclass
class SendSummary:
    campaign: int | None
    transport: str
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    recipients: list[str] = field(default_factory=list)  # dry run: the first few addresses
    audience: int = 0  # dry run: how many would get it
    sample: str | None = None  # dry run / test send: one whole message
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False
    note: str | None = None

    @property
    def ok(self) -> bool:
        return not self.counts.get("failed") and not self.counts.get("pending") and not self.stopped

    def to_json(self) -> dict:
        document = {
            "campaign": self.campaign,
            "sent": self.counts.get("sent", 0),
            "failed": self.counts.get("failed", 0),
            "skipped": self.counts.get("skipped", 0),
            "pending": self.counts.get("pending", 0),
            "transport": self.transport,
            "dry_run": self.dry_run,
        }
        if self.dry_run:
            document.update(audience=self.audience, recipients=self.recipients, sample=self.sample)
        if self.failures:
            document["failures"] = [{"email": e, "reason": r} for e, r in self.failures]
        if self.note:
            document["note"] = self.note
        return document


def open_store(workspace: Workspace) -> Store:
    return Store.open(database_url(workspace.root))


def transport_dsn(option: str | None) -> str:
    return option or os.environ.get("NEWSLETTER_TRANSPORT") or DEFAULT_DSN


def dkim_signer(workspace: Workspace) -> DkimSigner | None:
    """The DKIM signer when [dkim] and NEWSLETTER_DKIM_PRIVATE_KEY (PEM text or a file) are both set."""
    settings = workspace.config.dkim
    key = os.environ.get("NEWSLETTER_DKIM_PRIVATE_KEY", "")
    if not (settings.domain and settings.selector and key):
        return None
    data = key.encode() if "-----BEGIN" in key else Path(key).expanduser().read_bytes()
    return DkimSigner(settings.domain, settings.selector, data)


@dataclass
class Prepared:
    workspace: Workspace
    rendered: RenderedIssue
    dsn_text: str
    dsn: Dsn
    sender_text: str
    base_url: str
    signer: TokenSigner


def prepare(workspace: Workspace, folder: Path, dsn_text: str, *, real: bool) -> Prepared:
    """Check the issue and the settings a send needs; raise NewsletterError naming what is missing."""
    config = workspace.config
    dsn = Dsn.parse(dsn_text)
    local = dsn.scheme in LOCAL_SCHEMES
    result = check_issue(folder, config, workspace.templates_dir, asset_base_url=config.asset_base_url)
    if not result.report.ok or result.rendered is None or result.issue is None:
        raise IssueError(result.report.errors)
    sender_text = result.issue.model.from_ or config.sender.from_
    if not sender_text:
        raise ConfigError('no sender: set [sender] from = "Name <news@example.org>" in newsletter.toml')
    parse_mailbox(sender_text)
    if real and not local:
        if not config.base_url:
            raise ConfigError(
                "base_url is not set: unsubscribe links need the public URL of `newsletter serve`; set base_url in "
                "newsletter.toml or NEWSLETTER_BASE_URL"
            )
        if result.rendered.images and not config.asset_base_url:
            raise ConfigError(
                "the images would not load in an inbox: their URLs are relative. Publish build/ and set "
                "asset_base_url in newsletter.toml (or NEWSLETTER_ASSET_BASE_URL)"
            )
    signer = TokenSigner.from_environment(required=real and not local)
    return Prepared(workspace, result.rendered, dsn_text, dsn, sender_text, config.base_url or LOCAL_BASE_URL, signer)


def _campaign(prepared: Prepared, campaign_id: int | str, mailing_list: ListRow, subject_prefix: str = "") -> Campaign:
    config = prepared.workspace.config
    return Campaign(
        id=campaign_id,
        list_slug=mailing_list.slug,
        list_name=mailing_list.title(config.name),
        rendered=prepared.rendered,
        sender=parse_mailbox(prepared.sender_text),
        reply_to=config.sender.reply_to,
        base_url=prepared.base_url,
        signer=prepared.signer,
        unsubscribe_mailto=config.sending.unsubscribe_mailto,
        subject_prefix=subject_prefix,
    )


def _transport(prepared: Prepared) -> Transport:
    return transport_from_dsn(prepared.dsn_text, root=prepared.workspace.root, dkim=dkim_signer(prepared.workspace))


async def send(
    workspace: Workspace,
    folder: Path,
    list_slug: str,
    *,
    dsn_text: str,
    dry_run: bool = True,
    to: str | None = None,
    new_campaign: bool = False,
    pacing: Pacing | None = None,
    stop: asyncio.Event | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> SendSummary:
    """Dry-run, test-send or send an issue to a list (resuming its campaign). See the module docstring."""
    prepared = prepare(workspace, folder, dsn_text, real=not dry_run)
    config = workspace.config
    pacing = pacing or Pacing(
        concurrency=config.sending.concurrency,
        rate=config.sending.rate,
        per_hour=config.sending.per_hour,
        max_attempts=config.sending.max_attempts,
    )
    store = open_store(workspace)
    try:
        mailing_list = store.find_list(list_slug)
        if to is not None:
            return await _test_send(prepared, mailing_list, to, dry_run)
        list_id = mailing_list.id
        subscribed = store.count_members(list_id, SUBSCRIBED)
        digest = content_hash(prepared.rendered)
        latest = store.latest_campaign(prepared.rendered.slug, list_id)
        resume = _campaign_to_resume(latest, digest, new_campaign)
        if dry_run:
            return _dry_run(prepared, store, mailing_list, resume, subscribed)
        if resume is None:
            if subscribed == 0:
                raise NewsletterError(f"the list '{mailing_list.slug}' has nobody subscribed; nothing to send")
            resume = store.start_campaign(list_id, prepared.rendered.slug, digest, prepared.rendered.subject)
        transport = _transport(prepared)
        try:
            report = await run(
                store, transport, _campaign(prepared, resume.id, mailing_list), resume.id, list_id, pacing,
                stop=stop, progress=progress,
            )  # fmt: skip
        finally:
            await transport.aclose()
        if not report.counts.get(PENDING):
            store.finish_campaign(resume.id)
        return SendSummary(
            campaign=resume.id,
            transport=str(transport),
            dry_run=False,
            counts=report.counts,
            failures=store.failures(resume.id),
            stopped=report.stopped,
        )
    finally:
        store.close()


def _campaign_to_resume(latest: CampaignRow | None, digest: str, new_campaign: bool) -> CampaignRow | None:
    """The campaign to go on with, or None to start one.

    The same content resumes its campaign, with or without --new-campaign: a command run again (or kept in a
    script) never mails the list twice. Changed content needs --new-campaign.
    """
    if latest is None or latest.content_hash == digest:
        return latest
    if not new_campaign:
        raise NewsletterError(
            f"the issue changed since campaign {latest.id} to this list began on "
            f"{latest.created_at:%Y-%m-%d %H:%M} UTC; `newsletter status` shows who got the earlier version. "
            "To send the changed issue to the whole list as a new campaign, add --new-campaign"
        )
    return None


def _dry_run(
    prepared: Prepared, store: Store, mailing_list: ListRow, resume: CampaignRow | None, subscribed: int
) -> SendSummary:
    list_id = mailing_list.id
    campaign = _campaign(prepared, resume.id if resume else "dry-run", mailing_list)
    if resume is not None:
        counts = store.counts(resume.id)
        audience = counts[PENDING]
        first = store.pending(resume.id, list_id, after=0, limit=SAMPLE_RECIPIENTS, due=FAR_FUTURE)
        recipients = [Recipient(d.subscriber_id, d.email, d.name, d.fields) for d in first]
    else:
        counts, audience = {}, subscribed
        members = store.members(list_id, SUBSCRIBED, page=SAMPLE_RECIPIENTS)
        recipients = []
        for member in members:
            recipients.append(Recipient(member.subscriber_id, member.email, member.name, member.fields))
            if len(recipients) == SAMPLE_RECIPIENTS:
                break
    sample = campaign.build(recipients[0]).to_bytes().decode("utf-8", errors="replace") if recipients else None
    return SendSummary(
        campaign=resume.id if resume else None,
        transport=str(prepared.dsn),
        dry_run=True,
        counts=counts,
        recipients=[r.email for r in recipients],
        audience=audience,
        sample=sample,
        note=None if audience else "nobody would receive it",
    )


async def _test_send(prepared: Prepared, mailing_list: ListRow, address: str, dry_run: bool) -> SendSummary:
    message = _campaign(prepared, "test", mailing_list, subject_prefix="[TEST] ").build(test_recipient(address))
    summary = SendSummary(campaign=None, transport=str(prepared.dsn), dry_run=dry_run, recipients=[address],
                          audience=1, sample=message.to_bytes().decode("utf-8", errors="replace"))  # fmt: skip
    if dry_run:
        return summary
    transport = _transport(prepared)
    try:
        (outcome,) = await transport.send_batch([message])
    finally:
        await transport.aclose()
    summary.transport = str(transport)
    summary.counts = {"sent": int(outcome.status == "sent"), "failed": int(outcome.status != "sent")}
    if outcome.status != "sent":
        summary.failures = [(address, outcome.reason or outcome.status)]
    return summary


def campaign_status(workspace: Workspace, issue_slug: str, list_slug: str) -> SendSummary:
    store = open_store(workspace)
    try:
        list_id = store.list_id(list_slug)
        latest = store.latest_campaign(issue_slug, list_id)
        if latest is None:
            return SendSummary(None, transport="", dry_run=False, note="never sent to this list")
        return SendSummary(
            campaign=latest.id,
            transport="",
            dry_run=False,
            counts=store.counts(latest.id),
            failures=store.failures(latest.id),
            note=f"started {latest.created_at:%Y-%m-%d %H:%M} UTC"
            + (f", finished {latest.finished_at:%Y-%m-%d %H:%M} UTC" if latest.finished_at else ""),
        )
    finally:
        store.close()
