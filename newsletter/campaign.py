"""Send an issue to a list: the campaign runner, and the checks that come before a real send.

A campaign is (issue content, list). Starting one writes a pending ledger row for every member subscribed at that
instant. The runner then reads the due pending rows in subscriber order, a page at a time; skips anyone whose
membership is no longer `subscribed` (re-read just before sending); sends in batches of the transport's size with
bounded concurrency and a rate limit; and records every outcome in the ledger as it arrives, before counting it.
A "retry" outcome waits (exponential backoff with jitter, or the server's Retry-After) and is tried again in a
later pass of the same run, up to max_attempts; then it counts as failed.

The guarantee. Nobody is skipped: a row leaves `pending` only when its outcome is recorded, and a run ends with
rows still pending only when it was stopped or a retry is still waiting; the next run takes them. At most the
messages in flight at the instant of a hard crash (kill -9, power loss) can be sent twice: they were handed to the
transport but their outcome was not recorded. That is at most concurrency × batch size messages (4 × 20 for
SMTP by default), and 0 for the outbox, which overwrites its file. Ctrl-C stops taking new batches and waits for
the batches in flight to be recorded; a second Ctrl-C abandons them (they stay pending, so they are sent again
next time: the same bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from newsletter.message import Campaign, Outgoing, Recipient
from newsletter.render import RenderedIssue
from newsletter.store import FAILED, PENDING, SENT, SKIPPED, SUBSCRIBED, Delivery, Result, now
from newsletter.transports.base import Outcome


class LedgerStore(Protocol):
    """What the runner needs from the store (newsletter.store.Store provides it)."""

    def pending(
        self, campaign_id: int, list_id: int, *, after: int, limit: int, due: dt.datetime
    ) -> list[Delivery]: ...

    def record(self, campaign_id: int, list_id: int, results: Sequence[Result], source: str = "send") -> None: ...

    def subscribed_among(self, list_id: int, subscriber_ids: Sequence[int]) -> set[int]: ...

    def next_due(self, campaign_id: int) -> dt.datetime | None: ...

    def counts(self, campaign_id: int) -> dict[str, int]: ...


class Sender(Protocol):
    """What the runner needs from a transport."""

    max_batch: int

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]: ...


@dataclass
class Pacing:
    concurrency: int = 4
    rate: float | None = None  # messages per second
    per_hour: int | None = None
    max_attempts: int = 5
    page: int = 1000  # ledger rows read at once
    base_delay: float = 2.0  # seconds before the first retry, doubling after each
    max_delay: float = 300.0  # never wait longer than this between two tries


class RateLimiter:
    """At most `rate` messages a second and `per_hour` an hour, counted when a batch is handed over."""

    def __init__(self, rate: float | None, per_hour: int | None, clock: Callable[[], float] = time.monotonic):
        self.rate, self.per_hour, self.clock = rate, per_hour, clock
        self._next = 0.0
        self._hour: deque[tuple[float, int]] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self, count: int) -> None:
        async with self._lock:
            if self.per_hour:
                count = min(count, self.per_hour)
                while True:
                    moment = self.clock()
                    while self._hour and self._hour[0][0] <= moment - 3600:
                        self._hour.popleft()
                    if sum(n for _, n in self._hour) + count <= self.per_hour:
                        break
                    await asyncio.sleep(self._hour[0][0] + 3600 - moment)
                self._hour.append((self.clock(), count))
            if self.rate:
                moment = self.clock()
                start = max(moment, self._next)
                self._next = start + count / self.rate
                if start > moment:
                    await asyncio.sleep(start - moment)


@dataclass
class RunReport:
    counts: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # by Ctrl-C or a fatal transport error
    error: str | None = None


def skipped(delivery: Delivery, status: str | None) -> Result:
    return Result(delivery.subscriber_id, SKIPPED, error=f"no longer subscribed ({status})", attempted=False)


def content_hash(rendered: RenderedIssue) -> str:
    """What identifies a campaign's content: its subject and both parts, placeholders still in."""
    return hashlib.sha256("\0".join((rendered.subject, rendered.html, rendered.text)).encode("utf-8")).hexdigest()


def retry_delay(attempts: int, retry_after: float | None, pacing: Pacing) -> float:
    """Exponential backoff with jitter after `attempts` tries, or the server's Retry-After if longer."""
    backoff = min(pacing.max_delay, pacing.base_delay * 2 ** max(0, attempts - 1))
    delay = random.uniform(backoff / 2, backoff)
    return min(pacing.max_delay, max(delay, retry_after or 0.0))


