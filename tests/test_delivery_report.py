"""`newsletter delivery ADDRESS` and the MCP tool delivery_report, on SQLite and PostgreSQL: three campaigns go
through a real SMTP server (the whole list, a segment through a worker while the server defers one address, the
same content to the whole list), with an unsubscribe by one-click, one by the page before its turn, a hard bounce
from a bounce message, a soft one, a complaint reported by a provider's webhook, someone who joined after, and an
erasure; the report says what became of each person's copy, in JSON and in text, and the MCP tool answers the same
JSON. One person's report is a handful of queries, none of which scans the ledger or the event log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa
from smtp_server import RunningSmtp, SmtpSink
from test_mcp import connected
from test_send import EXAMPLE_SLUG, run, send_json, with_sending
from test_send import workspace as workspace  # noqa: F401  (the fixture: four subscribed, one left, one bounced)

from newsletter.delivery import report_for
from newsletter.sending.send import send as send_issue
from newsletter.sending.wiring import open_store
from newsletter.workspace import Workspace

SEGMENT = "tag:rimouski"
DEFERRED = "451 4.2.2 Mailbox full, try again later"
GONE = "550 5.1.1 No such user here"
BOUNCE = {
    "status": "5.1.1",
    "diagnostic": "550 5.1.1 <jean@example.org>: Recipient address rejected: User unknown",
    "severity": "hard",
}
SOFT = {"status": "4.2.2", "diagnostic": "452 4.2.2 Quota exceeded", "severity": "soft", "sender_problem": False}


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


def report(address: str, *extra: str) -> dict:
    result = run("delivery", address, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def text(address: str) -> str:
    result = run("delivery", address)
    assert result.exit_code == 0, result.output
    return result.stdout


def by_campaign(document: dict) -> dict[int, dict]:
    return {line["campaign"]: line for line in document["campaigns"]}


@pytest.fixture
def history(workspace):  # noqa: F811
    """Three campaigns and what happened around them; returns the workspace and the campaigns' ids."""
    current = Workspace.discover(workspace)
    assert run("subscribers", "add", "luc@example.org", "--list", "alliances", "--name", "Luc").exit_code == 0
    for address in ("marie@example.org", "zoe@example.org", "luc@example.org"):
        assert run("subscribers", "tag", address, "Rimouski").exit_code == 0
    with_sending(workspace, max_attempts=50)  # the deferred address stays pending, however slow the machine
    store = open_store(current)
    alliances = store.list_id("alliances")
    ids = {name: store.find_subscriber(f"{name}@example.org") for name in ("marie", "francoise", "zoe", "jean", "luc")}
    try:
        with RunningSmtp(SmtpSink()) as server:  # campaign 1: the whole list, everyone takes it
            result, first = send_json("--no-dry-run", "--transport", server.dsn())
            assert result.exit_code == 0 and first["sent"] == 5, result.output
        # Then Françoise leaves by one-click, a bounce message says Jean's address is gone, another that Zoé's
        # mailbox is full (events as the bounce reader writes them).
        store.set_status(ids["francoise"], alliances, "unsubscribed", "one-click", {"user_agent": "Gmail"})
        store.set_status(ids["jean"], alliances, "bounced", "bounce-mail", {"campaign": 1, **BOUNCE})
        with store.transaction() as connection:
            store._event(connection, ids["zoe"], alliances, "soft-bounce", "bounce-mail", SOFT)
        assert run("subscribers", "add", "nouveau@example.org", "--list", "alliances").exit_code == 0

        # Campaign 2: changed content to the segment, made without sending (its sender stopped at once), then sent
        # by a worker after Luc left by the page; the server defers Zoé.
        issue = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
        issue.write_text(issue.read_text().replace("Retour sur le 2e Forum", "Suite du 2e Forum"))
        stopped = asyncio.Event()
        stopped.set()
        folder = current.issues_dir / EXAMPLE_SLUG
        making = send_issue(
            current, folder, "alliances", dsn_text="null://", dry_run=False, stop=stopped, segment=SEGMENT
        )
        made = asyncio.run(making)
        assert made.campaign == 2 and made.counts["pending"] == 3
        store.set_status(ids["luc"], alliances, "unsubscribed", "page", {"user_agent": "Firefox"})
        assert run("subscribers", "add", "absent@example.org", "--list", "alliances").exit_code == 0
        refuse = {"zoe@example.org": DEFERRED, "absent@example.org": GONE}
        with RunningSmtp(SmtpSink(refuse=refuse)) as server:
            worked = run("worker", "--until-idle", "--transport", server.dsn(), "--json")
            assert worked.exit_code == 0, worked.output
            assert set(server.sink.per_recipient()) == {"marie@example.org"}
            # Campaign 3: the same content to the whole list: only who had it from neither campaign 2 nor left;
            # the server refuses the address that joined last for good.
            result, third = send_json("--no-dry-run", "--new-campaign", "--transport", server.dsn())
            assert (third["campaign"], third["sent"], third["failed"]) == (3, 1, 1), result.output
            assert set(server.sink.per_recipient()) == {"marie@example.org", "nouveau@example.org"}
        provider_id = store.person("marie@example.org")["deliveries"][1]["provider_id"]
        # Last, Postmark reports Marie's complaint about campaign 2, with our ledger key.
        complaint = {"provider": "postmark", "detail": "spam complaint", "provider_id": provider_id}
        reports = [("complained", "marie@example.org", f"2-{ids['marie']}", complaint)]
        assert store.apply_webhook("postmark", None, reports, keep=dt.timedelta(days=1)) == 1
    finally:
        store.close()
    return workspace


