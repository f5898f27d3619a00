"""`newsletter send` and `status` end to end: refusals, dry run, test send, a real SMTP server, resuming."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import EXAMPLE_SLUG, ROOT
from smtp_server import RunningSmtp, SmtpSink
from typer.testing import CliRunner

from newsletter.cli import app

SECRET = "a-test-secret-key-of-sufficient-length"
MEMBERS = [
    ("marie@example.org", "Marie Côté"),
    ("francoise@example.org", "Françoise Légaré-Pelletier"),
    ("zoe@example.org", "Zoé Bœuf"),
    ("jean@example.org", ""),
]


def sending_from(folder, monkeypatch, database_setting) -> None:
    """Commands run in folder as for a send: images from the archive, the test key, this database (None: the
    workspace's SQLite file), and none of the machine's transport or base URL."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("NEWSLETTER_ASSET_BASE_URL", "https://bulletin.crdbsl.org/archive")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    for variable in ("NEWSLETTER_TRANSPORT", "NEWSLETTER_DATABASE_URL", "NEWSLETTER_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    if database_setting:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_setting)


@pytest.fixture
def workspace(example_workspace, monkeypatch, database_setting):
    """The example workspace with a list of four subscribed, one unsubscribed and one bounced address."""
    sending_from(example_workspace, monkeypatch, database_setting)
    rows = [("courriel", "nom")] + MEMBERS + [("parti@example.org", "Parti"), ("rebond@example.org", "Rebond")]
    (example_workspace / "subscribers").mkdir(exist_ok=True)
    (example_workspace / "subscribers" / "liste.csv").write_text("\n".join(f"{a},{b}" for a, b in rows) + "\n")
    assert run("subscribers", "import", "subscribers/liste.csv", "--list", "alliances").exit_code == 0
    assert run("subscribers", "remove", "parti@example.org", "--list", "alliances").exit_code == 0
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover(example_workspace))
    with store.transaction() as connection:
        subscriber = store.find_subscriber("rebond@example.org", connection=connection)
        store.set_status(subscriber, store.list_id("alliances"), "bounced", "webhook", connection=connection)
    store.close()
    return example_workspace


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def send_json(*args: str):
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--json", *args)
    return result, json.loads(result.stdout) if result.stdout.strip().startswith("{") else None


def test_dry_run_is_the_default_and_writes_nothing(workspace):
    result, document = send_json()
    assert result.exit_code == 0
    assert document["dry_run"] is True and document["campaign"] is None
    assert document["audience"] == 4 and document["recipients"][0] == "marie@example.org"
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in document["sample"]
    assert "To: =?utf-8?" in document["sample"]  # Marie Côté, encoded
    assert not (workspace / "build" / "outbox").exists()
    assert run("status", EXAMPLE_SLUG, "--list", "alliances").stdout.startswith(EXAMPLE_SLUG + " was never sent")


def test_send_to_the_outbox_then_again_sends_nothing_more(workspace):
    result, document = send_json("--no-dry-run")
    assert result.exit_code == 0, result.output
    assert document == {
        "campaign": 1,
        "status": "finished",
        "scheduled_at": None,
        "sent": 4,
        "failed": 0,
        "skipped": 0,
        "pending": 0,
        "transport": f"outbox://{workspace / 'build' / 'outbox'}",
        "dry_run": False,
    }
    files = sorted(p.name for p in (workspace / "build" / "outbox").glob("*.eml"))
    assert files == ["1-1.eml", "1-2.eml", "1-3.eml", "1-4.eml"]
    result, again = send_json("--no-dry-run")
    assert again["sent"] == 4 and again["campaign"] == 1
    assert len(list((workspace / "build" / "outbox").glob("*.eml"))) == 4
    status = json.loads(run("status", EXAMPLE_SLUG, "--list", "alliances", "--json").stdout)
    assert (status["sent"], status["pending"], status["campaign"]) == (4, 0, 1)


def test_test_send_goes_to_one_address_with_test_in_the_subject(workspace):
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--to", "moi@example.org", "--no-dry-run")
    assert result.exit_code == 0, result.output
    (message,) = (workspace / "build" / "outbox").glob("*.eml")
    text = message.read_text()
    assert "Subject: [TEST] Retour sur le 2e Forum des Alliances" in text and "To: moi@example.org" in text
    assert run("status", EXAMPLE_SLUG, "--list", "alliances").stdout.startswith(EXAMPLE_SLUG + " was never sent")


