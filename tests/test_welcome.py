"""A list's welcome email ([lists.alliances] welcome = "bienvenue"): once per person, right after they confirm a
sign-up through `serve`, or after `subscribers add --welcome` and `subscribers import --welcome`, never on a plain
import; through the same transport, headers and footer as a campaign; in the ledger, so that two servers, a
SIGKILL or a failing mail server change nothing; retried by the worker; checked like any issue; shown by
`subscribers show`. On a real uvicorn server and `newsletter serve` processes, a real SMTP server (aiosmtpd), on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import signal
import textwrap
import threading

import httpx
import pytest
import sqlalchemy as sa
from conftest import EXAMPLE_SLUG, REAL_BASE_URL, REAL_POSTAL_ADDRESS
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET, run, wait_for
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from test_signup import OPEN, confirmation_links, serve_process, serving_with_mail, sign_up
from web_server import serving

from newsletter.sending.wiring import open_store
from newsletter.store import SignupRequest, campaigns, deliveries, now, subscribers
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

WELCOME_SLUG = "bienvenue"
WELCOME_SUBJECT = "Bienvenue au bulletin des Alliances"
WELCOME_YAML = """\
subject: "Bienvenue au bulletin des Alliances"
preheader: "Ce que vous recevrez, et quand."
lang: fr
sections:
  - type: heading
    level: 1
    text: Bienvenue parmi nous
  - type: text
    text: |
      Merci de votre inscription. Le bulletin paraît chaque mois; les numéros passés sont sur
      [le site du CRD](https://crdbsl.org).
"""
WELCOME = f'welcome = "{WELCOME_SLUG}"\n'


@pytest.fixture
def database_setting(database_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def welcoming(workspace):  # noqa: F811
    """The example workspace whose list alliances is open to sign-up and has the welcome issue `bienvenue`."""
    write_welcome(workspace)
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN + WELCOME)
    return workspace


def write_welcome(workspace, text: str = WELCOME_YAML) -> None:
    folder = workspace / "issues" / WELCOME_SLUG
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issue.yaml").write_text(textwrap.dedent(text), encoding="utf-8")


def welcomes(sink, email: str | None = None) -> list:
    """The welcome emails the mail server took (to one address)."""
    return [
        r
        for r in sink.received
        if r.message["Subject"] == WELCOME_SUBJECT and (email is None or r.recipients == [email])
    ]


def welcome_rows(store, email: str) -> list[tuple[int, str, int]]:
    """(campaign, status, attempts) of a person's rows in welcome emails, read from the tables."""
    with store.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(deliveries.c.campaign_id, deliveries.c.status, deliveries.c.attempts)
                .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(campaigns.c.welcome, subscribers.c.email_key == email)
                .order_by(deliveries.c.campaign_id)
            )
        ]


def confirm_link(store, email: str, base: str) -> str:
    """A sign-up of `email` to alliances made in the store, and its confirmation link on `base`, as its email has
    it (for tests whose mail server takes no confirmation)."""
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", connection=connection)
        (asked,) = store.request_signups(
            [SignupRequest(list_id, email, None, {})], every=dt.timedelta(0), connection=connection
        )
    token = TokenSigner(SECRET).sign_confirmation(asked.subscriber_id, "alliances", asked.request_id, now())
    return f"{base}/confirm/{token}"


@pytest.fixture
def site(welcoming, monkeypatch):
    """serve over the list with its welcome, its mail going to a real SMTP server."""
    with serving_with_mail(welcoming, monkeypatch, "") as served:
        yield served