def test_the_report_says_what_became_of_each_persons_copy(history):
    marie = report("marie@example.org")
    assert marie["email"] == "marie@example.org" and marie["name"] == "Marie Côté" and marie["erased_at"] is None
    assert [(m["list"], m["status"], m["source"]) for m in marie["memberships"]] == [
        ("alliances", "complained", "webhook")
    ]
    assert [line["campaign"] for line in marie["campaigns"]] == [3, 2, 1] and marie["more"] is False
    lines = by_campaign(marie)
    assert lines[3]["status"] == "not-in-audience" and lines[3]["reason"] == {"code": "had-it-already", "campaign": 2}
    assert lines[2]["status"] == "complained" and lines[2]["segment"]["expression"] == SEGMENT
    assert lines[2]["provider_id"].startswith("<2-") and lines[2]["at"]
    assert [(e["kind"], e["source"], e["probable"]) for e in lines[2]["events"]] == [("complained", "webhook", False)]
    assert lines[2]["subject"] == "Suite du 2e Forum des Alliances"
    assert lines[1]["status"] == "sent" and lines[1]["events"] == [] and lines[1]["provider_id"].startswith("<1-")
    # The webhook's ledger key named the campaign, and the store wrote it in the event.
    with_key = [e for e in history_events("marie@example.org") if e["kind"] == "complained"]
    assert with_key[0]["detail"]["campaign"] == 2

    francoise = by_campaign(report("francoise@example.org"))
    left = {"code": "not-subscribed", "status": "unsubscribed", "source": "one-click"}
    assert {k: v for k, v in francoise[3]["reason"].items() if k != "at"} == left
    assert francoise[2]["status"] == "not-in-audience" and francoise[2]["reason"]["source"] == "one-click"
    assert francoise[1]["status"] == "unsubscribed"
    assert [(e["kind"], e["source"], e["probable"]) for e in francoise[1]["events"]] == [
        ("unsubscribed", "one-click", True)
    ]

    zoe = by_campaign(report("zoe@example.org"))
    assert zoe[3]["reason"] == {"code": "had-it-already", "campaign": 2}  # pending in campaign 2: not sent twice
    assert zoe[2]["status"] == "deferred" and zoe[2]["attempts"] >= 1 and zoe[2]["next_attempt_at"]
    assert "451" in zoe[2]["error"] and "Mailbox full" in zoe[2]["error"] and zoe[2]["campaign_status"] == "running"
    assert zoe[1]["status"] == "soft-bounced"
    (soft,) = zoe[1]["events"]
    assert (soft["kind"], soft["probable"], soft["status"], soft["diagnostic"]) == (
        "soft-bounce",
        True,
        "4.2.2",
        "452 4.2.2 Quota exceeded",
    )

    jean = report("jean@example.org")
    assert [(m["status"], m["source"]) for m in jean["memberships"]] == [("bounced", "bounce-mail")]
    jean_lines = by_campaign(jean)
    for later in (3, 2):
        assert jean_lines[later]["reason"]["code"] == "not-subscribed"
        assert (jean_lines[later]["reason"]["status"], jean_lines[later]["reason"]["source"]) == (
            "bounced",
            "bounce-mail",
        )
    assert jean_lines[1]["status"] == "bounced"
    (bounce,) = jean_lines[1]["events"]
    assert (bounce["status"], bounce["diagnostic"], bounce["probable"]) == ("5.1.1", BOUNCE["diagnostic"], False)

    luc = by_campaign(report("luc@example.org"))
    assert luc[2]["status"] == "skipped" and "no longer subscribed" in luc[2]["error"]
    assert {k: v for k, v in luc[2]["reason"].items() if k != "at"} == {
        "code": "no-longer-subscribed",
        "status": "unsubscribed",
        "source": "page",
    }
    assert luc[1]["status"] == "unsubscribed" and luc[1]["events"][0]["source"] == "page"
    assert luc[3]["reason"]["code"] == "not-subscribed"

    nouveau = by_campaign(report("nouveau@example.org"))
    assert nouveau[3]["status"] == "sent"
    assert nouveau[2]["reason"] == {"code": "outside-segment"}
    assert nouveau[1]["reason"]["code"] == "joined-after" and nouveau[1]["reason"]["at"] > nouveau[1]["started_at"]

    absent = by_campaign(report("absent@example.org"))
    assert absent[3]["status"] == "bounced" and absent[3]["error"] == "smtp 550: 5.1.1 No such user here"
    assert [(e["kind"], e["source"], e["probable"], e["status"]) for e in absent[3]["events"]] == [
        ("bounced", "send", False, "5.1.1")
    ]
    assert absent[2]["reason"]["code"] == absent[1]["reason"]["code"] == "joined-after"

    parti = by_campaign(report("parti@example.org"))
    assert {line["reason"]["source"] for line in parti.values()} == {"cli"}
    assert [line["campaign"] for line in report("marie@example.org", "--limit", "2")["campaigns"]] == [3, 2]
    assert report("marie@example.org", "--limit", "2")["more"] is True


