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
from test_signup import OPEN, confirmation_links, serve_process, sign_up
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
    with RunningSmtp(SmtpSink()) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(welcoming)
        store = open_store(ws)
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            ws.config.base_url = base  # the confirmation links point at this server
            yield base, store, mail.sink
        store.close()


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
