"""A person's approval of a send, on the command line and in the email: `send --no-dry-run` with [approval]
approvers makes the campaign wait, each approver gets the issue with a banner, `approve`/`decline` decide, an
edit voids the request, `campaign show` lists every event. On SQLite and on PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest
from conftest import EXAMPLE_SLUG
from smtp_server import RunningSmtp, SmtpSink
from test_send import MEMBERS, run, send_json
from test_send import workspace as workspace  # noqa: F401  (the fixture)

from newsletter.config import load_config
from newsletter.errors import ConfigError

APPROVERS = ("direction@crdbsl.org", "com@crdbsl.org")
BASE_URL = "https://bulletin.crdbsl.org"


@pytest.fixture
def database_setting(database_url) -> str:
    """These tests run on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def approving(workspace, monkeypatch):  # noqa: F811
    """The example workspace whose sends two people must approve (one of them is enough)."""
    monkeypatch.setenv("NEWSLETTER_BASE_URL", BASE_URL)
    config = workspace / "newsletter.toml"
    listed = ", ".join(f'"{a}"' for a in APPROVERS)
    config.write_text(config.read_text() + f"\n[approval]\napprovers = [{listed}]\n")
    return workspace


def outbox(workspace) -> dict[str, email.message.EmailMessage]:
    """The outbox's messages, by file name."""
    return {
        path.name: email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for path in sorted((workspace / "build" / "outbox").glob("*.eml"))
    }


def approval_emails(workspace) -> dict[str, email.message.EmailMessage]:
    return {str(m["To"]): m for name, m in outbox(workspace).items() if "-approval-" in name}


def member_emails(workspace) -> dict[str, email.message.EmailMessage]:
    return {str(m["To"]): m for name, m in outbox(workspace).items() if "-approval-" not in name}


def parts(message) -> tuple[str, str]:
    html = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content()
    return html, text


def campaign_json(campaign_id: int) -> dict:
    result = run("campaign", "show", str(campaign_id), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_send_waits_and_each_approver_gets_the_issue_with_a_banner_members_never_see(approving):
    result, document = send_json("--no-dry-run")
    assert result.exit_code == 0, result.output
    assert document["status"] == "awaiting-approval" and document["sent"] == 0
    assert document["approval"]["state"] == "awaiting-approval"
    assert document["approval"]["approvers"] == sorted(APPROVERS) and document["approval"]["required"] == 1
    assert not member_emails(approving)  # nobody on the list got anything
    requests = approval_emails(approving)
    assert set(requests) == set(APPROVERS)
    links = set()
    for message in requests.values():
        assert str(message["Subject"]) == "[À approuver] Retour sur le 2e Forum des Alliances"
        html, text = parts(message)
        assert "Approuver et envoyer" in html and "Refuser" in html
        assert f"{len(MEMBERS)}\u00a0personnes" in text.replace(" personnes", "\u00a0personnes")
        assert "Le bulletin des Alliances" in text and "dès qu'il sera approuvé" in text
        assert "newsletter approve 1" in text  # the terminal's way, for whoever has no server
        approve = re.search(rf'href="({re.escape(BASE_URL)}/approve/[^"?]+)"', html)
        assert approve and f'href="{approve.group(1)}?decision=decline"' in html
        links.add(approve.group(1))
        # The issue follows the banner whole: the member's own text, footer and all.
        assert "Retour sur le 2e Forum des Alliances" in text.split("=" * 72, 1)[1]
    assert len(links) == 2  # one request, and one token, per approver

    result = run("approve", "1")
    assert result.exit_code == 0, result.output
    result = run("worker", "--until-idle")
    assert result.exit_code == 0, result.output
    members = member_emails(approving)
    assert {m["To"].addresses[0].addr_spec for m in members.values()} == {address for address, _ in MEMBERS}
    for message in members.values():
        html, text = parts(message)
        assert "Approuver" not in html and "/approve/" not in html and "/approve/" not in text
        assert not str(message["Subject"]).startswith("[")
    status = json.loads(run("status", EXAMPLE_SLUG, "--list", "alliances", "--json").stdout)
    assert status["status"] == "finished" and status["sent"] == len(MEMBERS)
    assert status["approval"]["state"] == "approved" and status["approval"]["by"]


def test_the_same_send_again_joins_the_waiting_campaign_and_asks_nobody_twice(approving):
    send_json("--no-dry-run")
    before = set(outbox(approving))
    result, document = send_json("--no-dry-run")
    assert result.exit_code == 0, result.output
    assert document["campaign"] == 1 and document["status"] == "awaiting-approval"
    assert set(outbox(approving)) == before


def test_an_approver_whose_email_did_not_go_is_asked_again_and_only_they(approving):
    refusing = SmtpSink(refuse={"com@crdbsl.org": "450 4.2.0 mailbox busy, try later"})
    with RunningSmtp(refusing) as server:
        result, document = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        assert document["status"] == "awaiting-approval"
        assert [f["email"] for f in document["failures"]] == ["com@crdbsl.org"]
        assert [r.recipients for r in refusing.received] == [["direction@crdbsl.org"]]
        refusing.refuse.clear()
        result, document = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        assert document["campaign"] == 1 and "a request went to com@crdbsl.org" in document["note"]
        assert [r.recipients for r in refusing.received] == [["direction@crdbsl.org"], ["com@crdbsl.org"]]
        result, document = send_json("--no-dry-run", "--transport", server.dsn())
        assert "every approver was asked already" in document["note"] and len(refusing.received) == 2
    kinds = [event["kind"] for event in campaign_json(1)["events"]]
    assert kinds.count("approval-not-sent") == 1 and kinds.count("approval-sent") == 2


def test_when_no_request_reaches_anyone_the_send_fails_and_the_campaign_waits(approving):
    refused = "550 5.7.1 relaying denied"
    with RunningSmtp(SmtpSink(refuse=dict.fromkeys(APPROVERS, refused))) as server:
        result, _ = send_json("--no-dry-run", "--transport", server.dsn())
    assert result.exit_code == 1
    assert "campaign 1 awaits approval, but no request reached an approver" in result.stderr
    assert "run the same command again to ask again" in result.stderr
    assert campaign_json(1)["status"] == "awaiting-approval"


def test_no_approval_is_a_persons_own_send(approving):
    result, document = send_json("--no-dry-run", "--no-approval")
    assert result.exit_code == 0, result.output
    assert document["status"] == "finished" and document["sent"] == len(MEMBERS)
    assert not approval_emails(approving) and "approval" not in document


def test_a_decline_comes_back_with_its_reason_and_a_second_decision_changes_nothing(approving):
    send_json("--no-dry-run")
    result = run("decline", "1", "--reason", "Le titre a une coquille")
    assert result.exit_code == 0, result.output
    status = json.loads(run("status", EXAMPLE_SLUG, "--list", "alliances", "--json").stdout)
    assert status["status"] == "declined"
    assert status["approval"]["state"] == "declined" and status["approval"]["comment"] == "Le titre a une coquille"
    for again in (("approve", "1"), ("decline", "1")):
        result = run(*again)
        assert result.exit_code == 1 and "no longer awaiting approval; nothing changed" in result.stderr
    assert run("worker", "--until-idle").exit_code == 0
    assert not member_emails(approving)
    shown = campaign_json(1)
    kinds = [event["kind"] for event in shown["events"]]
    assert kinds.count("approval-requested") == 2 and kinds.count("approval-sent") == 2
    assert "declined" in kinds and kinds.count("decision-refused") == 2
    assert {r["approver"] for r in shown["requests"]} == set(APPROVERS)
    # Fixed and sent again: a new campaign, a new request, without --new-campaign (nobody got the first).
    result, document = send_json("--no-dry-run")
    assert result.exit_code == 0, result.output
    assert document["campaign"] == 2 and document["status"] == "awaiting-approval"


def test_an_edit_after_the_request_voids_it(approving):
    send_json("--no-dry-run")
    issue = approving / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text().replace("Retour sur le 2e Forum", "Retour sur le deuxième Forum", 1))
    result = run("approve", "1")
    assert result.exit_code == 1 and "the issue changed after the approval request" in result.stderr
    shown = campaign_json(1)
    assert shown["status"] == "declined" and shown["approval"]["state"] == "voided"
    assert run("worker", "--until-idle").exit_code == 0
    assert not member_emails(approving)
    # The changed issue asks again, as a new campaign.
    result, document = send_json("--no-dry-run")
    assert result.exit_code == 0, result.output
    assert document["campaign"] == 2 and document["status"] == "awaiting-approval"


