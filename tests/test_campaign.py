"""The campaign runner on a real SQLite file with a scripted transport: every outcome recorded, nobody lost."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sample_messages import example_campaign

from newsletter.campaign import Pacing, RateLimiter, run
from newsletter.store import BOUNCED, FAILED, PENDING, SENT, SKIPPED, Store
from newsletter.subscribers import add
from newsletter.transports.base import Outcome, TransportError

FAST = Pacing(concurrency=2, base_delay=0.01, max_delay=0.05, max_attempts=4, page=5)


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
    row = store.start_campaign(list_id, "2024-11-forum-des-alliances", "hash", "Sujet")
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
    assert report.counts == {PENDING: 0, SENT: 12, FAILED: 0, SKIPPED: 0}
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
    assert report.counts == {PENDING: 0, SENT: 9, FAILED: 3, SKIPPED: 0}
    assert transport.delivered["p01@example.org"] == 1
    failures = dict(store.failures(campaign_id))
    assert failures["p02@example.org"] == "gave up after 4 tries: 429"
    assert failures["p03@example.org"] == "550 5.1.1 no such user"
    statuses = {m.email: m.status for m in store.members(store.list_id("alliances"))}
    assert statuses["p03@example.org"] == BOUNCED  # a hard bounce leaves the list
    assert statuses["p04@example.org"] == "subscribed"


def test_someone_who_unsubscribes_mid_campaign_is_skipped(store):
    def unsubscribe_p10(batch_number):
        if batch_number == 1:
            from newsletter.subscribers import remove

            remove(store, "alliances", "p10@example.org", source="one-click")

    transport = ScriptedTransport(on_batch=unsubscribe_p10)
    report, campaign_id = send(store, transport)
    assert report.counts[SKIPPED] == 1 and report.counts[SENT] == 11
    assert "p10@example.org" not in transport.delivered


def test_audience_is_fixed_when_the_campaign_starts(store):
    campaign_id, list_id = start(store)
    store._current = (campaign_id, list_id)
    add(store, "alliances", "late@example.org", None)
    transport = ScriptedTransport()
    report, _ = send(store, transport)
    assert report.counts[SENT] == 12 and "late@example.org" not in transport.delivered


def test_a_transport_error_stops_the_run_and_the_next_run_finishes(store):
    failing = ScriptedTransport(fail_on_batch=2)
    with pytest.raises(TransportError):
        send(store, failing, Pacing(concurrency=1, base_delay=0.01, page=5))
    campaign_id, _ = store._current
    counts = store.counts(campaign_id)
    assert counts[SENT] == 3 and counts[PENDING] == 9  # the refused batch stays pending
    again = ScriptedTransport()
    report, _ = send(store, again)
    assert report.counts[SENT] == 12
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
        report = await run(
            store, transport, example_campaign(), campaign_id, list_id, Pacing(concurrency=1, page=5),
            stop=stop_holder["stop"],
        )  # fmt: skip
        return report, transport

    report, first = asyncio.run(go())
    assert report.stopped and report.counts[SENT] == 3 and report.counts[PENDING] == 9
    second = ScriptedTransport()
    report, _ = send(store, second)
    assert report.counts[SENT] == 12 and not report.stopped
    assert first.delivered + second.delivered == Counter(addresses())


def test_rate_limiter_paces_by_second_and_by_hour(monkeypatch):
    moments = [0.0]
    waits = []

    async def fake_sleep(seconds):
        waits.append(round(seconds, 3))
        moments[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)

    async def go():
        limiter = RateLimiter(rate=10, per_hour=25, clock=lambda: moments[0])
        for _ in range(3):
            await limiter.acquire(10)

    asyncio.run(go())
    # 10 messages at 10/s: the next batch waits 1 s; the third would pass 25 an hour: wait for the hour.
    assert waits[0] == 1.0
    assert any(w >= 3598 for w in waits)


def test_progress_line_shows_done_rate_and_time_left():
    import io

    from newsletter.progress import ProgressLine

    stream = io.StringIO()
    line = ProgressLine(stream)
    line({"sent": 0, "failed": 0, "skipped": 0, "pending": 100})
    line.started -= 2.0  # two seconds ago
    line.last_drawn = 0.0
    line({"sent": 40, "failed": 2, "skipped": 0, "pending": 58})
    line.close()
    shown = stream.getvalue().split("\r")[-1]
    assert shown.startswith("42/100 done (2 failed), 21 msg/s, 3 s left")
