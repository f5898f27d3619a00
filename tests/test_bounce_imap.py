"""`newsletter bounces scan` against a real IMAP server (Debian's Dovecot, tests/imap_server.py), on SQLite and
PostgreSQL: a campaign sent over SMTP with a return path, its bounces delivered into the server, scanned over IMAPS;
what was acted on is in Processed afterwards, the rest still in the folder; the worker scans too; a scan killed with
SIGKILL in the middle and run again acts on every message once."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from bounce_messages import dsn, vacation
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET, run, send_json
from test_send import workspace as workspace  # noqa: F401  (the fixture: four subscribed, one left, one bounced)

from newsletter.sending.wiring import open_store
from newsletter.store import bounce_messages, events
from newsletter.tokens import TokenSigner
from newsletter.workspace import Workspace

_folders = itertools.count(1)


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


@pytest.fixture
def over_imap(workspace, dovecot, monkeypatch):  # noqa: F811
    """The workspace reading a folder of its own on the Dovecot of the session over IMAPS; the folder's name."""
    folder = f"Scan{next(_folders)}"  # test_bounce_mailbox.py has the Bounces folders of the same server
    dovecot.make_folder(folder)
    for variable, value in dovecot.environ().items():
        monkeypatch.setenv(variable, value)
    config = workspace / "newsletter.toml"
    config.write_text(
        config.read_text()
        + f'\n[bounces]\nreturn_path = "bounces+{{token}}@organisme.ca"\nmailbox = "{dovecot.url(folder)}"\n'
        + f'processed = "{folder}/Processed"\n',
        encoding="utf-8",
    )
    return folder


def _sent_over_smtp() -> dict[str, str]:
    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0 and sent["sent"] == 4, result.stderr
        return {r.recipients[0]: r.sender for r in server.sink.received}


def _status(address: str) -> str:
    listed = json.loads(run("subscribers", "list", "--list", "alliances", "--json").stdout)
    return next(m["status"] for m in listed if m["email"] == address)


def test_a_scan_over_imaps_files_what_it_acted_on_and_leaves_the_rest_where_it_was(over_imap, dovecot):
    senders = _sent_over_smtp()
    letter = b"From: Marc <marc@example.org>\r\nSubject: Re: le bulletin\r\n\r\nMerci pour le bulletin !\r\n"
    dovecot.deliver(dsn(senders["marie@example.org"], "marie@example.org"), over_imap)
    dovecot.deliver(vacation("bulletin@organisme.ca"), over_imap)
    dovecot.deliver(letter, over_imap)

    result = run("bounces", "scan", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["read"] == 3 and report["decided"] == {"hard": 1, "auto-reply": 1} and report["moved"] == 2
    assert [m["subject"] for m in report["left"]] == ["Re: le bulletin"]
    assert _status("marie@example.org") == "bounced"
    left, processed = dovecot.folder(over_imap), dovecot.folder(f"{over_imap}/Processed")
    assert [m.raw for m in left] == [letter] and "S" not in left[0].flags  # left unread for a person
    assert len(processed) == 2

    review = run("bounces", "review")
    assert review.exit_code == 0 and "1 of 1 messages left" in review.stdout and "Re: le bulletin" in review.stdout
    again = json.loads(run("bounces", "scan", "--json").stdout)
    assert again["read"] == 1 and again["decided"] == {} and len(dovecot.folder(over_imap)) == 1


def test_the_worker_scans_the_mailbox_beside_its_sending(over_imap, dovecot):
    senders = _sent_over_smtp()
    dovecot.deliver(dsn(senders["zoe@example.org"], "zoe@example.org"), over_imap)
    result = run("worker", "--until-idle", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bounce_scans"] == 1 and report["bounces"] == {"hard": 1}
    assert _status("zoe@example.org") == "bounced" and dovecot.folder(over_imap) == []


def test_a_wrong_password_is_one_line_and_changes_nothing(over_imap, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_BOUNCES_PASSWORD", "not the password")
    result = run("bounces", "scan")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "NEWSLETTER_BOUNCES_PASSWORD" in result.stderr


MEMBERS = 240


def test_a_scan_killed_in_the_middle_and_run_again_acts_on_each_message_once(over_imap, dovecot, workspace):  # noqa: F811
    """SIGKILL while it works through the folder, then the same command: every member has exactly one soft
    bounce recorded, every message is in Processed, none twice and none left."""
    rows = "\n".join(["courriel,nom", *(f"membre{i}@example.org,Membre {i}" for i in range(MEMBERS))])
    (workspace / "subscribers" / "mil.csv").write_text(rows + "\n", encoding="utf-8")
    assert run("subscribers", "import", "subscribers/mil.csv", "--list", "mil").exit_code == 0
    result = run("send", "2024-11-forum-des-alliances", "--list", "mil", "--no-dry-run", "--transport", "null://")
    assert result.exit_code == 0, result.stderr
    store = open_store(Workspace.discover())
    signer = TokenSigner(SECRET)
    campaign = store.latest_campaign("2024-11-forum-des-alliances", store.list_id("mil")).id
    people = {f"membre{i}@example.org": store.find_subscriber(f"membre{i}@example.org") for i in range(MEMBERS)}
    for address, subscriber in people.items():
        to = f"bounces+{signer.sign_return_path(campaign, subscriber)}@organisme.ca"
        dovecot.deliver(dsn(to, address, "4.2.2", diagnostic="452 4.2.2 mailbox full"), over_imap)

    scanning = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "bounces", "scan"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    # Killed once some messages are acted on and before all are: the store's record is the event waited on.
    while (done := _acted_on(store)) < 20 and scanning.poll() is None:
        pass
    scanning.send_signal(signal.SIGKILL)
    scanning.wait()
    assert done < MEMBERS or scanning.returncode == 0, done

    result = run("bounces", "scan", "--json")
    assert result.exit_code == 0, result.stderr
    assert _acted_on(store) == MEMBERS
    assert dovecot.folder(over_imap) == [] and len(dovecot.folder(f"{over_imap}/Processed")) == MEMBERS
    with store.engine.connect() as connection:
        counted = connection.execute(
            sa.select(events.c.subscriber_id, sa.func.count())
            .where(events.c.kind == "soft-bounce")
            .group_by(events.c.subscriber_id)
        ).all()
    store.close()
    assert len(counted) == MEMBERS and {count for _, count in counted} == {1}


def _acted_on(store) -> int:
    time.sleep(0.01)  # between two looks at the store, not a wait for anything in particular
    with store.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(bounce_messages)).scalar()