def test_campaign_through_a_real_smtp_server(workspace):
    with RunningSmtp(SmtpSink()) as server:
        result, document = send_json("--no-dry-run", "--transport", server.dsn())
    assert result.exit_code == 0, result.output
    assert document["sent"] == 4 and document["transport"].startswith("smtp://127.0.0.1:")
    received = {r.recipients[0]: r.message for r in server.sink.received}
    assert set(received) == {address for address, _ in MEMBERS}  # not the unsubscribed, not the bounced
    francoise = received["francoise@example.org"]
    assert francoise["To"] == "Françoise Légaré-Pelletier <francoise@example.org>"
    assert francoise["List-Unsubscribe"].startswith("<https://bulletin.crdbsl.org/u/")
    assert francoise["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = francoise.get_body(("html",)).get_content()
    assert francoise["List-Unsubscribe"][1:-1] in html and "https://bulletin.crdbsl.org/archive/" in html
    assert "Se désabonner" in francoise.get_body(("plain",)).get_content()


def test_a_server_failing_at_random_still_mails_everyone_exactly_once(workspace, monkeypatch):
    add_members(workspace, 60)
    with_sending(workspace, max_attempts=30)
    monkeypatch.setattr("newsletter.sending.runner.retry_delay", lambda attempts, retry_after, pacing: 0.01)
    with RunningSmtp(SmtpSink(flaky=0.3, seed=11)) as server:
        result, document = send_json("--no-dry-run", "--transport", server.dsn())
    assert result.exit_code == 0, result.output
    assert document["sent"] == 64 and document["failed"] == 0 and document["pending"] == 0
    assert set(server.sink.per_recipient().values()) == {1}
    assert len(server.sink.per_recipient()) == 64


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda ws, mp: mp.delenv("NEWSLETTER_SECRET_KEY"), "NEWSLETTER_SECRET_KEY is not set"),
        (lambda ws, mp: mp.delenv("NEWSLETTER_ASSET_BASE_URL"), "images would not load"),
        (
            lambda ws, mp: (ws / "newsletter.toml").write_text(
                (ws / "newsletter.toml").read_text().replace('base_url = "https://bulletin.crdbsl.org"', "")
            ),
            "base_url is not set",
        ),
    ],
)
def test_refuses_to_send_beyond_this_machine_without_what_links_need(workspace, monkeypatch, setup, message):
    setup(workspace, monkeypatch)
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", "smtp://127.0.0.1:1")
    assert result.exit_code == 1 and message in result.stderr


def test_refuses_an_issue_with_errors(workspace):
    (workspace / "issues" / EXAMPLE_SLUG / "images" / "logo-alliances.png").unlink()
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run")
    assert result.exit_code == 1 and "missing-image" in result.stderr


def test_refuses_an_empty_or_unknown_list(workspace):
    run("subscribers", "add", "x@example.org", "--list", "vide")
    run("subscribers", "remove", "x@example.org", "--list", "vide")
    result = run("send", EXAMPLE_SLUG, "--list", "vide", "--no-dry-run")
    assert result.exit_code == 1 and "nobody subscribed" in result.stderr
    result = run("send", EXAMPLE_SLUG, "--list", "inconnue", "--no-dry-run")
    assert result.exit_code == 1 and "no list 'inconnue'" in result.stderr


def test_a_changed_issue_needs_a_new_campaign(workspace):
    assert send_json("--no-dry-run")[0].exit_code == 0
    issue = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text().replace("Prochaines étapes", "Les prochaines étapes"))
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run")
    assert result.exit_code == 1
    assert "the issue changed since campaign 1" in result.stderr and "--new-campaign" in result.stderr
    result, document = send_json("--no-dry-run", "--new-campaign")
    assert result.exit_code == 0 and document["campaign"] == 2 and document["sent"] == 4
    result, document = send_json("--no-dry-run", "--new-campaign")  # the same command again: resumes, no third
    assert document["campaign"] == 2 and len(list((workspace / "build" / "outbox").glob("2-*.eml"))) == 4
    assert not list((workspace / "build" / "outbox").glob("3-*.eml"))