def result_for(delivery: Delivery, outcome: Outcome, pacing: Pacing) -> Result:
    """The ledger entry for one outcome: final, or pending with the time of the next try."""
    if outcome.status == "sent":
        return Result(delivery.subscriber_id, SENT, provider_id=outcome.provider_id)
    if outcome.status == "failed":
        return Result(delivery.subscriber_id, FAILED, error=outcome.reason, bounce=outcome.bounce)
    attempts = delivery.attempts + 1
    if attempts >= pacing.max_attempts:
        return Result(delivery.subscriber_id, FAILED, error=f"gave up after {attempts} tries: {outcome.reason}")
    next_try = now() + dt.timedelta(seconds=retry_delay(attempts, outcome.retry_after, pacing))
    return Result(delivery.subscriber_id, PENDING, error=outcome.reason, next_attempt_at=next_try)


async def run(
    store: LedgerStore,
    transport: Sender,
    campaign: Campaign,
    campaign_id: int,
    list_id: int,
    pacing: Pacing,
    *,
    stop: asyncio.Event | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> RunReport:
    """Send every pending message of a campaign; return when none is left, or when stopped."""
    stop = stop or asyncio.Event()
    limiter = RateLimiter(pacing.rate, pacing.per_hour)
    report = RunReport()
    batch_size = max(1, transport.max_batch)

    def notify() -> None:
        if progress is not None:
            progress(store.counts(campaign_id))

    async def send(deliveries: list[Delivery], messages: list[Outgoing]) -> None:
        # Read the memberships again at the last moment: whoever left since the page was read is skipped.
        still = store.subscribed_among(list_id, [d.subscriber_id for d in deliveries])
        if len(still) < len(deliveries):
            store.record(
                campaign_id, list_id, [skipped(d, "unsubscribed") for d in deliveries if d.subscriber_id not in still]
            )
            kept = [(d, m) for d, m in zip(deliveries, messages, strict=True) if d.subscriber_id in still]
            deliveries, messages = [d for d, _ in kept], [m for _, m in kept]
            if not messages:
                return
        await limiter.acquire(len(messages))
        outcomes = await transport.send_batch(messages)
        if len(outcomes) != len(messages):  # a transport bug must not lose anyone: treat all as unknown
            outcomes = [Outcome.retry("the transport answered for the wrong number of messages")] * len(messages)
        results = [result_for(d, o, pacing) for d, o in zip(deliveries, outcomes, strict=True)]
        store.record(campaign_id, list_id, results)  # recorded first, counted after
        notify()

    async def worker(queue: asyncio.Queue, failures: list[BaseException]) -> None:
        # A worker never dies early: the producer could then block on a full queue.
        while (item := await queue.get()) is not None:
            if stop.is_set():
                continue  # not started: stays pending
            try:
                await send(*item)
            except Exception as exc:  # e.g. TransportError: credentials refused; the rows stay pending
                failures.append(exc)
                stop.set()

    async def produce(queue: asyncio.Queue) -> None:
        after, due = 0, now()
        while not stop.is_set():
            page = store.pending(campaign_id, list_id, after=after, limit=pacing.page, due=due)
            if not page:
                return
            after = page[-1].subscriber_id
            store.record(campaign_id, list_id, [skipped(d, d.membership) for d in page if d.membership != SUBSCRIBED])
            current = [d for d in page if d.membership == SUBSCRIBED]
            for start in range(0, len(current), batch_size):
                if stop.is_set():
                    return
                chunk = current[start : start + batch_size]
                messages = [campaign.build(Recipient(d.subscriber_id, d.email, d.name, d.fields)) for d in chunk]
                await queue.put((chunk, messages))

    async def one_pass() -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=pacing.concurrency)
        failures: list[BaseException] = []
        workers = [asyncio.create_task(worker(queue, failures)) for _ in range(pacing.concurrency)]
        try:
            await produce(queue)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        except BaseException:  # cancelled (a second Ctrl-C) or the store failed: abandon what is in flight
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        if failures:
            raise failures[0]

    try:
        while not stop.is_set():
            await one_pass()
            due = store.next_due(campaign_id)
            if due is None or stop.is_set():
                break
            wait = (due - now()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
    finally:
        report.counts = store.counts(campaign_id)
        report.stopped = stop.is_set()
    return report


def test_recipient(address: str) -> Recipient:
    """The recipient of a test send: not a subscriber (id 0), so its unsubscribe link changes nothing."""
    return Recipient(0, address, None, {})
