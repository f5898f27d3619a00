"""Sending to part of a list, on SQLite and PostgreSQL, through a real SMTP server: a segment by name or
expression narrows the audience (never widens it past who is subscribed), is frozen with its campaign, shown by the
dry run, status and campaigns; a later campaign of the same issue never mails anyone twice; an agent's code is bound
to the segment."""

from __future__ import annotations

import asyncio
import json

import pytest
from smtp_server import RunningSmtp, SmtpSink
from test_send import EXAMPLE_SLUG, run, send_json
from test_send import workspace as workspace  # noqa: F401  (the fixture: four subscribed, one left, one bounced)

from newsletter import agent
from newsletter.errors import NewsletterError
from newsletter.sending.wiring import open_store
from newsletter.workspace import Workspace

EAST = 'tag:"MRC Rimouski-Neigette" or municipalité in ["Matane", "Amqui"]'


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


@pytest.fixture
def tagged(workspace):  # noqa: F811
    """Marie tagged, Jean in Matane, and the bounced member tagged too (a segment never reaches them)."""
    assert run("subscribers", "tag", "marie@example.org", "MRC Rimouski-Neigette").exit_code == 0
    assert run("subscribers", "add", "jean@example.org", "--list", "alliances", "--field", "Municipalité=Matane")
    assert run("subscribers", "tag", "rebond@example.org", "mrc rimouski-neigette").exit_code == 0
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + f"\n[lists.alliances.segments]\nest = '{EAST}'\n", encoding="utf-8")
    return workspace


def test_a_segment_then_the_whole_list_mails_each_member_once(tagged):
    result, dry = send_json("--segment", "est")
    assert result.exit_code == 0 and dry["audience"] == 2
    assert set(dry["recipients"]) == {"marie@example.org", "jean@example.org"}
    assert dry["segment"]["name"] == "est" and "mrc rimouski-neigette" in dry["segment"]["expression"]
    inline, same = send_json("--segment", EAST)
    assert inline.exit_code == 0 and same["segment"] == {"name": None, "expression": dry["segment"]["expression"]}

    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--segment", "est", "--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0 and sent["sent"] == 2
        assert set(server.sink.per_recipient()) == {"marie@example.org", "jean@example.org"}

        _, whole = send_json()
        assert whole["audience"] == 2 and "2 members left out" in whole["note"]
        result, rest = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0 and rest["sent"] == 2
        received = server.sink.per_recipient()
    assert dict(received) == {
        "marie@example.org": 1,
        "jean@example.org": 1,
        "zoe@example.org": 1,
        "francoise@example.org": 1,
    }

    status = run("status", EXAMPLE_SLUG, "--list", "alliances", "--segment", "est")
    assert "campaign 1: finished" in status.stdout and "segment: est (" in status.stdout
    listed = json.loads(run("campaigns", "--json").stdout)["campaigns"]
    assert [(c["id"], c.get("segment", {}).get("name")) for c in listed] == [(2, None), (1, "est")]
    # The same segment again resumes its campaign: nothing more goes.
    _, again = send_json("--segment", "est")
    assert again["campaign"] == 1 and again["audience"] == 0


def test_a_malformed_or_unknown_segment_is_one_line_pointing_at_the_column(tagged):
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--segment", 'tag:"MRC')
    assert result.exit_code == 1
    assert result.stderr == "error: segment 'tag:\"MRC': column 5: a quoted tag is not closed; end it with \"\n"
    unknown = run("send", EXAMPLE_SLUG, "--list", "alliances", "--segment", "ouest")
    assert unknown.exit_code == 1 and "no segment named 'ouest'" in unknown.stderr and "est" in unknown.stderr
    nobody = run("send", EXAMPLE_SLUG, "--list", "alliances", "--segment", "tag:personne", "--no-dry-run")
    assert nobody.exit_code == 1 and "nobody subscribed to 'alliances' is in the segment" in nobody.stderr


def test_an_agents_code_is_bound_to_the_segment_and_its_audience(tagged):
    current = Workspace.discover(tagged)
    folder = current.issues_dir / EXAMPLE_SLUG
    shown = asyncio.run(agent.confirmable_dry_run(current, folder, "alliances", "null://", "est"))
    assert shown["audience"] == 2 and shown["confirmation_for"]["segment"] == shown["segment"]["expression"]
    code = shown["confirmation"]
    with pytest.raises(NewsletterError, match="is for tag:"):
        asyncio.run(agent.confirmed_send(current, folder, "alliances", "null://", code))  # the whole list
    assert run("subscribers", "tag", "zoe@example.org", "MRC Rimouski-Neigette").exit_code == 0
    with pytest.raises(NewsletterError, match="the audience changed since the dry run"):
        asyncio.run(agent.confirmed_send(current, folder, "alliances", "null://", code, segment="est"))
    shown = asyncio.run(agent.confirmable_dry_run(current, folder, "alliances", "null://", "est"))
    summary = asyncio.run(
        agent.confirmed_send(current, folder, "alliances", "null://", shown["confirmation"], segment="est")
    )
    assert summary.counts["sent"] == 3
    store = open_store(current)
    try:
        assert store.campaign(summary.campaign).content["segment_name"] == "est"
    finally:
        store.close()