def test_a_permanent_failure_exits_non_zero_and_is_listed(workspace):
    refuse = {"zoe@example.org": "550 5.1.1 <zoe@example.org>: User unknown"}
    with RunningSmtp(SmtpSink(refuse=refuse)) as server:
        result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", server.dsn())
    assert result.exit_code == 1
    assert "failed: zoe@example.org: smtp 550" in result.stderr
    assert "3 sent, 1 failed, 0 skipped, 0 pending" in result.stdout
    listed = run("subscribers", "list", "--list", "alliances", "--status", "bounced", "--json")
    assert {m["email"] for m in json.loads(listed.stdout)} == {"zoe@example.org", "rebond@example.org"}


def add_members(workspace, count: int, prefix: str = "abonne") -> None:
    from newsletter.sending.wiring import open_store
    from newsletter.subscribers import add
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover(workspace))
    for number in range(count):
        add(store, "alliances", f"{prefix}{number:03d}@example.org", None)
    store.close()


def with_sending(workspace, **settings) -> None:
    """Append a [sending] table to the workspace's newsletter.toml."""
    lines = "".join(
        f"{key} = {value!r}\n" if isinstance(value, str) else f"{key} = {value}\n" for key, value in settings.items()
    )
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + "\n[sending]\n" + lines)


def newsletter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", *args]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def wait_for(condition, what: str, *, every: float = 0.01, within: float = 120) -> None:
    """Poll until condition() is true (a bounded wait for a state, not a timing assertion)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(every)


def kill_mid_send_and_run_again(workspace, server, kill_after: int) -> tuple[int, int]:
    """SIGKILL `send` once kill_after messages are in; run the same command again; return (before, duplicates)."""
    command = newsletter_command(
        "send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", server.dsn(), "--json"
    )
    already = sum(server.sink.per_recipient().values())
    process = subprocess.Popen(
        command, cwd=workspace, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(
        lambda: sum(server.sink.per_recipient().values()) - already >= kill_after or process.poll() is not None,
        f"{kill_after} messages in",
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = sum(server.sink.per_recipient().values()) - already
    done = subprocess.run(command, cwd=workspace, env=environment(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pending"] == 0
    return before, sum(n - 1 for n in server.sink.per_recipient().values())


@pytest.mark.parametrize("kill_after", [37, 102, 251])
def test_killed_mid_send_then_run_again_skips_nobody(workspace, kill_after):
    """SIGKILL the sending process mid-campaign; the same command finishes it (once the dead one's leases run
    out); at most two messages per SMTP connection go twice."""
    add_members(workspace, 396)
    with_sending(workspace, lease=2)
    sink = SmtpSink(delay=0.005)  # slow enough to be killed in the middle
    with RunningSmtp(sink) as server:
        before, duplicates = kill_mid_send_and_run_again(workspace, server, kill_after)
    assert kill_after <= before < 400
    counts = sink.per_recipient()
    assert len(counts) == 400  # nobody skipped
    assert duplicates <= 2 * 4  # two per connection, four connections
    print(f"killed after {before} messages; {duplicates} sent twice (bound 8)")


def test_a_rerun_after_a_crash_says_whose_rows_it_waits_for(workspace):
    """The rerun waits out the dead sender's leases; its stderr says so (a wait is not a hang), then it finishes."""
    add_members(workspace, 196)
    with_sending(workspace, lease=5)
    with RunningSmtp(SmtpSink(delay=0.01)) as server:
        command = newsletter_command(
            "send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", server.dsn()
        )
        process = subprocess.Popen(
            command, cwd=workspace, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        wait_for(lambda: len(server.sink.received) >= 20 or process.poll() is not None, "20 messages in")
        process.send_signal(signal.SIGKILL)
        process.wait()
        done = subprocess.run(command, cwd=workspace, env=environment(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("waiting for")]
    assert re.fullmatch(
        r"waiting for \d+ messages another sender holds; should it have stopped \(a crash\), they "
        r"are sent once its lease ends at \d\d:\d\d:\d\d UTC",
        line,
    ), line
    assert "\r" not in done.stderr  # not a terminal: no counts line drawn over itself
    assert len(server.sink.per_recipient()) == 200  # nobody skipped


def test_smtp_messages_are_dkim_signed_when_configured(workspace, monkeypatch):
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    (workspace / "key.pem").write_bytes(pem)
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", str(workspace / "key.pem"))
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + '\n[dkim]\ndomain = "crdbsl.org"\nselector = "bulletin"\n')
    with RunningSmtp(SmtpSink()) as server:
        result, document = send_json("--no-dry-run", "--transport", server.dsn())
    assert result.exit_code == 0 and document["sent"] == 4
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    for received in server.sink.received:
        assert received.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)