def history_events(address: str) -> list[dict]:
    store = open_store(Workspace.discover())
    try:
        return store.person(address)["events"]
    finally:
        store.close()


def test_the_text_is_one_short_block_per_campaign(history):
    shown = text("jean@example.org")
    blocks = shown.split("\n\n")
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d \S+"
    head = rf"jean@example.org\n  list alliances: bounced since {when} \(a bounce message\), joined \d{{4}}-\d\d-\d\d"
    assert re.fullmatch(head, blocks[0]), blocks[0]
    assert blocks[1].startswith(f"campaign 3 ({EXAMPLE_SLUG} → alliances, started ")
    assert blocks[1].splitlines()[0].endswith(": not in the audience")
    assert "not subscribed when it started: bounced since " in blocks[1] and "(a bounce message)" in blocks[1]
    first = blocks[3].splitlines()
    assert first[0].endswith(": bounced") and first[1].startswith("  sent ") and ", provider id <1-" in first[1]
    assert first[2].startswith("  bounced ") and first[2].endswith(
        f'(a bounce message): "{BOUNCE["diagnostic"]}"'  # its status once, in the server's words
    )

    zoe = text("zoe@example.org").split("\n\n")
    assert zoe[1].splitlines()[1] == "  had this issue already, from campaign 2"
    deferred = zoe[2].splitlines()
    assert f", segment {SEGMENT}, started " in deferred[0]
    assert deferred[0].endswith(": deferred") and deferred[1].startswith("  deferred: ")
    assert "Mailbox full" in deferred[1] and "; next try " in deferred[1]
    assert zoe[3].splitlines()[-1].endswith('452 4.2.2 Quota exceeded", probably from this campaign')

    luc = text("luc@example.org").split("\n\n")
    assert "skipped " in luc[2] and "no longer subscribed when its turn came: unsubscribed " in luc[2]
    assert "(the unsubscribe page)" in luc[2]
    francoise = text("francoise@example.org")
    assert (
        "unsubscribed " in francoise and "(one-click from the mail program), probably from this campaign" in francoise
    )
    refused = text("absent@example.org").split("\n\n")[1].splitlines()
    assert refused[0].endswith(": bounced") and refused[1].startswith("  refused for good ")
    assert refused[1].endswith(": smtp 550: 5.1.1 No such user here")
    assert refused[2].startswith("  bounced ") and refused[2].endswith("(refused while sending)")
    nouveau = text("nouveau@example.org")
    assert f"outside its segment ({SEGMENT})" in nouveau and ", after it started" in nouveau


