"""Bounces of an SMTP sender, end to end on SQLite and PostgreSQL: a send through a real SMTP server with
`[bounces] return_path` gives each message an envelope sender naming its recipient; the bounces that come back to
it (a Maildir here, Dovecot in test_bounce_imap.py) are matched by that token, else by the Message-ID they quote,
else by the address; a forged token matches nobody; hard bounces and complaints act at once, soft ones after the
limit, a delivery resets the count; nothing is deleted, nothing is counted twice, whatever stops a scan."""

from __future__ import annotations

import json

import pytest
from bounce_messages import complaint, dsn, headers_of, into_maildir, maildir_count, vacation
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET, run, send_json
from test_send import workspace as workspace  # noqa: F401  (the fixture: four subscribed, one left, one bounced)

from newsletter.bounces.mailbox import open_mailbox
from newsletter.bounces.scan import scan
from newsletter.config import load_config
from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.workspace import Workspace

BOUNCES = "bounces@organisme.ca"


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


@pytest.fixture
def bouncing(workspace, tmp_path):  # noqa: F811
    """The workspace with a return path and a Maildir for its bounces, and one campaign sent over SMTP: the
    messages as the server received them, by recipient."""
    maildir = tmp_path / "bounces"
    into_maildir(maildir)
    config = workspace / "newsletter.toml"
    config.write_text(
        config.read_text()
        + f'\n[bounces]\nreturn_path = "bounces+{{token}}@organisme.ca"\nmailbox = "maildir://{maildir}"\n',
        encoding="utf-8",
    )
    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0 and sent["sent"] == 4, result.stderr
        received = {r.recipients[0]: r for r in server.sink.received}
    return workspace, maildir, received


def _statuses(list_slug: str = "alliances") -> dict[str, str]:
    listed = json.loads(run("subscribers", "list", "--list", list_slug, "--json").stdout)
    return {m["email"]: m["status"] for m in listed}


def _scan_json(*options: str) -> dict:
    result = run("bounces", "scan", "--json", *options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_each_message_goes_from_a_return_path_that_names_its_recipient(bouncing):
    _, _, received = bouncing
    signer = TokenSigner(SECRET)
    store = open_store(Workspace.discover())
    for address, message in received.items():
        local, _, domain = message.sender.partition("@")
        assert domain == "organisme.ca" and local.startswith("bounces+")
        campaign, subscriber = signer.verify_return_path(local.removeprefix("bounces+"))
        assert campaign == 1 and subscriber == store.find_subscriber(address)
        # The From header is the sender's: only the envelope carries the token (DKIM and DMARC see the same From).
        assert (
            "bounces+" not in message.message["From"]
            and "bounces+" not in message.data.decode("utf-8", "replace").split("\r\n\r\n")[0]
        )
    store.close()
    assert len({m.sender for m in received.values()}) == 4


def test_a_hard_bounce_to_the_return_path_marks_that_member_at_once_and_a_forged_token_nobody(bouncing):
    _, maildir, received = bouncing
    marie = received["marie@example.org"].sender
    forged = marie[: marie.index("@") - 1] + ("a" if marie[marie.index("@") - 1] != "a" else "b") + "@organisme.ca"
    # The real server's words about another address: VERP names Marie whatever the report says of the recipient.
    into_maildir(maildir, dsn(marie, "marie.cote@ancien.example"), dsn(forged, "zoe@example.org"))
    report = _scan_json()
    assert report["decided"] == {"hard": 1} and report["memberships_changed"] == 1 and report["moved"] == 1
    assert [m["why"] for m in report["left"]] == [
        f"its return path {forged} carries a token that does not verify (forged or altered)"
    ]
    statuses = _statuses()
    assert statuses["marie@example.org"] == "bounced" and statuses["zoe@example.org"] == "subscribed"
    assert maildir_count(maildir) == 1 and maildir_count(maildir / ".Processed") == 1
    show = run("subscribers", "show", "marie@example.org").stdout
    assert "bounced" in show and "5.1.1" in show and "User unknown" in show
    # Why Marie gets nothing any more: the campaign, the code and the server's words.
    report = json.loads(run("delivery", "marie@example.org", "--json").stdout)
    (copy,) = report["campaigns"]
    assert copy["campaign"] == 1 and copy["status"] == "bounced"
    assert [(e["kind"], e["status"], e["source"]) for e in copy["events"]] == [("bounced", "5.1.1", "bounce-mail")]


def test_without_the_token_a_bounce_is_matched_by_the_message_id_it_quotes_then_by_its_address(bouncing):
    _, maildir, received = bouncing
    zoe = received["zoe@example.org"].data
    into_maildir(
        maildir,
        dsn(BOUNCES, "zoe@example.org", original_headers=headers_of(zoe)),
        dsn(BOUNCES, "jean@example.org"),
        dsn(BOUNCES, "inconnu@example.org"),
        # Our Message-ID quoted, but a report about someone else: matched by neither.
        dsn(BOUNCES, "francoise@autre.example", original_headers=headers_of(received["jean@example.org"].data)),
    )
    report = _scan_json()
    assert report["decided"] == {"hard": 2}
    whys = sorted(m["why"] for m in report["left"])
    assert whys[0].startswith("it quotes our message to jean@example.org but names francoise@autre.example")
    assert whys[1] == "no subscriber has the address inconnu@example.org"
    statuses = _statuses()
    assert statuses["zoe@example.org"] == statuses["jean@example.org"] == "bounced"
    assert statuses["francoise@example.org"] == "subscribed"


def test_soft_bounces_mark_a_member_only_after_the_limit_of_distinct_campaigns_and_a_delivery_resets(bouncing):
    workspace, maildir, received = bouncing
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text().replace("[bounces]\n", "[bounces]\nsoft_limit = 2\n"), encoding="utf-8")
    full = "452 4.2.2 <{recipient}>: mailbox full"
    francoise = received["francoise@example.org"].sender
    # The same campaign soft-bouncing twice is one campaign; a policy refusal is the sender's problem.
    into_maildir(
        maildir,
        dsn(francoise, "francoise@example.org", "4.2.2", diagnostic=full),
        dsn(francoise, "francoise@example.org", "5.2.2", diagnostic="552 5.2.2 mailbox full, again"),
        dsn(francoise, "francoise@example.org", "5.7.1", diagnostic="550 5.7.1 rejected by policy: SPF fail"),
        dsn(francoise, "francoise@example.org", "4.4.7", action="delayed", diagnostic="still trying"),
    )
    report = _scan_json()
    assert report["decided"] == {"soft": 2, "soft (sender's problem)": 1, "deferred": 1}
    assert _statuses()["francoise@example.org"] == "subscribed"
    # A second campaign: its soft bounce is the second of the run.
    second = _send_another(workspace)
    into_maildir(maildir, dsn(second["francoise@example.org"], "francoise@example.org", "4.2.2", diagnostic=full))
    assert _scan_json()["memberships_changed"] == 1
    assert _statuses()["francoise@example.org"] == "bounced"


