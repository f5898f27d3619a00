"""`send` to a list with international addresses, through a real SMTP server (aiosmtpd): a domain in Unicode goes
in A-labels, in RCPT TO as in To:; a local part that is not ASCII goes with SMTPUTF8, or fails alone and says why;
everyone else gets one message and the campaign finishes. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLE_SLUG
from smtp_server import RunningSmtp, SmtpSink
from test_send import MEMBERS, run
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)

from newsletter.sending.wiring import open_store
from newsletter.workspace import Workspace

INTERNATIONAL = [("hana@münchen.example", "Hana Müller"), ("jo@straße.de", ""), ("zoé@exämple.org", "Zoé Bœuf")]


@pytest.fixture
def database_setting(database_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


def send(server) -> tuple[int, str, str]:
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", server.dsn())
    return result.exit_code, result.stdout, result.stderr


def campaign_status(workspace) -> dict:  # noqa: F811
    return json.loads(run("status", EXAMPLE_SLUG, "--list", "alliances", "--json").stdout)


@pytest.mark.parametrize("smtputf8", [False, True], ids=["no SMTPUTF8", "SMTPUTF8"])
def test_international_addresses_each_get_their_message_or_a_reason(workspace, smtputf8):  # noqa: F811
    for address, name in INTERNATIONAL:
        assert run("subscribers", "add", address, "--list", "alliances", "--name", name).exit_code == 0
    with RunningSmtp(SmtpSink(), smtputf8=smtputf8) as server:
        code, out, err = send(server)
        again = send(server)  # the campaign finished: a rerun sends nobody anything
    plain = {address for address, _ in MEMBERS}
    expected = plain | {"hana@xn--mnchen-3ya.example", "jo@xn--strae-oqa.de"}
    if smtputf8:
        expected.add("zoé@xn--exmple-cua.org")
    counts = server.sink.per_recipient()
    assert set(counts) == expected and set(counts.values()) == {1}, counts  # everyone once, in A-labels
    received = {r.recipients[0]: r for r in server.sink.received}
    assert str(received["hana@xn--mnchen-3ya.example"].message["To"]) == "Hana Müller <hana@xn--mnchen-3ya.example>"
    assert "Traceback" not in err and "Traceback" not in again[2]
    status = campaign_status(workspace)
    assert (status["status"], status["pending"]) == ("finished", 0)
    if smtputf8:
        assert code == 0 and "7 sent, 0 failed, 0 skipped, 0 pending" in out, err
        assert str(received["zoé@xn--exmple-cua.org"].message["To"]) == "Zoé Bœuf <zoé@xn--exmple-cua.org>"
    else:
        assert code == 1 and "6 sent, 1 failed, 0 skipped, 0 pending" in out, err
        (line,) = [line for line in err.splitlines() if line.startswith("failed:")]
        assert line == (
            "failed: zoé@exämple.org: smtp: the recipient's address has a local part that is not ASCII "
            "and the server does not offer SMTPUTF8 (RFC 6531), which it needs"
        )
        assert status["failed"] == 1 and status["sent"] == 6
    assert again[0] == code and len(server.sink.received) == len(expected)


def test_a_stored_address_that_cannot_be_written_fails_alone(workspace):  # noqa: F811
    """A row the tool would never write (imported by another tool, an older version): its message fails with the
    reason, the others go, the campaign finishes."""
    store = open_store(Workspace.discover(workspace))
    with store.transaction() as connection:
        store.subscribe(store.list_id("alliances"), "neige@☃.example", "Neige", {}, "sql", connection=connection)
    store.close()
    with RunningSmtp(SmtpSink()) as server:
        code, out, err = send(server)
    assert code == 1 and "4 sent, 1 failed, 0 skipped, 0 pending" in out, err
    assert "failed: neige@☃.example: smtp: the message cannot be written: the domain ☃.example has no ASCII form" in err
    assert sorted(server.sink.per_recipient()) == sorted(address for address, _ in MEMBERS)
    assert campaign_status(workspace)["status"] == "finished"