def test_a_report_without_our_key_is_tied_once_to_the_latest_copy_sent(history):
    """A provider's bounce that carries no ledger key changes every list of the address (an event each): it is
    shown once, on the latest copy sent before it, as probable."""
    assert run("subscribers", "add", "zoe@example.org", "--list", "membres").exit_code == 0
    store = open_store(Workspace.discover(history))
    try:
        detail = {"provider": "postmark", "detail": "hard bounce: 550 5.1.1 mailbox unavailable", "provider_id": None}
        assert store.apply_event("bounced", "Zoe@Example.org", None, "webhook", detail) == 2
    finally:
        store.close()
    zoe = report("zoe@example.org")
    assert [(m["list"], m["status"]) for m in zoe["memberships"]] == [("alliances", "bounced"), ("membres", "bounced")]
    first = by_campaign(zoe)[1]  # campaign 2 is still pending for Zoé: campaign 1 was the latest sent
    assert first["status"] == "bounced"
    assert [(e["kind"], e["source"], e["probable"]) for e in first["events"]] == [
        ("soft-bounce", "bounce-mail", True),
        ("bounced", "webhook", True),
    ]
    assert first["events"][1]["status"] == "5.1.1" and "mailbox unavailable" in first["events"][1]["diagnostic"]
    assert by_campaign(zoe)[2]["events"] == []


def test_a_delay_reported_after_a_copy_left(history):
    """A bounce message saying the receiving server still tries (a delay, no status change): the copy sent is
    deferred, and the text says by whom and why."""
    store = open_store(Workspace.discover(history))
    try:
        nouveau = store.find_subscriber("nouveau@example.org")
        delay = {"status": "4.7.0", "diagnostic": "421 4.7.0 Try again later", "severity": "soft"}
        with store.transaction() as connection:
            store._event(connection, nouveau, None, "deferred", "bounce-mail", {**delay, "sender_problem": True})
    finally:
        store.close()
    third = by_campaign(report("nouveau@example.org"))[3]
    assert third["status"] == "deferred" and third["at"] and third["next_attempt_at"] is None
    assert [(e["kind"], e["status"], e["probable"], e.get("sender_problem")) for e in third["events"]] == [
        ("deferred", "4.7.0", True, True)
    ]
    block = text("nouveau@example.org").split("\n\n")[1].splitlines()
    assert block[0].endswith(": deferred") and block[1].startswith("  sent ")
    assert block[2].startswith("  delayed by the receiving server ") and '"421 4.7.0 Try again later"' in block[2]
    assert block[2].endswith(
        ", probably from this campaign; the receiving server objects to the sender, not to the address"
    )


