"""Many senders on one campaign, as real processes: two `send` at once, `worker`s that share a scheduled campaign
(one of them killed), pause, resume and cancel from the command line, a schedule and its expiry, a global rate.
Every test runs against aiosmtpd; the store is SQLite or a real PostgreSQL server as each test says."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time

import pytest
from conftest import EXAMPLE_SLUG
from smtp_server import RunningSmtp, SmtpSink
from test_send import add_members, environment, newsletter_command, run, wait_for, with_sending
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)

from newsletter.sending.wiring import open_store
from newsletter.workspace import Workspace


@pytest.fixture
def database_setting(database_url) -> str:
    """These tests run on SQLite and on PostgreSQL unless they say otherwise."""
    return database_url


def store_of(workspace):
    return open_store(Workspace.discover(workspace))


def campaign_document(workspace, campaign_id: int) -> dict:
    found = json.loads(run("campaigns", "--json").stdout)["campaigns"]
    return next(c for c in found if c["id"] == campaign_id)


def status_is(workspace, campaign_id: int, status: str):
    """A condition for wait_for, polled gently: the senders must keep the CPU."""
    return lambda: time.sleep(0.2) or campaign_document(workspace, campaign_id)["status"] == status


def soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def start(*args: str, workspace, transport: str) -> subprocess.Popen:
    return subprocess.Popen(
        newsletter_command(*args),
        cwd=workspace,
        env=environment(NEWSLETTER_TRANSPORT=transport),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_sends_started_at_once_mail_everyone_exactly_once(workspace):  # noqa: F811
    add_members(workspace, 396)
    with RunningSmtp(SmtpSink(delay=0.002)) as server:
        both = [
            start(
                "send",
                EXAMPLE_SLUG,
                "--list",
                "alliances",
                "--no-dry-run",
                "--json",
                workspace=workspace,
                transport=server.dsn(),
            )
            for _ in range(2)
        ]
        outputs = [process.communicate() for process in both]
    assert [process.returncode for process in both] == [0, 0], [err for _, err in outputs]
    documents = [json.loads(out) for out, _ in outputs]
    assert {d["campaign"] for d in documents} == {1}  # one campaign, shared
    assert all(d["sent"] == 400 and d["pending"] == 0 for d in documents)
    counts = server.sink.per_recipient()
    assert len(counts) == 400 and set(counts.values()) == {1}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_three_workers_share_a_scheduled_campaign_and_one_killed_loses_nobody(workspace):  # noqa: F811
    add_members(workspace, 596)
    with_sending(workspace, lease=2)
    sink = SmtpSink(delay=0.005)
    with RunningSmtp(sink) as server:
        scheduled = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", soon(1.5), "--json")
        assert scheduled.exit_code == 0, scheduled.output
        campaign_id = json.loads(scheduled.stdout)["campaign"]
        assert json.loads(scheduled.stdout)["status"] == "scheduled" and not sink.received
        workers = [start("worker", "--json", workspace=workspace, transport=server.dsn()) for _ in range(3)]
        wait_for(lambda: len(sink.received) >= 150, "150 messages in")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        wait_for(status_is(workspace, campaign_id, "finished"), "the campaign finished")
        for survivor in workers[1:]:
            survivor.send_signal(signal.SIGTERM)
        summaries = [json.loads(survivor.communicate()[0]) for survivor in workers[1:]]
    assert [w.returncode for w in workers[1:]] == [0, 0]
    assert all(s["sent"] > 0 and s["campaigns"] == [campaign_id] for s in summaries)  # each did part of it
    counts = sink.per_recipient()
    assert len(counts) == 600  # nobody missing
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 2 * 4  # the killed worker's in-flight messages: two per SMTP connection
    document = campaign_document(workspace, campaign_id)
    assert (document["sent"], document["pending"]) == (600, 0)


def test_pause_holds_every_worker_resume_finishes_cancel_leaves_the_rest(workspace):  # noqa: F811
    add_members(workspace, 596)
    sink = SmtpSink(delay=0.05)  # about 160 a second from two workers: time to pause, resume and cancel
    with RunningSmtp(sink) as server:
        scheduled = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", soon(1), "--json")
        campaign_id = json.loads(scheduled.stdout)["campaign"]
        workers = [start("worker", "--json", workspace=workspace, transport=server.dsn()) for _ in range(2)]
        wait_for(lambda: len(sink.received) >= 40, "40 messages in")
        paused = run("campaign", "pause", str(campaign_id), "--json")
        assert paused.exit_code == 0 and json.loads(paused.stdout)["status"] == "paused"
        at_pause = len(sink.received)
        # Settled when no sender holds a row: nothing is in flight then, and no claim is granted while paused.
        store = store_of(workspace)
        try:
            wait_for(lambda: time.sleep(0.1) or store.held(campaign_id)[0] == 0, "the workers gave their rows back")
        finally:
            store.close()
        held = len(sink.received)
        # What a pause lets through: per SMTP connection, the message being sent and the one handed meanwhile
        # (two workers, four connections each), never the rest of a claimed batch (20 a connection).
        assert held - at_pause <= 2 * 2 * 4 and held < 600
        assert run("campaign", "resume", str(campaign_id)).exit_code == 0
        wait_for(lambda: len(sink.received) >= held + 40, "40 more after resume")
        cancelled = run("campaign", "cancel", str(campaign_id), "--json")
        assert cancelled.exit_code == 0
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.communicate()
    document = campaign_document(workspace, campaign_id)
    assert document["status"] == "cancelled" and document["pending"] > 0
    assert document["sent"] + document["pending"] == 600
    counts = sink.per_recipient()
    assert set(counts.values()) == {1} and len(counts) == document["sent"]  # the rest were never sent
    again = run("campaign", "resume", str(campaign_id))
    assert again.exit_code == 1 and f"campaign {campaign_id} is cancelled: it cannot resume" in again.stderr


def test_a_scheduled_campaign_waits_for_its_time_and_expires_when_no_worker_came(workspace):  # noqa: F811
    with RunningSmtp(SmtpSink()) as server:
        scheduled = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", soon(1.5), "--json")
        campaign_id = json.loads(scheduled.stdout)["campaign"]
        early = run("worker", "--until-idle", "--json", "--transport", server.dsn())
        assert early.exit_code == 0 and json.loads(early.stdout)["sent"] == 0 and not server.sink.received
        assert campaign_document(workspace, campaign_id)["status"] == "scheduled"
        same = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run")
        assert same.exit_code == 1 and f"campaign {campaign_id} is scheduled for" in same.stderr
        wait_for(
            lambda: (
                dt.datetime.now(dt.UTC)
                > dt.datetime.fromisoformat(campaign_document(workspace, campaign_id)["scheduled_at"])
            ),
            "its time",
        )
        late = run("worker", "--until-idle", "--json", "--transport", server.dsn())
        assert json.loads(late.stdout) == {
            "sent": 4,
            "failed": 0,
            "campaigns": [campaign_id],
            "skipped": [],
            "bounce_scans": 0,
            "bounces": {},
        }
        assert campaign_document(workspace, campaign_id)["status"] == "finished"
        assert len(server.sink.received) == 4

    with_sending(workspace, max_lateness="1s")
    issue = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text().replace("Prochaines étapes", "Les prochaines étapes"))
    scheduled = run(
        "send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--new-campaign", "--at", soon(0.5), "--json"
    )
    later = json.loads(scheduled.stdout)["campaign"]
    wait_for(status_is(workspace, later, "expired"), "the campaign expired")
    with RunningSmtp(SmtpSink()) as server:
        result = run("worker", "--until-idle", "--json", "--transport", server.dsn())
        assert json.loads(result.stdout)["sent"] == 0 and not server.sink.received
    listed = run("campaigns", "--list", "alliances")
    assert f"{later}\t{EXAMPLE_SLUG} → alliances\texpired" in listed.stdout


def test_a_time_in_the_past_or_no_time_is_refused(workspace):  # noqa: F811
    past = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", "2020-01-01 09:00")
    assert past.exit_code == 1 and "--at 2020-01-01 09:00 is in the past" in past.stderr
    nonsense = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", "mardi prochain")
    assert nonsense.exit_code == 1 and "is not a time" in nonsense.stderr
    assert json.loads(run("campaigns", "--json").stdout) == {"campaigns": []}


def test_a_local_time_is_read_in_the_configured_time_zone(workspace):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text('timezone = "America/Toronto"\n' + config.read_text())
    year = dt.datetime.now().year + 1
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", f"{year}-02-10 09:00", "--json")
    assert json.loads(result.stdout)["scheduled_at"] == f"{year}-02-10T14:00:00+00:00"  # EST is UTC-5 in February
    shown = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", f"{year}-02-10 09:00")
    assert f"scheduled for {year}-02-10 09:00 EST" in shown.stdout


def test_the_campaign_rate_holds_for_two_workers_together(workspace):  # noqa: F811
    add_members(workspace, 36)
    with_sending(workspace, rate=10)
    arrivals = []

    class Clocked(SmtpSink):
        async def handle_DATA(self, server, session, envelope):
            arrivals.append(time.monotonic())
            return await super().handle_DATA(server, session, envelope)

    with RunningSmtp(Clocked()) as server:
        scheduled = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", soon(1), "--json")
        campaign_id = json.loads(scheduled.stdout)["campaign"]
        workers = [start("worker", "--json", workspace=workspace, transport=server.dsn()) for _ in range(2)]
        wait_for(status_is(workspace, campaign_id, "finished"), "the campaign finished")
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        summaries = [json.loads(worker.communicate()[0]) for worker in workers]
    assert sum(s["sent"] for s in summaries) == 40
    arrivals.sort()
    # 40 at 10 a second, whoever sent them: 3 s from the campaign's start, less the moment the first took to
    # arrive (unpaced they take well under a second)
    assert arrivals[-1] - arrivals[0] >= 2.0
    busiest = max(sum(1 for t in arrivals if first <= t < first + 2) for first in arrivals)
    assert busiest <= 2 * 10 + 10  # two seconds' worth, and one booking of 10 that straddles the window


def test_the_worker_never_sends_a_campaign_awaiting_approval(workspace):
    """The worker reads only statuses: one awaiting approval is neither started nor sent (issue 20)."""
    import asyncio

    from newsletter.sending.worker import work
    from newsletter.store import CampaignStatus

    add_members(workspace, 3)
    store = store_of(workspace)
    list_id = store.list_id("alliances")
    campaign_id = store.create_campaign(list_id, "issue", "hash", "Sujet", {}, awaiting_approval=True)
    with RunningSmtp(SmtpSink()) as server:
        report = asyncio.run(work(Workspace.discover(workspace), server.dsn(), until_idle=True))
        assert report.sent == 0 and report.campaigns == [] and server.sink.received == []
    assert store.campaign(campaign_id).status == CampaignStatus.AWAITING_APPROVAL
    store.close()
