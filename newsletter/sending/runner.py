"""The campaign runner: claim a batch of the ledger, send it, record every outcome; any number of senders at once.

A campaign is (issue content, list). When it starts, the ledger gets a pending row for every member subscribed at
that instant. The ledger is a work queue shared by every sender of the campaign (`send` and `worker` processes, on
one host with SQLite or on many sharing PostgreSQL): a sender claims a batch of due pending rows under a lease
(store.claim), builds each recipient's message, hands the batch to the transport and records each outcome as it
arrives, which releases that row. While a batch is in flight its lease is renewed; rows claimed but not sent (a
stop, a pause, a fatal transport error) are released at once. A row whose lease ran out (its sender died) can be
claimed by anyone again. A "retry" outcome waits (exponential backoff with jitter, or the server's Retry-After) and
is claimed again when due, up to max_attempts; then it counts as failed. The campaign's rate and per_hour limits
are booked in the store (store.reserve), so they hold for all its senders together.

The guarantee. Nobody is skipped: a row leaves `pending` only when its outcome is recorded. Two live senders never
send the same row: a claimed row is its sender's until it records it or gives it back. After a hard crash (kill -9,
power loss, a lost host) the rows the dead sender held are claimed again once their lease expires; the only
messages that can then go twice are those it had handed to the transport without recording their outcome:
  - smtp: at most 2 per open connection (transports that report each message as it goes, through send_each: a
    connection is never handed a message while more than one earlier answer of it is unrecorded), so 8 with the
    default 4 connections;
  - the outbox: none (it overwrites its file);
  - an API transport: the batches in flight, concurrency × its batch size (one request carries a whole batch).
Ctrl-C stops claiming and waits for the batches in flight to be recorded; a second Ctrl-C abandons them (released,
so that the next run sends them again at once: the same bound). A pause or a cancel is seen between two messages
(record asks the store): after it, the same bound goes (smtp: 2 a connection; an API: the requests made), and the
rest of each claimed batch is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from newsletter.message import Campaign, Outgoing, Recipient
from newsletter.store import CampaignRow, CampaignStatus, Delivery, DeliveryStatus, MembershipStatus, Result, now
from newsletter.transports.base import Outcome, SendsEach


class LedgerStore(Protocol):
    """What the runner needs from the store (newsletter.store.Store provides it)."""

    def claim(
        self, campaign_id: int, list_id: int, owner: str, limit: int, lease: float, at: dt.datetime | None = None
    ) -> list[Delivery] | None: ...

    def renew(self, campaign_id: int, sender: str, lease: float) -> int: ...

    def release(self, campaign_id: int, holder: str, subscriber_ids: Sequence[int] | None = None) -> int: ...

    def record(self, campaign_id: int, list_id: int, results: Sequence[Result], source: str = "send") -> bool: ...

    def reserve(self, campaign_id: int, count: int, rate: float | None, per_hour: int | None) -> dt.datetime: ...

    def subscribed_among(self, list_id: int, subscriber_ids: Sequence[int]) -> set[int]: ...

    def next_claimable(self, campaign_id: int, at: dt.datetime | None = None) -> dt.datetime | None: ...

    def held(self, campaign_id: int, at: dt.datetime | None = None) -> tuple[int, dt.datetime | None]: ...

    def counts(self, campaign_id: int) -> dict[str, int]: ...

    def campaign(self, campaign_id: int) -> CampaignRow | None: ...

    def finish_if_done(self, campaign_id: int) -> bool: ...


class Sender(Protocol):
    """What the runner needs from a transport. One that can also report each message as it goes is also a
    transports.base.SendsEach: its `send_each(messages, record)` calls `await record(index, outcome)` before it
    hands its connection the message after next (see the guarantee above)."""

    @property
    def max_batch(self) -> int: ...  # messages in one send_batch (a class attribute satisfies it)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]: ...


@dataclass
class Pacing:
    concurrency: int = 4  # batches in flight at once, in this process
    rate: float | None = None  # messages per second, for the whole campaign
    per_hour: int | None = None  # messages in any hour, for the whole campaign
    max_attempts: int = 5
    lease: float = 60.0  # seconds a claimed batch stays this sender's without renewal
    base_delay: float = 2.0  # seconds before the first retry, doubling after each
    max_delay: float = 300.0  # never wait longer than this between two tries
    poll: float = 1.0  # how often a sender with nothing to claim looks again (others' leases, a pause)


@dataclass
class RunReport:
    counts: dict[str, int] = field(default_factory=dict)  # the whole campaign's, at the end
    # The campaign's status at the end (paused or cancelled by someone: stopped early).
    status: str = CampaignStatus.RUNNING
    stopped: bool = False  # by Ctrl-C or a fatal transport error
    sent: int = 0  # by this run
    failed: int = 0  # by this run


def sender_id() -> str:
    """Who holds a lease: this host and process, and a random part (a pid is reused)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def skipped(delivery: Delivery, status: str | None) -> Result:
    return Result(
        delivery.subscriber_id, DeliveryStatus.SKIPPED, error=f"no longer subscribed ({status})", attempted=False
    )