def test_an_unknown_address_and_an_erased_person(history):
    unknown = run("delivery", "personne@example.org")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: no subscriber personne@example.org") and unknown.stderr.count("\n") == 1
    assert run("delivery", "personne@example.org", "--json").exit_code == 1
    assert run("subscribers", "forget", "parti@example.org").exit_code == 0
    erased = report("PARTI@example.org")
    assert erased["erased_at"] and erased["campaigns"] == [] and erased["memberships"] == []
    (line,) = text("parti@example.org").splitlines()
    assert line.startswith(f"parti@example.org was erased on {erased['erased_at'][:10]}")


def test_the_mcp_tool_answers_the_same_json(history, database_url, tmp_path):
    expected = {address: report(address) for address in ("marie@example.org", "zoe@example.org")}

    async def scenario():
        async with connected(history, tmp_path / "stderr.log", NEWSLETTER_DATABASE_URL=database_url) as agent:
            for address, document in expected.items():
                assert await agent.json("delivery_report", address=address) == document
            assert (await agent.json("delivery_report", address="zoe@example.org", limit=1))["more"] is True
            line = await agent.error("delivery_report", address="personne@example.org")
            assert line.startswith("error: no subscriber personne@example.org")

    asyncio.run(scenario())


def test_one_persons_report_is_a_handful_of_indexed_queries(history):
    """At most seven statements, each read by its plan: subscribers, memberships, events, the ledger and
    suppressions are searched by an index, never read whole (on PostgreSQL with sequential scans made the last
    resort, since it plans tables this small by scanning them whatever the indexes, and an index scan must
    constrain the index's first column). Campaigns, one row per send, may be scanned."""
    store = open_store(Workspace.discover(history))
    statements: list[tuple[str, object]] = []

    def seen(connection, cursor, statement, parameters, context, executemany):
        if statement != "BEGIN":  # SQLite's transaction, not a query
            statements.append((statement, parameters))

    try:
        sa.event.listen(store.engine, "before_cursor_execute", seen)
        made = report_for(store, "nouveau@example.org")
        sa.event.remove(store.engine, "before_cursor_execute", seen)
        assert [line.reason.code if line.reason else line.status for line in made.campaigns] == [
            "sent",
            "outside-segment",
            "joined-after",
        ]
        assert len(statements) <= 7, [statement for statement, _ in statements]
        with store.engine.connect() as connection:
            if store.engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SET enable_seqscan = off")
            for statement, parameters in statements:
                assert not full_scans(connection, statement, parameters), statement
    finally:
        store.close()


GUARDED = ("subscribers", "memberships", "events", "deliveries", "suppressions")


def full_scans(connection, statement: str, parameters) -> list[str]:
    """The tables of GUARDED that a statement's plan reads whole: a scan of the table, or of an index whose
    first column the plan puts no condition on."""
    if connection.dialect.name == "sqlite":
        plan = [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        return [line for line in plan if line.split(" ")[:2] in (["SCAN", table] for table in GUARDED)]
    first_column = dict(
        connection.exec_driver_sql(
            "SELECT i.indexrelid::regclass::text, a.attname FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        ).all()
    )
    (document,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar()
    found, nodes = [], [document["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        kind, index = node["Node Type"], node.get("Index Name", "")
        table = node.get("Relation Name") or next((t for t in GUARDED if index.startswith(t)), "")
        if table not in GUARDED:
            continue
        leading = re.search(rf"\b{first_column.get(index, '-')}\b[^\s=<>]*\s*(=|<|>|IS\b)", node.get("Index Cond", ""))
        if kind == "Seq Scan" or (kind.endswith("Index Scan") and not leading):
            found.append(f"{kind} on {table} {index}".strip())
    return found
