"""The campaign runner and the ledger queue, on SQLite and PostgreSQL, with a scripted transport: every outcome
recorded, nobody lost, nobody twice, however many senders share a campaign."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

import pytest
from sample_messages import example_campaign

from newsletter.sending.runner import Pacing, run
from newsletter.store import CampaignStatus, DeliveryStatus, MembershipStatus, Store, now
from newsletter.subscribers import add
from newsletter.transports.base import Outcome, TransportError

FAST = Pacing(concurrency=2, base_delay=0.01, max_delay=0.05, max_attempts=4, poll=0.01)


class ScriptedTransport:
    """Answers from a script per address (e.g. retry, retry, sent), else sent; counts what was really sent."""

    max_batch = 3

    def __init__(self, script=None, *, on_batch=None, fail_on_batch: int | None = None):
        self.script = {address: list(outcomes) for address, outcomes in (script or {}).items()}
        self.delivered: Counter = Counter()
        self.batches: list[list[str]] = []
        self.on_batch = on_batch
        self.fail_on_batch = fail_on_batch

    async def send_batch(self, messages):
        self.batches.append([m.recipient.address for m in messages])
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise TransportError("credentials refused")
        if self.on_batch:
            self.on_batch(len(self.batches))
        outcomes = []
        for message in messages:
            script = self.script.get(message.recipient.address)
            outcome = script.pop(0) if script else Outcome.sent(f"id-{message.key}")
            if outcome.status == "sent":
                self.delivered[message.recipient.address] += 1
            outcomes.append(outcome)
        await asyncio.sleep(0)
        return outcomes


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    for number in range(1, 13):
        add(store, "alliances", f"p{number:02d}@example.org", f"Personne {number}")
    yield store
    store.close()


def start(store):
    list_id = store.list_id("alliances")
    row = store.campaign(store.create_campaign(list_id, "2024-11-forum-des-alliances", "hash", "Sujet"))
    return row.id, list_id


def send(store, transport, pacing=FAST, stop=None):
    campaign_id, list_id = start(store) if not hasattr(store, "_current") else store._current
    store._current = (campaign_id, list_id)
    campaign = example_campaign()
    return asyncio.run(run(store, transport, campaign, campaign_id, list_id, pacing, stop=stop)), campaign_id


def addresses(n=12):
    return [f"p{i:02d}@example.org" for i in range(1, n + 1)]


def test_everyone_once_in_batches_of_the_transport_size(store):
    transport = ScriptedTransport()
    report, campaign_id = send(store, transport)
    assert report.counts == {
        DeliveryStatus.PENDING: 0,
        DeliveryStatus.SENT: 12,
        DeliveryStatus.FAILED: 0,
        DeliveryStatus.SKIPPED: 0,
    }
    assert transport.delivered == Counter(addresses())
    assert all(len(batch) <= 3 for batch in transport.batches)


def test_retries_then_sent_and_gives_up_after_max_attempts(store):
    transport = ScriptedTransport(
        {
            "p01@example.org": [Outcome.retry("451 greylisted"), Outcome.retry("451 again"), Outcome.sent("x")],
            "p02@example.org": [Outcome.retry("429", retry_after=0.02)] * 10,
            "p03@example.org": [Outcome.failed("550 5.1.1 no such user", bounce=True)],
            "p04@example.org": [Outcome.failed("552 too big")],
        }
    )
    report, campaign_id = send(store, transport)
    assert report.counts == {
        DeliveryStatus.PENDING: 0,
        DeliveryStatus.SENT: 9,
        DeliveryStatus.FAILED: 3,
        DeliveryStatus.SKIPPED: 0,
    }
    assert transport.delivered["p01@example.org"] == 1
    failures = dict(store.failures(campaign_id))
    assert failures["p02@example.org"] == "gave up after 4 tries: 429"
    assert failures["p03@example.org"] == "550 5.1.1 no such user"
    statuses = {m.email: m.status for m in store.members(store.list_id("alliances"))}
    assert statuses["p03@example.org"] == MembershipStatus.BOUNCED  # a hard bounce leaves the list
    assert statuses["p04@example.org"] == "subscribed"


def test_someone_who_unsubscribes_mid_campaign_is_skipped(store):
    def unsubscribe_p10(batch_number):
        if batch_number == 1:
            from newsletter.subscribers import remove

            remove(store, "alliances", "p10@example.org", source="one-click")

    transport = ScriptedTransport(on_batch=unsubscribe_p10)
    report, campaign_id = send(store, transport)
    assert report.counts[DeliveryStatus.SKIPPED] == 1 and report.counts[DeliveryStatus.SENT] == 11
    assert "p10@example.org" not in transport.delivered


def test_audience_is_fixed_when_the_campaign_starts(store):
    campaign_id, list_id = start(store)
    store._current = (campaign_id, list_id)
    add(store, "alliances", "late@example.org", None)
    transport = ScriptedTransport()
    report, _ = send(store, transport)
    assert report.counts[DeliveryStatus.SENT] == 12 and "late@example.org" not in transport.delivered


def test_a_transport_error_stops_the_run_and_the_next_run_finishes(store):
    failing = ScriptedTransport(fail_on_batch=2)
    with pytest.raises(TransportError):
        send(store, failing, Pacing(concurrency=1, base_delay=0.01, poll=0.01))
    campaign_id, _ = store._current
    counts = store.counts(campaign_id)
    assert counts[DeliveryStatus.SENT] == 3 and counts[DeliveryStatus.PENDING] == 9  # the refused batch stays pending
    again = ScriptedTransport()
    report, _ = send(store, again)
    assert report.counts[DeliveryStatus.SENT] == 12
    assert failing.delivered + again.delivered == Counter(addresses())  # each exactly once


def test_stop_takes_no_new_batch_and_the_rerun_resumes(store):
    stop_holder = {}

    def stop_after_first(batch_number):
        if batch_number == 1:
            stop_holder["stop"].set()

    async def go():
        stop_holder["stop"] = asyncio.Event()
        campaign_id, list_id = start(store)
        store._current = (campaign_id, list_id)
        transport = ScriptedTransport(on_batch=stop_after_first)
        pacing = Pacing(concurrency=1, poll=0.01)
        report = await run(store, transport, example_campaign(), campaign_id, list_id, pacing, stop=stop_holder["stop"])
        return report, transport

    report, first = asyncio.run(go())
    assert report.stopped and report.counts[DeliveryStatus.SENT] == 3 and report.counts[DeliveryStatus.PENDING] == 9
    second = ScriptedTransport()
    report, _ = send(store, second)
    assert report.counts[DeliveryStatus.SENT] == 12 and not report.stopped
    assert first.delivered + second.delivered == Counter(addresses())


def test_two_senders_at_once_share_the_campaign_and_nobody_gets_it_twice(store):
    for number in range(13, 61):
        add(store, "alliances", f"p{number:02d}@example.org", None)
    campaign_id, list_id = start(store)
    first, second = ScriptedTransport(), ScriptedTransport()

    async def both():
        return await asyncio.gather(
            run(store, first, example_campaign(), campaign_id, list_id, FAST, owner="host-a:1:x"),
            run(store, second, example_campaign(), campaign_id, list_id, FAST, owner="host-b:2:y"),
        )

    reports = asyncio.run(both())
    assert first.delivered + second.delivered == Counter(addresses(60))
    assert first.delivered and second.delivered  # both worked
    assert [r.counts[DeliveryStatus.SENT] for r in reports] == [60, 60] and reports[0].sent + reports[1].sent == 60
    assert store.campaign(campaign_id).status == "finished"


def test_a_claim_is_its_holders_until_released_recorded_or_expired(store):
    campaign_id, list_id = start(store)
    mine = store.claim(campaign_id, list_id, "a:1:x#1", 5, lease=60)
    assert [d.email for d in mine] == addresses(5) and all(d.membership == "subscribed" for d in mine)
    theirs = store.claim(campaign_id, list_id, "b:2:y#1", 100, lease=60)
    assert [d.email for d in theirs] == addresses(12)[5:]  # never a row another holds
    assert store.claim(campaign_id, list_id, "c:3:z#1", 100, lease=60) == []
    assert store.next_claimable(campaign_id) > now()  # when the first lease runs out
    assert store.release(campaign_id, "a:1:x#1", [mine[0].subscriber_id]) == 1  # given back: anyone's at once
    assert [d.email for d in store.claim(campaign_id, list_id, "c:3:z#2", 100, lease=60)] == addresses(1)
    assert store.renew(campaign_id, "b:2:y", lease=60) == 7  # every claim of that sender
    later = now() + dt.timedelta(seconds=61)
    expired = store.claim(campaign_id, list_id, "d:4:w#1", 100, lease=60, at=later)  # their holders died
    assert len(expired) == 12
    assert store.change_campaign_status(campaign_id, CampaignStatus.PAUSED, "pause")
    assert store.claim(campaign_id, list_id, "d:4:w#2", 100, lease=60, at=later + dt.timedelta(seconds=61)) is None


def test_pause_stops_the_runner_resume_finishes_cancel_leaves_the_rest(store):
    campaign_id, list_id = start(store)

    def pause_after_first(batch_number):
        if batch_number == 1:
            store.change_campaign_status(campaign_id, CampaignStatus.PAUSED, "pause")

    transport = ScriptedTransport(on_batch=pause_after_first)
    pacing = Pacing(concurrency=1, poll=0.01)
    report = asyncio.run(run(store, transport, example_campaign(), campaign_id, list_id, pacing))
    assert (
        report.status == CampaignStatus.PAUSED
        and report.counts[DeliveryStatus.SENT] == 3
        and report.counts[DeliveryStatus.PENDING] == 9
    )
    assert store.change_campaign_status(campaign_id, CampaignStatus.RUNNING, "resume")

    def cancel_after_first(batch_number):
        if batch_number == 2:
            store.change_campaign_status(campaign_id, CampaignStatus.CANCELLED, "cancel")

    transport.on_batch = cancel_after_first
    report = asyncio.run(run(store, transport, example_campaign(), campaign_id, list_id, pacing))
    assert (
        report.status == CampaignStatus.CANCELLED
        and report.counts[DeliveryStatus.SENT] == 6
        and report.counts[DeliveryStatus.PENDING] == 6
    )
    assert store.claim(campaign_id, list_id, "x#1", 100, lease=60) is None  # nobody sends the rest


def test_the_rate_and_hourly_limits_are_booked_for_the_whole_campaign(store):
    campaign_id, _ = start(store)
    at = now()
    slots = [store.reserve(campaign_id, 10, rate=10, per_hour=None) for _ in range(3)]
    gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)]
    assert all(0.99 <= gap <= 1.01 for gap in gaps) and slots[0] - at < dt.timedelta(seconds=1)
    other, _ = start(store)  # per_hour=25: two bookings of 10 now, the third an hour after the first
    hourly = [store.reserve(other, 10, rate=None, per_hour=25) for _ in range(3)]
    assert hourly[1] - hourly[0] < dt.timedelta(seconds=1)
    assert dt.timedelta(minutes=59, seconds=59) <= hourly[2] - hourly[0] <= dt.timedelta(hours=1, seconds=1)


def test_a_rate_holds_across_two_senders(store):
    for number in range(13, 41):
        add(store, "alliances", f"p{number:02d}@example.org", None)
    campaign_id, list_id = start(store)
    moments: list[float] = []

    class Timed(ScriptedTransport):
        async def send_batch(self, messages):
            moments.extend(time.monotonic() for _ in messages)
            return await super().send_batch(messages)

    pacing = Pacing(concurrency=2, rate=20, poll=0.01)

    async def both():
        await asyncio.gather(
            run(store, Timed(), example_campaign(), campaign_id, list_id, pacing, owner="a:1:x"),
            run(store, Timed(), example_campaign(), campaign_id, list_id, pacing, owner="b:2:y"),
        )

    asyncio.run(both())
    moments.sort()
    assert len(moments) == 40
    # 40 messages at 20/s shared take close to 2 s; each sender at 20/s of its own would take under 1 s. The
    # margin is for a first message that leaves late on a loaded machine (which shortens the span measured).
    assert moments[-1] - moments[0] >= 1.5


def test_progress_line_shows_done_rate_and_time_left():
    import io

    from newsletter.progress import ProgressLine

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    line = ProgressLine(stream)
    line({"sent": 0, "failed": 0, "skipped": 0, "pending": 100})
    line.started -= 2.0  # two seconds ago
    line.last_drawn = 0.0
    line({"sent": 40, "failed": 2, "skipped": 0, "pending": 58})
    line.close()
    shown = stream.getvalue().split("\r")[-1]
    assert shown.startswith("42/100 done (2 failed), 21 msg/s, 3 s left")


def test_progress_in_a_log_says_only_why_it_waits_and_once_per_wait():
    import io

    from newsletter.progress import ProgressLine

    stream = io.StringIO()  # not a terminal: a log, a pipe
    line = ProgressLine(stream)
    line({"sent": 40, "failed": 0, "skipped": 0, "pending": 60})
    for _ in range(3):  # polled every second while it waits: one line
        line({"sent": 40, "failed": 0, "skipped": 0, "pending": 60, "held": 12, "held_until": 1764648662})
    line.close()
    assert stream.getvalue() == (
        "waiting for 12 messages another sender holds; should it have stopped (a crash), they are sent once its "
        "lease ends at 04:11:02 UTC\n"
    )


def test_a_sender_held_up_past_its_lease_stops_its_batch_when_another_took_it_over(store):
    """A's event loop is blocked longer than its lease (no renewal could run); B claims the rows meanwhile and
    sends them. When A wakes up it records the answer it had and sends nothing more of that batch."""
    import threading

    class Streaming(ScriptedTransport):
        max_batch = 12

        def __init__(self, stall: float = 0.0):
            super().__init__()
            self.stall = stall

        async def send_each(self, messages, record):
            for index, message in enumerate(messages):
                self.delivered[message.recipient.address] += 1
                if self.stall:
                    time.sleep(self.stall)  # held up: the whole loop, renewals included
                    self.stall = 0.0
                await record(index, Outcome.sent())

    campaign_id, list_id = start(store)
    pacing = Pacing(concurrency=1, lease=1.0, poll=0.05)
    held_up, other = Streaming(stall=1.8), Streaming()

    def b_after_a_began():
        while not held_up.delivered:
            time.sleep(0.01)
        asyncio.run(run(store, other, example_campaign(), campaign_id, list_id, pacing, owner="b:2:y"))

    b = threading.Thread(target=b_after_a_began)
    b.start()
    asyncio.run(run(store, held_up, example_campaign(), campaign_id, list_id, pacing, owner="a:1:x"))
    b.join()
    assert held_up.delivered == Counter(addresses(1))  # the message it was sending when it stalled, no more
    assert other.delivered == Counter(addresses())
    assert store.counts(campaign_id)[DeliveryStatus.SENT] == 12
