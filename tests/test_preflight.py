"""What a real send refuses in the settings its messages carry (a reserved name, a placeholder postal address), and
how check and every dry run (CLI and MCP) say so in advance, whatever the transport."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from conftest import CONFIG, EXAMPLE_SLUG, ROOT
from smtp_server import RunningSmtp, SmtpSink
from typer.testing import CliRunner

from newsletter import agent
from newsletter.checks import check_issue, placeholder_address, real_send_refusals, reserved_name
from newsletter.cli import app
from newsletter.config import load_config
from newsletter.issue import load_issue
from newsletter.workspace import Workspace

SECRET = "a-test-secret-key-of-sufficient-length"


@pytest.mark.parametrize(
    "host",
    (
        "bulletin.crdbsl.example example a.b.test test nowhere.invalid localhost app.localhost example.com "
        "www.example.com example.net lists.example.net example.org EXAMPLE.ORG."
    ).split(),
)
def test_every_reserved_name_is_refused(host):
    assert reserved_name(host)


@pytest.mark.parametrize(
    "host", ["crdbsl.org", "example.ca", "myexample.org", "example.org.ca", "testing.com", "localhost.ca", "test.org"]
)
def test_real_names_pass(host):
    assert not reserved_name(host)


@pytest.mark.parametrize(
    "address",
    [
        "123, rue de l'Exemple, bureau 000, Rimouski (Québec)  X0X 0X0",
        "1 Example Street, Toronto ON  M5V 2T6",
        "10, chemin Fictif, Rimouski G5L 0A0",  # its postal code is real-looking, its street is not
        "742 Anytown Road, Springfield 00000",
        "TODO",
    ],
)
def test_placeholder_postal_addresses(address):
    assert placeholder_address(address)


def test_a_real_postal_address_passes():
    assert placeholder_address("320, rue Saint-Germain Est, Rimouski (Québec)  G5L 1C2") is None


EVERY_SETTING = """\
name = "Test letter"
lang = "fr"
base_url = "https://news.example.com"
asset_base_url = "https://cdn.site.test/build"
archive_url = "https://archive.invalid/b"
[sender]
from = "Bulletin <news@example.org>"
reply_to = "reply@localhost"
[publisher]
name = "Organisme"
postal_address = "1, rue Principale, Rimouski (Québec)  X0X 0X0"
website = "https://www.example.net"
email = "info@sub.example.org"
[sending]
unsubscribe_mailto = "leave@lists.example"
"""


def test_each_setting_is_named_at_its_line(make_issue):
    folder = make_issue("subject: Un sujet assez long\nlang: fr\nsections:\n  - type: divider\n", config=EVERY_SETTING)
    config = load_config(folder.parent.parent)
    found = {(d.path, d.line, d.code) for d in real_send_refusals(config, load_issue(folder))}
    assert found == {
        ("base_url", 3, "reserved-name"),
        ("asset_base_url", 4, "reserved-name"),
        ("archive_url", 5, "reserved-name"),
        ("sender.from", 7, "reserved-name"),
        ("sender.reply_to", 8, "reserved-name"),
        ("publisher.postal_address", 11, "placeholder-address"),
        ("publisher.website", 12, "reserved-name"),
        ("publisher.email", 13, "reserved-name"),
        ("sending.unsubscribe_mailto", 15, "reserved-name"),
    }
    assert all(d.file.endswith("newsletter.toml") and d.severity == "warning" for d in real_send_refusals(config))


def test_the_issues_own_sender_is_named_at_its_line_and_the_environment_by_its_variable(make_issue, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://serve.example")
    folder = make_issue(
        "subject: Un sujet assez long\nlang: fr\nfrom: Autre <autre@example.com>\nsections:\n  - type: divider\n",
        config='base_url = "https://bulletin.crdbsl.org"\n' + CONFIG,
    )
    report = check_issue(folder, load_config(folder.parent.parent)).report
    assert report.ok
    found = {(d.file.rpartition("/")[2], d.line, d.path) for d in report.warnings if d.code == "reserved-name"}
    assert found == {("issue.yaml", 3, "from"), ("NEWSLETTER_BASE_URL", None, "base_url")}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """The repository's workspace as it ships (its newsletter.toml fictional on purpose), with two subscribers."""
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    shutil.copytree(ROOT / "issues" / EXAMPLE_SLUG, tmp_path / "issues" / EXAMPLE_SLUG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("NEWSLETTER_ASSET_BASE_URL", "https://crdbsl.org/bulletin")
    for variable in ("NEWSLETTER_TRANSPORT", "NEWSLETTER_DATABASE_URL", "NEWSLETTER_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    for address in ("marie@crdbsl.org", "luc@crdbsl.org"):
        assert run("subscribers", "add", address, "--list", "alliances").exit_code == 0
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_real_send_of_the_example_as_shipped_is_refused_and_mails_nobody(shipped):
    with RunningSmtp(SmtpSink()) as server:
        send = ("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", server.dsn())
        result = run(*send)
        test = run(*send, "--to", "moi@crdbsl.org")
    assert result.exit_code == 1 and test.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: a real send refuses these settings: ")
    assert "newsletter.toml:7: base_url https://bulletin.crdbsl.example is on a reserved name" in line
    assert "newsletter.toml:19: publisher.postal_address" in line and "X0X 0X0" in line
    assert server.sink.received == []
    assert run("status", EXAMPLE_SLUG, "--list", "alliances").stdout.startswith(f"{EXAMPLE_SLUG} was never sent")


def test_the_dry_run_says_what_a_real_send_would_refuse_even_through_the_outbox(shipped):
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--json")
    assert result.exit_code == 0
    refuses = json.loads(result.stdout)["real_send_refuses"]
    assert [(r["code"], r["line"]) for r in refuses] == [("reserved-name", 7), ("placeholder-address", 19)]
    printed = run("send", EXAMPLE_SLUG, "--list", "alliances")
    assert "a real send would refuse " in printed.stderr and "newsletter.toml:7: base_url" in printed.stderr
    # The outbox takes it (nothing leaves the machine), and the campaign remembers why it must stay here.
    sent = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--json")
    assert sent.exit_code == 0 and json.loads(sent.stdout)["sent"] == 2


def test_an_agents_dry_run_lists_the_refusals_and_gives_no_code_for_a_real_transport(shipped):
    workspace = Workspace.discover(shipped)
    folder = agent.issue_folder(workspace, EXAMPLE_SLUG)
    through_outbox = asyncio.run(agent.confirmable_dry_run(workspace, folder, "alliances", "outbox://build/outbox"))
    assert [r["path"] for r in through_outbox["real_send_refuses"]] == ["base_url", "publisher.postal_address"]
    with RunningSmtp(SmtpSink()) as server:
        real = asyncio.run(agent.confirmable_dry_run(workspace, folder, "alliances", server.dsn()))
    assert real["confirmation"] is None and real["refused"].startswith("a real send refuses these settings: ")


def test_with_real_settings_the_same_send_goes(shipped):
    toml = shipped / "newsletter.toml"
    text = toml.read_text().replace("bulletin.crdbsl.example", "bulletin.crdbsl.org")
    text = text.replace("bureau 000, Rimouski (Québec)  X0X 0X0", "Rimouski (Québec)  G5L 1C2")
    toml.write_text(text.replace("rue de l'Exemple", "rue Saint-Germain Est"))
    with RunningSmtp(SmtpSink()) as server:
        result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", server.dsn())
    assert result.exit_code == 0, result.output
    assert len(server.sink.received) == 2