def test_a_changed_issue_sent_while_awaiting_replaces_the_request(approving):
    send_json("--no-dry-run")
    issue = approving / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text().replace("Retour sur le 2e Forum", "Retour sur le deuxième Forum", 1))
    result, document = send_json("--no-dry-run")
    assert result.exit_code == 0, result.output
    assert document["campaign"] == 2 and document["status"] == "awaiting-approval"
    first = campaign_json(1)
    assert first["status"] == "declined" and first["approval"] == {
        "state": "voided",
        "at": first["approval"]["at"],
        "reason": "replaced by a newer request",
    }
    assert run("approve", "1").exit_code == 1  # the old request died with its campaign
    assert run("approve", "2").exit_code == 0


def test_two_approvals_required_of_distinct_approvers(approving):
    config = approving / "newsletter.toml"
    config.write_text(config.read_text() + "required = 2\n")
    send_json("--no-dry-run")
    result = run("approve", "1", "--as", APPROVERS[0], "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["outcome"] == "counted"
    assert run("approve", "1", "--as", APPROVERS[0]).exit_code == 1  # that approver's request is used
    result = run("approve", "1", "--as", APPROVERS[1], "--json")
    document = json.loads(result.stdout)
    assert document["outcome"] == "approved" and document["status"] == "running"


def test_a_schedule_waits_for_approval_then_keeps_its_time(approving):
    result, document = send_json("--no-dry-run", "--at", "2099-02-10T14:00Z")
    assert result.exit_code == 0, result.output
    assert document["status"] == "awaiting-approval"
    (message, *_) = approval_emails(approving).values()
    assert "le 10\u00a0février 2099" in parts(message)[1]
    result = run("approve", "1", "--json")
    assert json.loads(result.stdout)["status"] == "scheduled"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('approvers = ["pas une adresse"]', "approval.approvers: Value error, 'pas une adresse' is not an email"),
        ('approvers = ["a@example.org"]\nrequired = 2', "required = 2 but only 1 approvers are listed"),
        ('approvers = ["a@example.org"]\nexpires = "demain"', "'demain' is not a duration"),
    ],
)
def test_a_bad_approval_table_is_one_line_naming_the_file(tmp_path, table, message):
    (tmp_path / "newsletter.toml").write_text(f'name = "x"\n\n[approval]\n{table}\n')
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path)
    assert message in str(raised.value) and str(tmp_path / "newsletter.toml") in str(raised.value)