def test_a_delivered_campaign_between_two_soft_bounces_resets_the_count(bouncing):
    workspace, maildir, received = bouncing
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text().replace("[bounces]\n", "[bounces]\nsoft_limit = 2\n"), encoding="utf-8")
    full = "452 4.2.2 <{recipient}>: mailbox full"
    into_maildir(maildir, dsn(received["zoe@example.org"].sender, "zoe@example.org", "4.2.2", diagnostic=full))
    _scan_json()
    _send_another(workspace)  # campaign 2 reaches Zoé: no bounce comes back
    third = _send_another(workspace)
    into_maildir(maildir, dsn(third["zoe@example.org"], "zoe@example.org", "4.2.2", diagnostic=full))
    assert _scan_json()["decided"] == {"soft": 1}
    assert _statuses()["zoe@example.org"] == "subscribed"


def test_a_complaint_leaves_every_list_and_auto_replies_are_filed_not_counted(bouncing):
    _, maildir, received = bouncing
    assert run("subscribers", "add", "zoe@example.org", "--list", "autre").exit_code == 0
    zoe = received["zoe@example.org"]
    into_maildir(maildir, complaint(BOUNCES, headers_of(zoe.data)), vacation(BOUNCES))
    report = _scan_json()
    assert report["decided"] == {"complaint": 1, "auto-reply": 1} and report["memberships_changed"] == 2
    assert maildir_count(maildir / ".Processed") == 2
    assert _statuses()["zoe@example.org"] == "complained"
    assert _statuses("autre") == {"zoe@example.org": "complained"}


def test_a_scan_run_again_or_stopped_before_it_moved_counts_nothing_twice_and_a_dry_run_changes_nothing(bouncing):
    workspace, maildir, received = bouncing
    into_maildir(
        maildir,
        dsn(received["marie@example.org"].sender, "marie@example.org"),
        b"\x00\xff not a message at all \r\n",
        b"From: someone@example.net\r\nSubject: hello\r\n\r\nJust a letter.\r\n",
    )
    dry = _scan_json("--dry-run")
    assert dry["dry_run"] is True and dry["decided"] == {"hard": 1} and dry["memberships_changed"] == 0
    assert _statuses()["marie@example.org"] == "subscribed" and maildir_count(maildir) == 3

    # A scan stopped after its decisions, before its moves: the decisions are in the store, the messages still here.
    config = load_config(workspace)
    store = open_store(Workspace.discover())

    class Crashing:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def messages(self):
            return self.inner.messages()

        def move(self, refs, folder):
            raise KeyboardInterrupt

    with open_mailbox(config.bounces.mailbox) as box, pytest.raises(KeyboardInterrupt):
        scan(Crashing(box), config, store, TokenSigner(SECRET))
    store.close()
    assert _statuses()["marie@example.org"] == "bounced" and maildir_count(maildir) == 3

    again = _scan_json()
    assert again["seen_before"] == 1 and again["decided"] == {} and again["memberships_changed"] == 0
    assert again["moved"] == 1 and maildir_count(maildir) == 2
    show = run("subscribers", "show", "marie@example.org").stdout
    assert show.count("bounced (bounce-mail)") == 1
    review = json.loads(run("bounces", "review", "--json").stdout)
    assert len(review["left"]) == 2 and any("cannot be read" in m["why"] or "not" in m["why"] for m in review["left"])
    assert _scan_json()["read"] == 2  # what is left stays, and is read again


def _send_another(workspace) -> dict[str, str]:
    """A new campaign of the example issue over SMTP; each recipient's envelope sender."""
    issue = workspace / "issues" / "2024-11-forum-des-alliances" / "issue.yaml"
    issue.write_text(
        issue.read_text(encoding="utf-8").replace('subject: "', 'subject: "Encore : ', 1), encoding="utf-8"
    )
    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--no-dry-run", "--transport", server.dsn(), "--new-campaign")
        assert result.exit_code == 0, result.stderr
        return {r.recipients[0]: r.sender for r in server.sink.received}