def retry_delay(attempts: int, retry_after: float | None, pacing: Pacing) -> float:
    """Exponential backoff with jitter after `attempts` tries, or the server's Retry-After if longer."""
    backoff = min(pacing.max_delay, pacing.base_delay * 2 ** max(0, attempts - 1))
    delay = random.uniform(backoff / 2, backoff)
    return min(pacing.max_delay, max(delay, retry_after or 0.0))


def result_for(delivery: Delivery, outcome: Outcome, pacing: Pacing) -> Result:
    """The ledger entry for one outcome: final, or pending with the time of the next try."""
    if outcome.status == "sent":
        return Result(delivery.subscriber_id, DeliveryStatus.SENT, provider_id=outcome.provider_id)
    if outcome.status == "failed":
        return Result(delivery.subscriber_id, DeliveryStatus.FAILED, error=outcome.reason, bounce=outcome.bounce)
    attempts = delivery.attempts + 1
    if attempts >= pacing.max_attempts:
        return Result(
            delivery.subscriber_id, DeliveryStatus.FAILED, error=f"gave up after {attempts} tries: {outcome.reason}"
        )
    next_try = now() + dt.timedelta(seconds=retry_delay(attempts, outcome.retry_after, pacing))
    return Result(delivery.subscriber_id, DeliveryStatus.PENDING, error=outcome.reason, next_attempt_at=next_try)


class LeaseExpiring(Exception):
    """A batch's lease is about to run out (this sender was held up): the rest of it goes back to the queue."""


class CampaignHalted(LeaseExpiring):
    """The campaign was paused or cancelled while a batch went: the rest of it goes back to the queue."""