def test_a_confirmed_sign_up_gets_the_welcome_once_with_the_campaign_headers_and_footer(site):
    base, store, sink = site
    assert sign_up(base, "lea@example.org", name="Léa Ouellet").status_code == 200
    wait_for(lambda: confirmation_links(sink, "lea@example.org"), "the confirmation")
    (link,) = confirmation_links(sink, "lea@example.org")
    assert not welcomes(sink)  # nothing before the person confirms
    assert httpx.post(link).status_code == 200
    wait_for(lambda: welcome_rows(store, "lea@example.org") == [(1, "sent", 1)], "the welcome sent")
    (received,) = welcomes(sink, "lea@example.org")
    message = received.message
    assert message["To"] == "Léa Ouellet <lea@example.org>"
    assert re.fullmatch(rf"<{REAL_BASE_URL}/u/[\w.-]+>", message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Le bulletin des Alliances <alliances.crdbsl.org>"
    text = message.get_body(("plain",)).get_content()
    assert "Bienvenue parmi nous" in text and REAL_POSTAL_ADDRESS in text
    assert message["List-Unsubscribe"][1:-1] in text  # the footer's link is the header's
    assert f"{REAL_BASE_URL}/archive/{WELCOME_SLUG}/" in text  # view online: the welcome's own page
    # The same link again, and a second sign-up: no second welcome.
    assert httpx.post(link).status_code == 200
    assert sign_up(base, "lea@example.org").status_code == 200
    assert welcome_rows(store, "lea@example.org") == [(1, "sent", 1)]
    assert len(welcomes(sink, "lea@example.org")) == 1
    shown = run("subscribers", "show", "lea@example.org")
    assert re.search(r"welcome email of alliances \(bienvenue, campaign 1\): sent \d{4}-\d\d-\d\d", shown.stdout)
    document = json.loads(run("subscribers", "show", "lea@example.org", "--json").stdout)
    assert [(d["welcome"], d["status"], d["list"]) for d in document["deliveries"]] == [(True, "sent", "alliances")]


def test_the_welcome_has_its_page_in_the_archive_and_no_place_in_the_index_the_feed_or_the_lists_of_sends(site):
    base, store, sink = site
    assert httpx.post(confirm_link(store, "lea@example.org", base)).status_code == 200
    wait_for(lambda: welcome_rows(store, "lea@example.org") == [(1, "sent", 1)], "the welcome sent")
    page = httpx.get(f"{base}/archive/{WELCOME_SLUG}/")
    assert page.status_code == 200 and "Bienvenue parmi nous" in html.unescape(page.text)
    assert WELCOME_SLUG not in httpx.get(f"{base}/archive/").text
    assert WELCOME_SLUG not in httpx.get(f"{base}/archive/feed.xml").text
    assert json.loads(run("campaigns", "--json").stdout) == {"campaigns": []}
    (shown,) = json.loads(run("campaigns", "--welcome", "--json").stdout)["campaigns"]
    assert (shown["id"], shown["issue"], shown["welcome"], shown["sent"]) == (1, WELCOME_SLUG, True, 1)
    assert run("status", WELCOME_SLUG, "--list", "alliances").stdout.startswith(f"{WELCOME_SLUG} was never sent")
    cancel = run("campaign", "cancel", "1")
    assert cancel.exit_code == 1 and "is the welcome email of its list" in cancel.stderr
    # A send of the welcome's issue to the list is a campaign of its own, which leaves out whom the welcome reached.
    sent = json.loads(run("send", WELCOME_SLUG, "--list", "alliances", "--no-dry-run", "--json").stdout)
    assert (sent["campaign"], sent["sent"], sent["status"]) == (2, 4, "finished")  # the example's four, not Léa
    assert welcome_rows(store, "lea@example.org") == [(1, "sent", 1)]
    (still,) = json.loads(run("campaigns", "--welcome", "--json").stdout)["campaigns"]
    assert (still["status"], still["sent"]) == ("running", 1)  # never finished: the next newcomer gets a row


def test_two_servers_confirming_the_same_people_at_once_send_each_one_welcome(welcoming):
    """Two `newsletter serve` on one database, each asked to confirm the same five people at the same instant: the
    first confirmation also makes the welcome campaign, under the list's lock; each person gets one row, one email."""
    people = [f"double{i}@example.org" for i in range(5)]
    store = open_store(Workspace.discover(welcoming))
    with RunningSmtp(SmtpSink()) as mail:
        with serve_process(welcoming, mail.dsn()) as (one, first), serve_process(welcoming, mail.dsn()) as (two, other):
            links = [confirm_link(store, email, first) for email in people]
            answers: list[int] = []
            barrier = threading.Barrier(2 * len(people))

            def confirm(url: str) -> None:
                barrier.wait()
                answers.append(httpx.post(url, timeout=60).status_code)

            threads = [
                threading.Thread(target=confirm, args=(url,))
                for link in links
                for url in (link, link.replace(first, other))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            # The welcomes go in the background once each answer is sent: their arrival is the event waited on
            # (a server stopped before its sender claimed a row leaves it to a worker, which this test has not).
            assert mail.sink.wait_for(len(people)), mail.sink.received
            for server in (one, two):  # a stopping server sends what it holds, then exits
                server.send_signal(signal.SIGTERM)
                _, errors = server.communicate(timeout=120)
                assert "Traceback" not in errors
        assert answers == [200] * 10
        assert sorted(r.recipients[0] for r in welcomes(mail.sink)) == people
    assert [welcome_rows(store, email) for email in people] == [[(1, "sent", 1)]] * 5
    assert len(store.campaign_list(welcome=True)) == 1
    store.close()


def test_a_server_killed_before_the_welcome_went_leaves_it_to_the_worker_which_sends_it_once(welcoming):
    """SIGKILL while the mail server has not answered: the person is subscribed and their welcome queued (the same
    transaction); the dead server's lease runs out and `newsletter worker` sends it, once."""
    import socket

    config = welcoming / "newsletter.toml"
    config.write_text(config.read_text() + "\n[sending]\nlease = 1\n")
    store = open_store(Workspace.discover(welcoming))
    silent = socket.socket()  # a mail server that takes connections and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    with silent, serve_process(welcoming, f"smtp://127.0.0.1:{silent.getsockname()[1]}?tls=none") as (server, base):
        assert httpx.post(confirm_link(store, "patiente@example.org", base)).status_code == 200

        def claimed() -> bool:
            with store.engine.connect() as connection:
                return connection.execute(sa.select(deliveries.c.lease_owner)).scalar() is not None

        wait_for(claimed, "the welcome claimed by the server")
        server.kill()
        server.communicate(timeout=60)
    assert welcome_rows(store, "patiente@example.org") == [(1, "pending", 0)]
    assert {m.email: m.status for m in store.members(store.list_id("alliances"))}["patiente@example.org"] == (
        "subscribed"
    )

    def lease_over() -> bool:
        with store.engine.connect() as connection:
            until = connection.execute(sa.select(deliveries.c.lease_until)).scalar()
        return until is not None and until.replace(tzinfo=dt.UTC) < now()

    wait_for(lease_over, "the dead server's lease to run out")
    with RunningSmtp(SmtpSink()) as mail:
        worked = run("worker", "--until-idle", "--transport", mail.dsn())
        again = run("worker", "--until-idle", "--transport", mail.dsn())
    assert worked.exit_code == 0, worked.output
    assert "worker: 1 sent, 0 failed, campaigns [1]" in worked.stdout
    assert "worker: 0 sent" in again.stdout
    assert [r.recipients for r in welcomes(mail.sink)] == [["patiente@example.org"]]
    assert welcome_rows(store, "patiente@example.org") == [(1, "sent", 1)]
    store.close()


def test_a_welcome_the_mail_server_defers_is_retried_by_the_worker_and_a_refused_one_is_shown_failed(
    welcoming, monkeypatch
):
    """A 4xx leaves the row pending with its next try in an hour (its time is then brought forward, as if the hour had
    passed), which the worker makes; a 5xx is final."""
    monkeypatch.setattr("newsletter.sending.runner.retry_delay", lambda attempts, retry_after, pacing: 3600.0)
    refuse = {
        "tardive@example.org": "451 4.7.1 Greylisted, try again later",
        "inconnue@example.org": "550 5.1.1 <inconnue@example.org>: User unknown",
    }
    with RunningSmtp(SmtpSink(refuse=dict(refuse))) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(welcoming)
        store = open_store(ws)
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            for email in refuse:
                assert httpx.post(confirm_link(store, email, base)).status_code == 200
            wait_for(lambda: welcome_rows(store, "tardive@example.org") == [(1, "pending", 1)], "the first try")
            wait_for(lambda: welcome_rows(store, "inconnue@example.org") == [(1, "failed", 1)], "the refusal")
        assert not welcomes(mail.sink)
        pending = run("subscribers", "show", "tardive@example.org").stdout
        assert "welcome email of alliances (bienvenue, campaign 1): pending (tried 1 times, next " in pending
        assert "smtp 451: 4.7.1 Greylisted" in pending
        failed = run("subscribers", "show", "inconnue@example.org").stdout
        assert re.search(
            r"welcome email of alliances \(bienvenue, campaign 1\): failed [\d: -]+ UTC: smtp 550: 5\.1\.1", failed
        )
        mail.sink.refuse.pop("tardive@example.org")  # the mail server takes it now
        assert run("worker", "--until-idle").stdout.startswith("worker: 0 sent")  # not before its time
        with store.transaction() as connection:
            connection.execute(deliveries.update().values(next_attempt_at=now() - dt.timedelta(seconds=1)))
        worked = run("worker", "--until-idle")
        assert worked.exit_code == 0, worked.output
        assert [r.recipients for r in welcomes(mail.sink)] == [["tardive@example.org"]]
    assert welcome_rows(store, "tardive@example.org") == [(1, "sent", 2)]
    assert welcome_rows(store, "inconnue@example.org") == [(1, "failed", 1)]  # a refusal is final
    store.close()


def csv_file(workspace, name: str, rows: list[str]) -> str:
    path = workspace / "subscribers" / name
    path.write_text("courriel,nom\n" + "".join(f"{row}\n" for row in rows))
    return str(path)


def test_add_and_import_welcome_only_with_welcome_and_only_whom_they_add(welcoming):
    store = open_store(Workspace.discover(welcoming))
    assert run("subscribers", "add", "simple@example.org", "--list", "alliances").exit_code == 0
    added = run("subscribers", "add", "accueillie@example.org", "--list", "alliances", "--welcome")
    assert added.exit_code == 0 and added.stdout == "accueillie@example.org: added; welcome email queued\n"
    assert "a running `newsletter serve` or `newsletter worker` sends the welcome emails" in added.stderr
    member = json.loads(
        run("subscribers", "add", "marie@example.org", "--list", "alliances", "--welcome", "--json").stdout
    )
    assert member == {
        "email": "marie@example.org",
        "list": "alliances",
        "result": "unchanged",
        "lang": None,
        "welcome": None,
    }
    plain = run(
        "subscribers", "import", csv_file(welcoming, "a.csv", ["importee@example.org,Importée"]), "--list", "alliances"
    )
    assert plain.exit_code == 0 and "welcome" not in plain.output
    rows = ["nouvelle@example.org,Nouvelle", "autre@example.org,Autre", "marie@example.org,Marie Côté"]
    file = csv_file(welcoming, "b.csv", rows)
    dry = json.loads(
        run("subscribers", "import", file, "--list", "alliances", "--welcome", "--dry-run", "--json").stdout
    )
    assert (dry["added"], dry["welcomed"]) == (2, 2)
    assert welcome_rows(store, "nouvelle@example.org") == []  # a dry run queues nothing
    imported = run("subscribers", "import", file, "--list", "alliances", "--welcome")
    assert imported.exit_code == 0 and "2 added" in imported.stdout and "2 welcome emails queued" in imported.stdout
    again = json.loads(run("subscribers", "import", file, "--list", "alliances", "--welcome", "--json").stdout)
    assert (again["added"], again["welcomed"]) == (0, 0)
    welcomed = ["accueillie@example.org", "autre@example.org", "nouvelle@example.org"]
    with RunningSmtp(SmtpSink()) as mail:
        worked = run("worker", "--until-idle", "--transport", mail.dsn())
        assert worked.exit_code == 0, worked.output
        assert run("worker", "--until-idle", "--transport", mail.dsn()).stdout.startswith("worker: 0 sent")
    assert sorted(r.recipients[0] for r in welcomes(mail.sink)) == welcomed
    for email in ("simple@example.org", "importee@example.org", "marie@example.org"):
        assert welcome_rows(store, email) == []
    message = welcomes(mail.sink, "nouvelle@example.org")[0].message
    assert (
        message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        and message["To"] == "Nouvelle <nouvelle@example.org>"
    )
    store.close()


def test_a_changed_welcome_is_a_new_version_for_whoever_joins_afterwards(welcoming):
    assert run("subscribers", "add", "avant@example.org", "--list", "alliances", "--welcome").exit_code == 0
    write_welcome(welcoming, WELCOME_YAML.replace("Bienvenue parmi nous", "Bienvenue, enfin"))
    assert run("subscribers", "add", "apres@example.org", "--list", "alliances", "--welcome").exit_code == 0
    assert run("subscribers", "add", "apres2@example.org", "--list", "alliances", "--welcome").exit_code == 0
    shown = json.loads(run("campaigns", "--welcome", "--json").stdout)["campaigns"]
    assert [(c["id"], c["pending"]) for c in shown] == [(2, 2), (1, 1)]
    with RunningSmtp(SmtpSink()) as mail:
        assert run("worker", "--until-idle", "--transport", mail.dsn()).exit_code == 0
    text = {r.recipients[0]: r.message.get_body(("plain",)).get_content() for r in welcomes(mail.sink)}
    assert "Bienvenue parmi nous" in text["avant@example.org"]
    assert "Bienvenue, enfin" in text["apres@example.org"] and "Bienvenue, enfin" in text["apres2@example.org"]


def test_a_welcome_naming_no_issue_is_an_error_at_its_line_and_serve_does_not_start(workspace):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN + 'welcome = "absente"\n')
    line = config.read_text().splitlines().index('welcome = "absente"') + 1
    checked = run("check", EXAMPLE_SLUG)
    assert checked.exit_code == 1
    assert f'newsletter.toml:{line}: error[welcome-missing] [lists.alliances] welcome = "absente" names no issue' in (
        checked.stderr
    )
    served = run("serve")
    assert served.exit_code == 1 and served.stdout == ""
    assert served.stderr.startswith(
        f'error: newsletter.toml:{line}: [lists.alliances] welcome = "absente" names no issue'
    )
    assert len(served.stderr.splitlines()) == 1
    added = run("subscribers", "add", "x@example.org", "--list", "autre", "--welcome")
    assert added.exit_code == 1 and "the list 'autre' has no welcome email" in added.stderr


def test_serve_does_not_start_with_a_welcome_that_has_errors_and_check_shows_them(welcoming):
    write_welcome(welcoming, WELCOME_YAML + "  - type: image\n    src: images/absente.png\n    alt: Rien\n")
    line = (welcoming / "newsletter.toml").read_text().splitlines().index(WELCOME.strip()) + 1
    served = run("serve")
    assert served.exit_code == 1 and len(served.stderr.splitlines()) == 1
    assert served.stderr.startswith(
        f'error: newsletter.toml:{line}: [lists.alliances] welcome = "bienvenue": the issue'
    )
    assert "missing-image" in served.stderr and "`newsletter check bienvenue` lists them" in served.stderr
    checked = run("check", WELCOME_SLUG)
    assert checked.exit_code == 1 and "missing-image" in checked.stderr
    added = run("subscribers", "add", "x@example.org", "--list", "alliances", "--welcome")
    assert added.exit_code == 1 and "missing-image" in added.stderr
    store = open_store(Workspace.discover(welcoming))
    assert store.find_subscriber("x@example.org") is None  # refused before anything is written
    store.close()


def test_serve_takes_a_changed_welcome_for_those_who_confirm_afterwards_and_keeps_one_with_errors_out(
    welcoming, monkeypatch, caplog
):
    """serve looks at the welcome's files every minute (WelcomeMail.refresh, called here): a version with errors is
    not taken and the one before goes on; a good one is, for those who confirm afterwards."""
    import asyncio

    with RunningSmtp(SmtpSink()) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(welcoming)
        store = open_store(ws)
        app = create_app(ws, store, TokenSigner(SECRET))
        (welcome_mail,) = [work.__self__ for _, work in app.state.site.periodic if work.__name__ == "send_pending"]
        with serving(app) as base:
            assert httpx.post(confirm_link(store, "avant@example.org", base)).status_code == 200
            wait_for(lambda: welcome_rows(store, "avant@example.org") == [(1, "sent", 1)], "the first version")
            write_welcome(welcoming, WELCOME_YAML + "  - type: image\n    src: images/absente.png\n    alt: Rien\n")
            asyncio.run(welcome_mail.refresh())
            assert "the welcome of alliances changed and is not taken" in caplog.text
            assert httpx.post(confirm_link(store, "pendant@example.org", base)).status_code == 200
            wait_for(lambda: welcome_rows(store, "pendant@example.org") == [(1, "sent", 1)], "the version before")
            write_welcome(welcoming, WELCOME_YAML.replace("Bienvenue parmi nous", "Bienvenue, enfin"))
            asyncio.run(welcome_mail.refresh())
            assert httpx.post(confirm_link(store, "apres@example.org", base)).status_code == 200
            wait_for(lambda: welcome_rows(store, "apres@example.org") == [(2, "sent", 1)], "the new version")
        text = welcomes(mail.sink, "apres@example.org")[0].message.get_body(("plain",)).get_content()
        assert "Bienvenue, enfin" in text
        store.close()


def test_an_agent_never_writes_nor_creates_a_welcome(welcoming):
    from newsletter import agent
    from newsletter.errors import NewsletterError

    ws = Workspace.discover(welcoming)
    with pytest.raises(NewsletterError, match="is the welcome email of the list alliances"):
        agent.write_issue(ws, WELCOME_SLUG, WELCOME_YAML)
    with pytest.raises(NewsletterError, match="only a person edits it"):
        agent.add_image(ws, WELCOME_SLUG, "logo.png", "")
    with pytest.raises(NewsletterError, match="is the welcome email"):
        agent.refuse_welcome(ws, WELCOME_SLUG)
    agent.refuse_welcome(ws, EXAMPLE_SLUG)  # any other issue is the agent's to write


def test_a_welcome_is_named_by_an_issue_slug(workspace):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN + 'welcome = "../bienvenue"\n')
    line = config.read_text().splitlines().index('welcome = "../bienvenue"') + 1
    checked = run("check", EXAMPLE_SLUG)
    assert checked.exit_code == 1 and f"newsletter.toml:{line}: lists.alliances.welcome:" in checked.stderr
    assert "'../bienvenue' cannot name an issue" in checked.stderr
