"""`newsletter worker`: the long-running sender. It starts the scheduled campaigns whose time has come, expires
those that nobody started in time, and sends every running campaign beside any other worker or `send`, on this host
or on others sharing the PostgreSQL store.

Each pass: expire and start what is due (store.start_due), then work on each running campaign until nothing of it
can be claimed now (runner.run with wait=False); then sleep `poll` seconds, or exit with --until-idle when the
pass found nothing to send. A worker sends through its own NEWSLETTER_TRANSPORT, signs with its own
NEWSLETTER_SECRET_KEY (the same key as `serve`'s), and builds every message from the campaign's frozen content, so
it needs no issue files. A campaign begun with a provider's hosted unsubscribe goes on only through the same
provider, whose unsubscribes the worker reads before it sends and every ten minutes of a long campaign. A campaign
this worker may not send (frozen by a newer version, local only, another unsubscribe) is skipped with one line, and
the worker goes on with the others. A list's welcome email (sending/welcome.py) is a running campaign that never
finishes: the worker sends the rows still pending of it as of any (serve's background sender's leftovers, the
retries, those `subscribers add|import --welcome` queued); send_running is what serve calls for them too.
Its first stop signal stops claiming and lets the batches in flight be recorded.
With `[bounces] mailbox` set, it also scans the bounce mailbox every `[bounces] every` (bounces/scan.py), in a
thread beside the sending; a scan that fails (the server unreachable) is logged and tried again at the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter.config import Config, parse_duration
from newsletter.errors import NewsletterError
from newsletter.sending.frozen import FrozenCampaign, NewerContentFormat
from newsletter.sending.runner import RunReport, run, sender_id
from newsletter.sending.wiring import (
    check_transport_fits,
    hosted_unsubscribe,
    is_local,
    open_store,
    pacing_for,
    ready,
)
from newsletter.store import CampaignRow, CampaignStatus, Store, now
from newsletter.tokens import TokenSigner
from newsletter.transports import Transport, transport_for
from newsletter.workspace import Workspace

POLL = 2.0  # seconds between two passes of an idle worker
READY_EVERY = 600.0  # seconds: a long campaign reads the provider's unsubscribes again this often


@dataclass
class WorkerReport:
    sent: int = 0
    failed: int = 0
    campaigns: list[int] = field(default_factory=list)  # those it sent messages of
    skipped: dict[int, str] = field(default_factory=dict)  # campaigns it may not send, and why
    bounce_scans: int = 0  # scans of the bounce mailbox it made
    bounces: dict[str, int] = field(default_factory=dict)  # what they decided, by kind (hard, soft, complaint, …)

    def to_json(self) -> dict:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "campaigns": self.campaigns,
            "skipped": [{"campaign": k, "reason": v} for k, v in self.skipped.items()],
            "bounce_scans": self.bounce_scans,
            "bounces": self.bounces,
        }


async def work(
    workspace: Workspace,
    dsn_text: str,
    *,
    until_idle: bool = False,
    stop: asyncio.Event | None = None,
    poll: float = POLL,
    log: Callable[[str], None] = lambda line: None,
) -> WorkerReport:
    """Send what is due, pass after pass, until stopped (or, with until_idle, until a pass finds nothing)."""
    stop = stop or asyncio.Event()
    local = is_local(dsn_text)
    report = WorkerReport()
    owner = sender_id()
    store = open_store(workspace)
    transport = transport_for(workspace, dsn_text)
    readied: dict[int, float] = {}  # campaign -> when this worker last read the provider's account and suppressions
    bounces = workspace.config.bounces
    scan_every = parse_duration(bounces.every) if bounces.mailbox else None
    scanned_at = -float("inf")
    try:
        signer = TokenSigner.from_environment(required=not local and hosted_unsubscribe(transport) is None)
        while not stop.is_set():
            if scan_every is not None and time.monotonic() - scanned_at >= scan_every:
                scanned_at = time.monotonic()
                await _scan_bounces(workspace, store, signer, report, log)
            for started in await asyncio.to_thread(store.start_due):
                log(f"campaign {started}: started, as scheduled")
            busy = False
            welcomes = set(await asyncio.to_thread(store.campaign_ids, CampaignStatus.RUNNING, welcome=True))
            for campaign_id in await asyncio.to_thread(store.campaign_ids, CampaignStatus.RUNNING):
                if stop.is_set():
                    break
                if campaign_id in welcomes and not await asyncio.to_thread(_due_now, store, campaign_id):
                    continue  # a welcome waits for newcomers forever: its content is read only when a row is due
                done = await send_running(
                    store,
                    transport,
                    signer,
                    workspace.config,
                    campaign_id,
                    local=local,
                    owner=owner,
                    stop=stop,
                    readied=readied,
                    skipped=report.skipped,
                    log=log,
                )
                if done is not None and (done.sent or done.failed):
                    busy = True
                    report.sent += done.sent
                    report.failed += done.failed
                    if campaign_id not in report.campaigns:
                        report.campaigns.append(campaign_id)
                    log(f"campaign {campaign_id}: {done.sent} sent, {done.failed} failed here; now {done.status}")
            if until_idle and not busy:
                break
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll)
    finally:
        await transport.aclose()
        store.close()
    return report


async def _scan_bounces(
    workspace: Workspace, store: Store, signer: TokenSigner, report: WorkerReport, log: Callable[[str], None]
) -> None:
    from newsletter.bounces.scan import scan_configured

    try:
        found = await asyncio.to_thread(scan_configured, workspace.config, store, signer)
    except NewsletterError as exc:
        log(f"bounces: not scanned this turn: {exc}")
        return
    report.bounce_scans += 1
    for kind, count in found.decided.items():
        report.bounces[kind] = report.bounces.get(kind, 0) + count
    if found.read:
        log(f"bounces: {found.summary().splitlines()[0]}")


async def send_running(
    store: Store,
    transport: Transport,
    signer: TokenSigner,
    config: Config,
    campaign_id: int,
    *,
    local: bool,
    owner: str,
    stop: asyncio.Event,
    readied: dict[int, float],
    skipped: dict[int, str],
    log: Callable[[str], None],
) -> RunReport | None:
    """Send what can be claimed now of one running campaign (runner.run with wait=False), beside any other sender;
    None when it is not running, or this process may not send it: why is in `skipped` (and the log, once).
    readied: when this process last read the provider's account and unsubscribes for each campaign (it does again
    every READY_EVERY). A welcome's ledger is not counted at the end (RunReport.counts): it grows with every
    newcomer, and nobody reads its counts here."""
    row = await asyncio.to_thread(store.campaign, campaign_id)
    if row is None or row.status != CampaignStatus.RUNNING:
        return None
    frozen = _frozen_to_send(row, local)
    if isinstance(frozen, str):  # why this worker may not send it
        if campaign_id not in skipped:
            skipped[campaign_id] = frozen
            log(f"campaign {campaign_id}: not sent by this worker: {frozen}")
        return None
    campaign = frozen.campaign(campaign_id, signer)
    try:
        check_transport_fits(campaign, transport)
    except NewsletterError as exc:
        if campaign_id not in skipped:
            skipped[campaign_id] = str(exc)
            log(f"campaign {campaign_id}: not sent by this worker: {exc}")
        return None
    if time.monotonic() - readied.get(campaign_id, -READY_EVERY) >= READY_EVERY:
        try:
            await ready(store, transport, row.list_id)
        except NewsletterError as exc:  # the provider did not answer, or refused: the next pass asks again
            log(f"campaign {campaign_id}: not sent this pass: {exc}")
            return None
        readied[campaign_id] = time.monotonic()
    pacing = pacing_for(config, frozen)
    tally = not row.welcome
    return await run(
        store, transport, campaign, campaign_id, row.list_id, pacing, owner=owner, stop=stop, wait=False, tally=tally
    )


def _due_now(store: Store, campaign_id: int) -> bool:
    """Whether a row of the campaign can be claimed now (one look at its few pending rows: for a welcome)."""
    due = store.next_claimable(campaign_id)
    return due is not None and due <= now()


def _frozen_to_send(row: CampaignRow, local: bool) -> FrozenCampaign | str:
    """A running campaign's frozen content, or why this worker may not send it."""
    if row.content is None:
        return "it was begun by an earlier version, which froze no content: finish it with `newsletter send`"
    try:
        frozen = FrozenCampaign.of(row)
    except NewerContentFormat as exc:  # nothing of it is sent here; a worker of the newer version sends it
        return exc.reason
    if not local and frozen.local_only:
        return f"its links only work on the machine that made it ({frozen.local_only})"
    return frozen