class LedgerWriter:
    """Records outcomes as they arrive, in groups: whatever came in while the previous write ran goes in the next
    (one executemany), so recording each message costs little more than recording each batch."""

    def __init__(self, store: LedgerStore, campaign_id: int, list_id: int):
        self.store, self.campaign_id, self.list_id = store, campaign_id, list_id
        self.queue: list[tuple[Result, asyncio.Future]] = []
        self.writing: asyncio.Task | None = None
        self.sent = self.failed = 0

    def submit(self, result: Result) -> asyncio.Future:
        """Queue one result; the future is done once it is in the ledger, with whether the campaign was running then
        (or holds the store's error)."""
        future = asyncio.get_running_loop().create_future()
        self.queue.append((result, future))
        if self.writing is None or self.writing.done():
            self.writing = asyncio.create_task(self._write())
        return future

    GATHER = 0.002  # seconds the first answer waits for others to share its write

    async def _write(self) -> None:
        await asyncio.sleep(self.GATHER)
        while self.queue:
            group, self.queue = self.queue, []
            try:
                running = await asyncio.to_thread(
                    self.store.record, self.campaign_id, self.list_id, [r for r, _ in group]
                )
            except Exception as exc:
                for _, future in group:
                    future.set_exception(exc)
                continue
            for result, future in group:
                self.sent += result.status == DeliveryStatus.SENT
                self.failed += result.status == DeliveryStatus.FAILED
                future.set_result(running)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when stop is set."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run(
    store: LedgerStore,
    transport: Sender,
    campaign: Campaign,
    campaign_id: int,
    list_id: int,
    pacing: Pacing,
    *,
    owner: str | None = None,
    stop: asyncio.Event | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
    wait: bool = True,
    tally: bool = True,
) -> RunReport:
    """Send a running campaign's pending messages, alongside whichever other senders work on it.

    wait=True (`send`): return when nothing is pending any more, waiting for retries and for the rows other
    senders hold. wait=False (`worker`): return as soon as nothing can be claimed now. Either way, return early
    when stopped or when the campaign is paused or cancelled. tally=False: RunReport.counts left empty (a welcome's
    ledger, which grows with every newcomer, is not counted after each send).
    """
    owner = owner or sender_id()
    stop = stop or asyncio.Event()
    report = RunReport()
    writer = LedgerWriter(store, campaign_id, list_id)
    batch_size = max(1, transport.max_batch)
    if pacing.rate:  # a batch is one booking: keep it within a second's worth of messages
        batch_size = max(1, min(batch_size, int(pacing.rate)))
    if pacing.per_hour:
        batch_size = min(batch_size, pacing.per_hour)
    halted = asyncio.Event()  # the campaign is no longer running (paused, cancelled, finished)
    claims = itertools.count(1)
    leases: dict[str, float] = {}  # claim -> when its lease runs out, by this process's clock
    last_progress = [0.0]

    async def notify() -> None:
        # Counting a large campaign's ledger takes a while: at most once a second, off the event loop.
        if progress is not None and time.monotonic() - last_progress[0] > 1.0:
            last_progress[0] = time.monotonic()
            progress(await asyncio.to_thread(store.counts, campaign_id))

    def lease_check(claim: str) -> None:
        """Stop a batch before its lease could run out under it: another sender may claim the rows then."""
        if time.monotonic() > leases[claim] - min(5.0, pacing.lease / 4):
            raise LeaseExpiring(claim)

    async def deliver(claim: str, batch: list[Delivery]) -> int:
        """Send a batch and record each outcome; return how many were recorded."""
        submitted: list[asyncio.Future] = []

        async def record(index: int, outcome: Outcome) -> None:
            future = writer.submit(result_for(batch[index], outcome, pacing))
            submitted.append(future)
            running = await future
            lease_check(claim)  # raised here, it ends send_each before its next message
            # A pause or a cancel holds this connection after the message in flight: at most two of its messages
            # go once the status changed (the one being sent, and the one handed while this ran). The status is
            # read where the outcome was written, in the same transaction.
            if not running:
                halted.set()
                raise CampaignHalted(claim)

        messages = [campaign.build(Recipient(d.subscriber_id, d.email, d.name, d.fields, d.lang)) for d in batch]
        lease_check(claim)
        if isinstance(transport, SendsEach):
            try:
                await transport.send_each(messages, record)
            finally:
                await asyncio.gather(*submitted, return_exceptions=True)  # whatever was answered is recorded
        else:
            outcomes = await transport.send_batch(messages)
            if len(outcomes) != len(messages):  # a transport bug must not lose anyone: treat all as unknown
                outcomes = [Outcome.retry("the transport answered for the wrong number of messages")] * len(messages)
            submitted.extend(writer.submit(result_for(d, o, pacing)) for d, o in zip(batch, outcomes, strict=True))
        await asyncio.gather(*submitted)
        return len(submitted)

    async def send_claimed(claim: str, claimed: list[Delivery]) -> None:
        ids = [d.subscriber_id for d in claimed]
        recorded = 0
        try:
            gone = [skipped(d, d.membership) for d in claimed if d.membership != MembershipStatus.SUBSCRIBED]
            batch = [d for d in claimed if d.membership == MembershipStatus.SUBSCRIBED]
            if pacing.rate or pacing.per_hour:
                start = await asyncio.to_thread(store.reserve, campaign_id, len(batch), pacing.rate, pacing.per_hour)
                await _pause(stop, (start - now()).total_seconds())
                if stop.is_set():
                    return  # not started: given back below
                # Read the memberships again after the wait: whoever left since is skipped.
                still = await asyncio.to_thread(store.subscribed_among, list_id, [d.subscriber_id for d in batch])
                gone += [skipped(d, "unsubscribed") for d in batch if d.subscriber_id not in still]
                batch = [d for d in batch if d.subscriber_id in still]
            if gone:
                await asyncio.gather(*(writer.submit(result) for result in gone))
                recorded += len(gone)
            if batch:
                recorded += await deliver(claim, batch)
            await notify()
        except LeaseExpiring:
            pass  # the rest of the batch goes back to the queue
        finally:
            leases.pop(claim, None)
            if recorded < len(ids):  # not sent (stopped, the transport failed): back to the queue now
                await asyncio.shield(asyncio.to_thread(store.release, campaign_id, claim, ids))

    async def lane(failures: list[BaseException]) -> None:
        while not stop.is_set() and not halted.is_set() and not failures:
            claim = f"{owner}#{next(claims)}"  # each claim its own holder: one lane never gives back another's rows
            leases[claim] = time.monotonic() + pacing.lease  # measured before the claim: never later than its own
            claimed = await asyncio.to_thread(store.claim, campaign_id, list_id, claim, batch_size, pacing.lease)
            if claimed is None:
                halted.set()
                return
            if not claimed:
                return
            try:
                await send_claimed(claim, claimed)
            except Exception as exc:  # e.g. TransportError: credentials refused; the rows were given back
                failures.append(exc)
                return

    async def renew_leases() -> None:
        while True:
            await asyncio.sleep(pacing.lease / 3)
            for claim in list(leases):
                deadline = time.monotonic() + pacing.lease
                still = await asyncio.to_thread(store.renew, campaign_id, claim, pacing.lease)
                if claim in leases:
                    # None of its rows still ours: all recorded, or taken over while this process was held up.
                    leases[claim] = deadline if still else 0.0

    async def one_pass() -> None:
        failures: list[BaseException] = []
        lanes = [asyncio.create_task(lane(failures)) for _ in range(pacing.concurrency)]
        renewing = asyncio.create_task(renew_leases())
        try:
            await asyncio.gather(*lanes)
        except BaseException:  # cancelled (a second Ctrl-C) or the store failed: abandon what is in flight
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            await asyncio.shield(asyncio.to_thread(store.release, campaign_id, owner))
            raise
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        if failures:
            raise failures[0]

    try:
        while not stop.is_set() and not halted.is_set():
            await one_pass()
            if not wait or stop.is_set() or halted.is_set():
                break
            due = await asyncio.to_thread(store.next_claimable, campaign_id)
            if due is None:
                break
            if progress is not None and due > now():
                # Nothing to claim now: say whose rows it waits for (a rerun after a crash waits out the dead
                # sender's leases), so that the wait is not taken for a hang.
                held, until = await asyncio.to_thread(store.held, campaign_id)
                if held and until is not None:
                    counts = await asyncio.to_thread(store.counts, campaign_id)
                    progress({**counts, "held": held, "held_until": int(until.timestamp())})
            await _pause(stop, min(pacing.poll, (due - now()).total_seconds()))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(store.finish_if_done, campaign_id)
        found = await asyncio.to_thread(store.campaign, campaign_id)
        report.status = found.status if found else CampaignStatus.RUNNING
        if tally:
            report.counts = await asyncio.to_thread(store.counts, campaign_id)
        report.stopped = stop.is_set()
        report.sent, report.failed = writer.sent, writer.failed
    return report


def test_recipient(address: str) -> Recipient:
    """The recipient of a test send: not a subscriber (id 0), so its unsubscribe link changes nothing."""
    return Recipient(0, address, None, {})
