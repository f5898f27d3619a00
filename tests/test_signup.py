"""People join by double opt-in through `serve`: the form, the same answer whatever the address, the honeypot,
the limits, the confirmation link and its expiry, consent recorded, preferences, and a person forgotten.
On a real uvicorn server, with the confirmation emails through a real SMTP server (aiosmtpd), on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import json
import re
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET, environment, newsletter_command, run, wait_for
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from test_subscribers import CLEANED_NAME, UNRULY_NAME
from test_tokens import one_character_changes
from web_server import serving

from newsletter.sending.wiring import open_store
from newsletter.store import Store, events, metadata, subscribers
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

OPEN = '\n[lists.alliances]\nsubscribe = true\ntitle = "Le bulletin des Alliances"\nlang = "fr"\n'


@pytest.fixture
def database_setting(database_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


@contextlib.contextmanager
def serving_with_mail(workspace, monkeypatch, settings: str) -> Iterator[tuple[str, Store, SmtpSink]]:
    """serve over the workspace with these settings added to its newsletter.toml, its mail going to a real SMTP
    server: (its base URL, the store, the SMTP sink)."""
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + settings)
    with RunningSmtp(SmtpSink()) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(workspace)
        store = open_store(ws)
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            ws.config.base_url = base  # the confirmation links point at this server
            yield base, store, mail.sink
        store.close()


@pytest.fixture
def site(workspace, monkeypatch):  # noqa: F811
    """serve over the example list opened to sign-up, its mail going to a real SMTP server."""
    with serving_with_mail(workspace, monkeypatch, OPEN) as served:
        yield served


def sign_up(base: str, email: str, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{base}/subscribe/alliances",
        data={"email": email, "name": "", **fields},
        headers={"User-Agent": "Firefox de test", "Referer": "https://crdbsl.org/bulletin"},
    )


def status(store, email: str) -> str | None:
    return {m.email: m.status for m in store.members(store.list_id("alliances"))}.get(email)


def confirmation_links(sink, email: str) -> list[str]:
    links = []
    for received in sink.received:
        if received.recipients == [email]:
            text = received.message.get_body(("plain",)).get_content()
            links += re.findall(r"https?://\S+/confirm/\S+", text)
    return links


def events_of(store, email: str) -> list[str]:
    """The kinds of a person's events, oldest first, read from the table."""
    with store.engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(events.c.kind)
                .join(subscribers, subscribers.c.id == events.c.subscriber_id)
                .where(subscribers.c.email_key == email)
                .order_by(events.c.id)
            ).scalars()
        )


def wait_for_mail(sink, count: int) -> None:
    """Until the confirmations sent in the background have arrived: an event, whatever loop the caller runs
    (Playwright's sync API runs one in this thread)."""
    assert sink.wait_for(count), f"{count} messages expected, {len(sink.received)} arrived"


def test_the_form_page_labels_consent_and_a_hidden_honeypot(site):
    base, store, sink = site
    page = httpx.get(f"{base}/subscribe/alliances")
    assert page.status_code == 200 and 'lang="fr"' in page.text
    text = html.unescape(page.text)
    assert '<label for="nl-email">Adresse courriel</label>' in text and 'type="email" name="email" required' in text
    assert "J'accepte de recevoir Le bulletin des Alliances de Collectif régional" in text
    assert 'class="away" aria-hidden="true"' in text and 'name="website" tabindex="-1"' in text
    assert httpx.get(f"{base}/subscribe/inconnue").status_code == 404
    assert sign_up(base, "x@example.org").status_code == 200
    closed = httpx.post(f"{base}/subscribe/fermee", data={"email": "x@example.org"})
    assert closed.status_code == 404


def test_a_new_address_gets_one_confirmation_and_waits_unconfirmed(site):
    base, store, sink = site
    answer = sign_up(base, "nouvelle@example.org", name="Nouvelle Personne")
    assert answer.status_code == 200 and "un courriel de confirmation" in html.unescape(answer.text)
    wait_for_mail(sink, 1)
    (received,) = sink.received
    message = received.message
    assert received.recipients == ["nouvelle@example.org"]
    assert message["Subject"] == "Confirmez votre abonnement à Le bulletin des Alliances"
    assert message["Auto-Submitted"] == "auto-generated" and "List-Unsubscribe" not in message
    assert message["To"] == "Nouvelle Personne <nouvelle@example.org>"
    assert len(confirmation_links(sink, "nouvelle@example.org")) == 1
    assert status(store, "nouvelle@example.org") == "pending"
    person = store.person("nouvelle@example.org")
    (request,) = [e for e in person["events"] if e["kind"] == "signup-requested"]
    assert request["source"] == "form" and request["list"] == "alliances"
    assert request["detail"]["consent"].startswith("J'accepte de recevoir Le bulletin des Alliances")
    assert request["detail"]["page"] == "https://crdbsl.org/bulletin"
    assert request["detail"]["user_agent"] == "Firefox de test" and "127.0.0.1" not in str(request["detail"])
    assert len(request["detail"]["ip_hash"]) == 32


def test_a_signed_up_name_loses_its_control_characters_and_is_capped(site):
    base, store, sink = site
    assert sign_up(base, "nom@example.org", name=UNRULY_NAME).status_code == 200
    wait_for_mail(sink, 1)
    (request,) = [e for e in store.person("nom@example.org")["events"] if e["kind"] == "signup-requested"]
    assert request["detail"]["name"] == CLEANED_NAME  # the name kept until they confirm
    head = sink.received[0].data.split(b"\r\n\r\n", 1)[0]
    (line,) = [line for line in head.split(b"\r\n") if line.startswith(b"To:")]
    assert len(line) <= 998 and not any(byte < 0x20 or byte == 0x7F for byte in line)
    assert sink.received[0].message["To"].addresses[0].display_name == CLEANED_NAME


def test_every_well_formed_address_gets_the_same_answer_whatever_its_state(site):
    base, store, sink = site
    answers = {
        email: sign_up(base, email)
        for email in (
            "inconnu@example.org",  # new
            "marie@example.org",  # subscribed
            "parti@example.org",  # unsubscribed
            "rebond@example.org",  # bounced
        )
    }
    answers["inconnu@example.org (pending)"] = sign_up(base, "inconnu@example.org")
    assert {(a.status_code, a.text) for a in answers.values()} == {(200, answers["inconnu@example.org"].text)}
    wait_for_mail(sink, 2)
    # A member already subscribed and a bounced address get nothing; the one who left may come back.
    assert sorted(r.recipients[0] for r in sink.received) == ["inconnu@example.org", "parti@example.org"]
    assert status(store, "parti@example.org") == "unsubscribed"  # until they confirm


def test_honeypot_malformed_address_and_the_ten_minute_limit(site):
    base, store, sink = site
    trapped = sign_up(base, "robot@example.org", website="https://spam.example")
    assert trapped.status_code == 200 and trapped.text == sign_up(base, "vraie@example.org").text
    assert store.person("robot@example.org") is None
    bad = sign_up(base, "pas une adresse")
    assert bad.status_code == 400 and "ne semble pas valide" in bad.text and 'lang="fr"' in bad.text
    for _ in range(3):
        assert sign_up(base, "vraie@example.org").status_code == 200
    wait_for_mail(sink, 1)
    assert [r.recipients for r in sink.received] == [["vraie@example.org"]]  # one in ten minutes


def test_confirming_subscribes_and_records_consent_a_get_never_does(site):
    base, store, sink = site
    sign_up(base, "nouvelle@example.org", name="Nouvelle")
    wait_for_mail(sink, 1)
    (link,) = confirmation_links(sink, "nouvelle@example.org")
    page = httpx.get(link)
    assert page.status_code == 200 and "Confirmer" in page.text and "n•••@example.org" in page.text
    assert status(store, "nouvelle@example.org") == "pending"
    done = httpx.post(link, headers={"User-Agent": "Navigateur"})
    assert done.status_code == 200 and "recevra Le bulletin des Alliances" in html.unescape(done.text)
    assert status(store, "nouvelle@example.org") == "subscribed"
    assert httpx.post(link).status_code == 200  # idempotent
    person = store.person("nouvelle@example.org")
    assert person["name"] == "Nouvelle"
    (consent,) = [e for e in person["events"] if e["kind"] == "subscribed"]
    assert consent["source"] == "double-opt-in"
    assert consent["detail"]["requested"]["consent"].startswith("J'accepte de recevoir")
    assert consent["detail"]["confirmed"]["user_agent"] == "Navigateur"


def test_forged_tampered_and_expired_confirmation_links_get_the_same_400(site):
    base, store, sink = site
    sign_up(base, "nouvelle@example.org")
    wait_for_mail(sink, 1)
    (link,) = confirmation_links(sink, "nouvelle@example.org")
    token = link.rsplit("/", 1)[1]
    reference = httpx.post(f"{base}/confirm/garbage")
    assert reference.status_code == 400 and "expiré" in html.unescape(reference.text)
    subscriber = store.person("nouvelle@example.org")
    signer = TokenSigner(SECRET)
    request_id = signer.verify_confirmation(token, dt.datetime.now(dt.UTC), valid=dt.timedelta(days=7)).request_id
    old = signer.sign_confirmation(
        _id(store, "nouvelle@example.org"),
        "alliances",
        request_id,
        dt.datetime.now(dt.UTC) - dt.timedelta(days=7, minutes=2),
    )
    unsubscribe_token = signer.sign(_id(store, "nouvelle@example.org"), "alliances")  # another kind of token
    another_request = signer.sign_confirmation(
        _id(store, "nouvelle@example.org"), "alliances", request_id + 1, dt.datetime.now(dt.UTC)
    )
    for bad in (
        old,
        unsubscribe_token,
        another_request,
        TokenSigner("another-key-of-enough-length").sign_confirmation(
            1, "alliances", request_id, dt.datetime.now(dt.UTC)
        ),
    ):
        answer = httpx.post(f"{base}/confirm/{bad}")
        assert (answer.status_code, answer.text) == (400, reference.text)
    changes = set(one_character_changes(token)) - {token}
    accepted = [
        t for t in changes if signer.verify_confirmation(t, dt.datetime.now(dt.UTC), valid=dt.timedelta(days=7))
    ]
    assert len(changes) > 1000 and accepted == []
    assert status(store, "nouvelle@example.org") == "pending" and subscriber is not None


def test_a_hundred_sign_ups_at_once(site):
    base, store, sink = site

    async def all_at_once():
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=100), timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/subscribe/alliances", data={"email": f"n{i:03d}@example.org"}) for i in range(100))
            )

    answers = asyncio.run(all_at_once())
    assert {a.status_code for a in answers} == {200}
    wait_for_mail(sink, 100)
    assert len(sink.received) == 100 and len({r.recipients[0] for r in sink.received}) == 100
    statuses = [status(store, f"n{i:03d}@example.org") for i in range(100)]
    assert statuses == ["pending"] * 100  # nobody subscribed before confirming
    signer, ids = TokenSigner(SECRET), {m.email: m.subscriber_id for m in store.members(store.list_id("alliances"))}
    for received in sink.received:  # sent in batches: each link is its own recipient's
        (link,) = confirmation_links(sink, received.recipients[0])
        found = signer.verify_confirmation(link.rsplit("/", 1)[1], dt.datetime.now(dt.UTC), valid=dt.timedelta(1))
        assert found[:2] == (ids[received.recipients[0]], "alliances") and found.request_id is not None


def test_six_sign_ups_at_once_one_address_the_mail_server_cannot_take_all_six_recorded(site, caplog):
    """One of six confirmations cannot go (a local part that is not ASCII, a mail server without SMTPUTF8): it is
    recorded as refused, the five others go once each (an international domain in A-labels) and are recorded as
    sent, so that none is sent again."""
    base, store, sink = site
    people = [
        "un@example.org",
        "deux@example.org",
        "trois@example.org",
        "quatre@example.org",
        "hana@münchen.example",
        "zoé@exämple.org",
    ]

    async def all_at_once():
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/subscribe/alliances", data={"email": email, "name": "Ana"}) for email in people)
            )

    assert {a.status_code for a in asyncio.run(all_at_once())} == {200}
    for email in people:
        wait_for(lambda email=email: len(events_of(store, email)) == 2, f"what became of {email}'s confirmation")
    assert sorted(r.recipients[0] for r in sink.received) == sorted(people[:4] + ["hana@xn--mnchen-3ya.example"])
    assert [events_of(store, email)[-1] for email in people] == ["confirmation-sent"] * 5 + ["confirmation-refused"]
    at = dt.datetime.now(dt.UTC)
    assert store.unsent_confirmations(at - dt.timedelta(days=1), at)[1] == []  # nothing to send again
    assert "not ASCII and the server does not offer SMTPUTF8" in caplog.text
    assert "@" not in caplog.text  # why, never to whom
    assert "Traceback" not in caplog.text


def test_a_refused_confirmation_fails_alone_and_a_dead_mail_server_loses_no_sign_up(workspace, monkeypatch, caplog):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN)
    sink = SmtpSink(refuse={"refusee@example.org": "550 5.1.1 no such user"})
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    with RunningSmtp(sink) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            answers = [sign_up(base, email) for email in ("refusee@example.org", "acceptee@example.org")]
            wait_for_mail(sink, 1)
    assert [a.status_code for a in answers] == [200, 200]
    assert [r.recipients for r in sink.received] == [["acceptee@example.org"]]
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", RunningSmtp(sink).dsn())  # a free port, never listened on
    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        answer = sign_up(base, "sans-courriel@example.org")
        for _ in range(500):
            if caplog.text.count("not sent") == 2:
                break
            asyncio.run(asyncio.sleep(0.01))
    assert answer.status_code == 200 and answer.text == answers[0].text
    refused, lost = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    # our words, not the OS's: how a refused connection is put differs from one Python version to the next
    assert "550: 5.1.1 no such user" in refused and "cannot connect to 127.0.0.1" in lost
    assert "@example.org" not in caplog.text  # the log says why, never who
    assert status(store, "sans-courriel@example.org") == "pending"  # recorded
    wait_for(lambda: events_of(store, "acceptee@example.org")[-1] == "confirmation-sent", "recorded as sent")
    wait_for(lambda: events_of(store, "refusee@example.org")[-1] == "confirmation-refused", "recorded as refused")
    assert events_of(store, "sans-courriel@example.org") == ["signup-requested"]
    at = dt.datetime.now(dt.UTC)
    _, unsent = store.unsent_confirmations(at - dt.timedelta(days=1), at)  # what a running server sends again
    assert [u.email for u in unsent] == ["sans-courriel@example.org"]
    store.close()


def test_who_left_comes_back_by_confirming_and_never_by_import(site, workspace):  # noqa: F811
    base, store, sink = site
    (workspace / "retour.csv").write_text("courriel\nparti@example.org\n")
    assert run("subscribers", "import", "retour.csv", "--list", "alliances").exit_code == 0
    assert status(store, "parti@example.org") == "unsubscribed"
    sign_up(base, "parti@example.org")
    wait_for_mail(sink, 1)
    (link,) = confirmation_links(sink, "parti@example.org")
    assert httpx.post(link).status_code == 200
    assert status(store, "parti@example.org") == "subscribed"


def test_the_preferences_page_shows_the_other_lists_and_leaves_one_or_all(site):
    base, store, sink = site
    from newsletter.subscribers import add

    add(store, "evenements", "marie@example.org", None, list_name="Les événements")
    add(store, "ateliers", "marie@example.org", None)
    token = TokenSigner(SECRET).sign(_id(store, "marie@example.org"), "alliances")
    page = html.unescape(httpx.get(f"{base}/u/{token}").text)
    assert "Vos autres listes" in page and "Les événements — abonné·e" in page
    left = httpx.post(f"{base}/u/{token}", data={"action": "leave", "list": "evenements"})
    assert left.status_code == 200
    statuses = {found.slug: state for found, state in store.memberships_of(_id(store, "marie@example.org"))}
    assert statuses == {"alliances": "subscribed", "evenements": "unsubscribed", "ateliers": "subscribed"}
    everything = httpx.post(f"{base}/u/{token}", data={"action": "leave-all"})
    assert everything.status_code == 200 and "ne recevra plus rien" in html.unescape(everything.text)
    statuses = {found.slug: state for found, state in store.memberships_of(_id(store, "marie@example.org"))}
    assert set(statuses.values()) == {"unsubscribed"}


def test_forget_leaves_nothing_personal_and_an_import_does_not_bring_them_back(site, workspace):  # noqa: F811
    base, store, sink = site
    sign_up(base, "marie@example.org")  # subscribed: no email, but an event with her user agent
    marie = _id(store, "marie@example.org")
    with store.transaction() as connection:
        connection.execute(
            sa.text("UPDATE subscribers SET fields = :f WHERE id = :i"),
            {"f": '{"Organisme": "Le Jardin secret de Marie"}', "i": marie},
        )
    personal = ["marie@example.org", "Marie Côté", "Le Jardin secret de Marie", "Firefox de test"]
    assert run("subscribers", "forget", "marie@example.org", "--json").exit_code == 0
    with store.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                text = str(tuple(row))
                assert not any(value in text for value in personal), (table.name, text)
    (workspace / "again.csv").write_text("courriel,nom\nmarie@example.org,Marie Côté\n")
    again = run("subscribers", "import", "again.csv", "--list", "alliances", "--json")
    assert again.exit_code == 0 and '"added": 0' in again.stdout
    assert store.person("marie@example.org") is None and status(store, "marie@example.org") is None
    # Her own new consent brings her back.
    sign_up(base, "marie@example.org")
    wait_for_mail(sink, 1)
    (link,) = confirmation_links(sink, "marie@example.org")
    assert httpx.post(link).status_code == 200 and status(store, "marie@example.org") == "subscribed"


def test_purge_pending_removes_expired_sign_ups_whole_and_keeps_everyone_else(site, workspace):  # noqa: F811
    from newsletter.store import events, memberships
    from newsletter.subscribers import add

    base, store, sink = site
    people = ["ancienne@example.org", "recente@example.org", "confirmee@example.org", "double@example.org"]
    add(store, "autre", "double@example.org", None)  # on another list too: stays, off this one
    for address in people:
        sign_up(base, address, name="Nom Personnel")
    wait_for_mail(sink, 4)
    for address in people:  # what became of each email is recorded too, and goes with the rest
        wait_for(lambda address=address: "confirmation-sent" in events_of(store, address), "recorded as sent")
    assert httpx.post(confirmation_links(sink, "confirmee@example.org")[0]).status_code == 200
    old = [_id(store, a) for a in ("ancienne@example.org", "confirmee@example.org", "double@example.org")]
    eight_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    with store.transaction() as connection:  # as if they had signed up eight days ago
        connection.execute(events.update().where(events.c.subscriber_id.in_(old)).values(at=eight_days_ago))
        connection.execute(
            memberships.update().where(memberships.c.subscriber_id.in_(old)).values(updated_at=eight_days_ago)
        )
    with store.transaction() as connection:  # recente first asked eight days ago too, and again just now
        connection.execute(
            memberships.update()
            .where(memberships.c.subscriber_id == _id(store, "recente@example.org"))
            .values(updated_at=eight_days_ago)
        )
    waiting = json.loads(run("subscribers", "pending", "--list", "alliances", "--json").stdout)["pending"]
    last_asked = {w["email"]: dt.datetime.fromisoformat(w["last_asked"]) for w in waiting}
    assert sorted(last_asked) == ["ancienne@example.org", "double@example.org", "recente@example.org"]
    assert last_asked["ancienne@example.org"] < dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    assert last_asked["recente@example.org"] > dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    result = run("subscribers", "purge-pending", "--list", "alliances", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (sorted(report["removed"]), report["erased"]) == (["ancienne@example.org", "double@example.org"], 1)
    with store.engine.connect() as connection:  # nothing of her in any table
        for table in metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                assert "ancienne@example.org" not in str(tuple(row)), table.name
    double = store.person("double@example.org")
    assert [(m["list"], m["status"]) for m in double["memberships"]] == [("autre", "subscribed")]
    assert not [e for e in double["events"] if e["kind"] in ("signup-requested", "confirmation-sent")]
    assert status(store, "recente@example.org") == "pending"  # asked a moment ago: its link still works
    assert status(store, "confirmee@example.org") == "subscribed"
    assert [e["kind"] for e in store.person("confirmee@example.org")["events"]].count("signup-requested") == 1
    assert httpx.post(confirmation_links(sink, "ancienne@example.org")[0]).status_code == 400
    assert json.loads(run("subscribers", "purge-pending", "--list", "alliances", "--json").stdout)["removed"] == []
    refused = run("subscribers", "purge-pending", "--list", "alliances", "--older-than", "longtemps")
    assert refused.exit_code != 0 and "--older-than" in refused.output


def _id(store, email):
    return {m.email: m.subscriber_id for m in store.members(store.list_id("alliances"))}[email]


def test_an_address_block_past_its_limit_gets_the_same_page_and_no_email(workspace, monkeypatch):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + "\n[serve]\nsignups_per_block = 3\n" + OPEN)
    with RunningSmtp(SmtpSink()) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(workspace)
        store = open_store(ws)
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            answers = [sign_up(base, f"n{i}@example.org") for i in range(5)]
            wait_for_mail(mail.sink, 3)
        store.close()
    assert {(a.status_code, a.text) for a in answers} == {(200, answers[0].text)}
    assert sorted(r.recipients[0] for r in mail.sink.received) == ["n0@example.org", "n1@example.org", "n2@example.org"]


def test_serve_refuses_a_list_open_to_sign_up_without_base_url(workspace):  # noqa: F811
    """Without base_url the confirmation links would come from the request's Host, which anyone writes: the app
    refuses to start, and so does `newsletter serve`, in one line naming the setting."""
    from newsletter.errors import ConfigError

    config = workspace / "newsletter.toml"
    config.write_text(config.read_text().replace('base_url = "https://bulletin.crdbsl.org"', "") + OPEN)
    line = config.read_text().splitlines().index("subscribe = true") + 1
    expected = f"newsletter.toml:{line}: [lists.alliances] subscribe = true needs base_url"
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        create_app(ws, store, TokenSigner(SECRET))
    store.close()
    port = RunningSmtp(SmtpSink()).port  # a free port
    refused = subprocess.run(
        newsletter_command("serve", "--port", str(port)),
        cwd=workspace,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and refused.stderr.startswith(f"error: {expected}")
    assert len(refused.stderr.splitlines()) == 1 and "NEWSLETTER_BASE_URL" in refused.stderr
    assert refused.stdout == ""  # it never said it was serving


def test_the_links_and_the_consent_record_come_from_base_url_never_from_host(site):
    base, store, sink = site
    forged = {"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    answer = httpx.post(f"{base}/subscribe/alliances", data={"email": "cible@example.org"}, headers=forged)
    assert answer.status_code == 200
    wait_for_mail(sink, 1)
    (link,) = confirmation_links(sink, "cible@example.org")
    assert link.startswith(f"{base}/confirm/")  # base_url, whatever the request said
    (request,) = [e for e in store.person("cible@example.org")["events"] if e["kind"] == "signup-requested"]
    assert request["detail"]["page"] == f"{base}/subscribe/alliances"  # no Referer: the page posted to
    assert "evil" not in str(store.person("cible@example.org")) and "evil" not in answer.text


def over_the_limit_config(workspace, trusted: str) -> None:
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + f"\n[serve]\nsignups_per_block = 1\ntrusted_proxies = {trusted}\n" + OPEN)


@pytest.mark.parametrize(
    ("trusted", "mailed"),
    [
        ("[]", ["une@example.org"]),  # the default: X-Forwarded-For from anyone is ignored, both from 127.0.0.1
        ('["127.0.0.1"]', ["deux@example.org", "une@example.org"]),  # a proxy here: the addresses it forwards
    ],
)
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(workspace, trusted, mailed):  # noqa: F811
    """Two visitors who claim to come from two distinct blocks, through `newsletter serve` itself; the refused
    sign-up is counted in the log, which never says from where nor who."""
    over_the_limit_config(workspace, trusted)
    with RunningSmtp(SmtpSink()) as mail, serve_process(workspace, mail.dsn()) as (server, base):
        answers = [
            httpx.post(f"{base}/subscribe/alliances", data={"email": email}, headers={"X-Forwarded-For": forwarded})
            for email, forwarded in (("une@example.org", "203.0.113.5"), ("deux@example.org", "198.51.100.7"))
        ]
        server.send_signal(signal.SIGTERM)  # it sends what waits before it exits
        _, errors = server.communicate(timeout=120)
    assert [a.status_code for a in answers] == [200, 200] and answers[0].text == answers[1].text
    assert sorted(r.recipients[0] for r in mail.sink.received) == mailed
    refused_line = "limit ([serve] signups_per_block) in the last minute: 1, from 1 blocks"
    assert (refused_line in errors) == (len(mailed) == 1), errors
    assert "Traceback" not in errors
    for secret in ("203.0.113", "198.51.100", "127.0.0.1", "@example.org"):
        assert secret not in errors


def test_trusted_proxies_must_be_addresses_or_networks(workspace):  # noqa: F811
    over_the_limit_config(workspace, '["127.0.0.1", "dix.0.0.0/8"]')
    line = (workspace / "newsletter.toml").read_text().splitlines().index(
        'trusted_proxies = ["127.0.0.1", "dix.0.0.0/8"]'
    ) + 1
    result = run("serve")
    assert result.exit_code == 1 and f"newsletter.toml:{line}: serve.trusted_proxies.1:" in result.stderr
    assert "'dix.0.0.0/8' is not an IP address or network" in result.stderr and "Traceback" not in result.stderr


def form_bodies() -> dict[str, dict]:
    """Bodies that are no form serve takes, as httpx's keyword arguments."""
    many = {f"champ{i}": "x" for i in range(25)}
    return {
        "25 urlencoded fields": {"data": many},
        "25 multipart fields": {"files": {key: (None, value) for key, value in many.items()}},
        "a file": {"files": {"email": ("cv.txt", b"une@example.org", "text/plain")}},
        "multipart without a boundary": {"content": b"email=x", "headers": {"Content-Type": "multipart/form-data"}},
    }


def test_a_body_that_is_no_form_gets_a_400_and_no_traceback(workspace):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN)
    store = open_store(Workspace.discover(workspace))
    token = TokenSigner(SECRET).sign(_id(store, "marie@example.org"), "alliances")
    with RunningSmtp(SmtpSink()) as mail, serve_process(workspace, mail.dsn()) as (server, base):
        answers = {
            (path, what): httpx.post(f"{base}{path}", **body)
            for path in ("/subscribe/alliances", f"/u/{token}")
            for what, body in form_bodies().items()
        }
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=120)
    assert {key: answer.status_code for key, answer in answers.items()} == dict.fromkeys(answers, 400)
    assert "Traceback" not in errors and "Exception" not in errors, errors
    assert mail.sink.received == [] and status(store, "marie@example.org") == "subscribed"
    store.close()


def test_a_failed_write_fails_its_own_request_only(database_url, caplog):
    from newsletter.store import Store
    from newsletter.subscribers import add
    from newsletter.web.writes import GroupWriter

    store = Store.open(database_url)
    add(store, "alliances", "a@example.org", None)
    writer = GroupWriter(store)

    def broken(connection):
        raise RuntimeError("this write fails")

    def broken_record(items, *, connection):
        raise RuntimeError("this record fails")

    async def together():
        writer.later(broken_record, [1, 2])  # a record nobody waits on fails too: logged, nothing else lost
        return await asyncio.gather(
            writer.run(lambda c: store.ensure_list("premiere", connection=c)),
            writer.run(broken),
            writer.run(lambda c: store.ensure_list("seconde", connection=c)),
            return_exceptions=True,
        )

    first, failed, second = asyncio.run(together())
    assert isinstance(failed, RuntimeError) and isinstance(first, int) and isinstance(second, int)
    assert {"premiere", "seconde"} <= set(store.list_slugs())  # the others were recorded
    assert "2 records not written: this record fails" in caplog.text
    store.close()


@contextlib.contextmanager
def serve_process(workspace, transport: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`newsletter serve` as its own process, its mail through `transport`: (the process, its base URL); killed on
    the way out if it still runs."""
    port = RunningSmtp(SmtpSink()).port  # a free port
    server = subprocess.Popen(
        newsletter_command("serve", "--port", str(port)),
        cwd=workspace,
        env=environment(NEWSLETTER_TRANSPORT=transport),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz").status_code == 200
        except httpx.TransportError:
            return server.poll() is not None

    try:
        wait_for(up, "serve listening")
        yield server, base
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_a_server_told_to_stop_sends_the_confirmations_still_waiting(workspace):  # noqa: F811
    """SIGTERM (a deploy, a restart) right after the form answered: the emails still go, then the server exits."""
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN)
    with RunningSmtp(SmtpSink(delay=2.0)) as mail, serve_process(workspace, mail.dsn()) as (server, base):
        # (the mail server takes two seconds a message)
        answers = [sign_up(base, f"partante{i}@example.org") for i in range(5)]
        received_when_stopped = len(mail.sink.received)
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=120)
    assert [a.status_code for a in answers] == [200] * 5
    assert received_when_stopped < 5  # some were still waiting when it was told to stop
    assert server.returncode == -signal.SIGTERM, errors  # uvicorn stops gracefully, then exits by the signal
    assert "Traceback" not in errors
    assert sorted(r.recipients[0] for r in mail.sink.received) == [f"partante{i}@example.org" for i in range(5)]
    store = open_store(Workspace.discover(workspace))  # and recorded as sent: no later start sends them again
    assert [events_of(store, f"partante{i}@example.org") for i in range(5)] == [
        ["signup-requested", "confirmation-sent"]
    ] * 5
    store.close()


def test_a_server_killed_before_its_confirmations_went_sends_them_when_it_runs_again(workspace):  # noqa: F811
    """SIGKILL after the form answered and before the mail server took the emails: the requests are recorded,
    and the server, run again, sends each confirmation once."""
    import socket

    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN)
    silent = socket.socket()  # a mail server that takes connections and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    with silent, serve_process(workspace, f"smtp://127.0.0.1:{silent.getsockname()[1]}?tls=none") as (server, base):
        answers = [sign_up(base, f"patiente{i}@example.org") for i in range(5)]
        server.kill()
        server.communicate(timeout=60)
    store = open_store(Workspace.discover(workspace))
    assert [events_of(store, f"patiente{i}@example.org") for i in range(5)] == [["signup-requested"]] * 5
    with store.transaction() as connection:  # two minutes ago: no longer the killed server's own to send
        connection.execute(
            events.update()
            .where(events.c.kind == "signup-requested")
            .values(at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
        )
    with RunningSmtp(SmtpSink()) as mail, serve_process(workspace, mail.dsn()) as (server, base):
        wait_for(lambda: len(mail.sink.received) >= 5, "the confirmations sent again")
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=120)
    assert [a.status_code for a in answers] == [200] * 5
    assert sorted(r.recipients[0] for r in mail.sink.received) == [f"patiente{i}@example.org" for i in range(5)]
    assert "Traceback" not in errors
    for i in range(5):
        assert events_of(store, f"patiente{i}@example.org") == ["signup-requested", "confirmation-sent"]
        assert status(store, f"patiente{i}@example.org") == "pending"
    (link,) = confirmation_links(mail.sink, "patiente0@example.org")
    assert link.startswith("https://bulletin.crdbsl.org/confirm/")  # newsletter.toml's base_url
    store.close()


def test_serve_removes_the_sign_ups_never_confirmed_when_newsletter_toml_asks(workspace):  # noqa: F811
    """[serve] purge_pending_after: a running server removes, as purge-pending does, the sign-ups whose last
    request is older than that, and nobody else."""
    from newsletter.store import SignupRequest, memberships

    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + OPEN + '\n[serve]\npurge_pending_after = "7d"\n')
    store = open_store(Workspace.discover(workspace))
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", connection=connection)
        requests = [SignupRequest(list_id, f"{n}@example.org", None, {}) for n in ("oubliee", "attendue")]
        old = store.request_signups(requests, every=dt.timedelta(0), connection=connection)[0].subscriber_id
        eight_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
        connection.execute(events.update().where(events.c.subscriber_id == old).values(at=eight_days_ago))
        connection.execute(
            memberships.update().where(memberships.c.subscriber_id == old).values(updated_at=eight_days_ago)
        )
    with RunningSmtp(SmtpSink()) as mail, serve_process(workspace, mail.dsn()) as (server, _):
        wait_for(lambda: status(store, "oubliee@example.org") is None, "the old sign-up removed")
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=120)
    assert status(store, "attendue@example.org") == "pending"  # asked a moment ago
    assert store.person("oubliee@example.org") is None  # nothing else was held about her: gone whole
    assert "oubliee" not in errors  # the log counts, never names
    store.close()


def test_purge_pending_after_must_be_a_duration(workspace):  # noqa: F811
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + '\n[serve]\npurge_pending_after = "une semaine"\n')
    result = run("subscribers", "pending", "--list", "alliances")
    assert result.exit_code != 0 and "purge_pending_after" in result.output and "une semaine" in result.output


def age_requests(store, email: str, minutes: int) -> None:
    """Move a person's events `minutes` into the past, as if that much time had gone by (no sleeping)."""
    with store.transaction() as connection:
        rows = connection.execute(
            sa.select(events.c.id, events.c.at)
            .join(subscribers, subscribers.c.id == events.c.subscriber_id)
            .where(subscribers.c.email_key == email)
        ).all()
        for row in rows:
            at = row.at if row.at.tzinfo else row.at.replace(tzinfo=dt.UTC)
            connection.execute(
                events.update().where(events.c.id == row.id).values(at=at - dt.timedelta(minutes=minutes))
            )


def test_a_confirmation_link_never_subscribes_again_after_an_unsubscribe(site):
    """Confirm, leave by one-click, then the same confirmation link again: still unsubscribed, the invalid page."""
    base, store, sink = site
    sign_up(base, "partante@example.org")
    wait_for_mail(sink, 1)
    (link,) = confirmation_links(sink, "partante@example.org")
    assert httpx.post(link).status_code == 200 and status(store, "partante@example.org") == "subscribed"
    again = httpx.post(link)  # twice, nothing changed since: the same "done" page
    assert again.status_code == 200 and "recevra Le bulletin des Alliances" in html.unescape(again.text)
    unsubscribe = TokenSigner(SECRET).sign(_id(store, "partante@example.org"), "alliances")
    left = httpx.post(
        f"{base}/u/{unsubscribe}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert left.status_code == 200 and status(store, "partante@example.org") == "unsubscribed"
    reference = httpx.post(f"{base}/confirm/garbage")
    for answer in (httpx.post(link), httpx.get(link)):
        assert (answer.status_code, answer.text) == (400, reference.text)
    assert status(store, "partante@example.org") == "unsubscribed"
    assert events_of(store, "partante@example.org").count("subscribed") == 1


def test_a_confirmation_link_confirms_its_own_request_only(site):
    """A second request (once the limit allows it) brings a second link; the first one no longer confirms."""
    base, store, sink = site
    sign_up(base, "deux-fois@example.org")
    wait_for_mail(sink, 1)
    age_requests(store, "deux-fois@example.org", 11)
    sign_up(base, "deux-fois@example.org")
    wait_for_mail(sink, 2)
    first, second = confirmation_links(sink, "deux-fois@example.org")
    assert httpx.post(first).status_code == 400 and status(store, "deux-fois@example.org") == "pending"
    assert httpx.post(second).status_code == 200 and status(store, "deux-fois@example.org") == "subscribed"


def test_a_link_sent_before_links_named_their_request_confirms_only_a_sign_up_still_waiting(site):
    """Links in the emails of the version before (subscriber, minute and list, no request) still confirm the
    latest request while nothing has changed since it, never once the person confirmed and left."""
    from newsletter.tokens import _CONFIRM_DOMAIN

    base, store, sink = site
    sign_up(base, "ancien-lien@example.org")
    wait_for_mail(sink, 1)
    minute = int(dt.datetime.now(dt.UTC).timestamp() // 60)
    payload = f"{_id(store, 'ancien-lien@example.org')}.{minute}.alliances".encode()
    old = f"{base}/confirm/{TokenSigner(SECRET)._seal(payload, _CONFIRM_DOMAIN)}"
    assert httpx.get(old).status_code == 200
    assert httpx.post(old).status_code == 200 and status(store, "ancien-lien@example.org") == "subscribed"
    assert httpx.post(old).status_code == 200  # idempotent
    unsubscribe = TokenSigner(SECRET).sign(_id(store, "ancien-lien@example.org"), "alliances")
    assert httpx.post(f"{base}/u/{unsubscribe}", content=b"List-Unsubscribe=One-Click").status_code == 200
    assert httpx.post(old).status_code == 400 and status(store, "ancien-lien@example.org") == "unsubscribed"


THREE_OPEN = OPEN + "\n[lists.evenements]\nsubscribe = true\n\n[lists.ateliers]\nsubscribe = true\n"


def test_one_address_gets_one_confirmation_across_lists_then_fewer_and_fewer(workspace, monkeypatch, caplog):  # noqa: F811
    """Signing one address up to every open list in a row sends one confirmation; the next needs ten minutes
    since it, the one after twenty, whatever the list; the form's answer is the same every time; the log counts
    the requests held back, never names them."""
    caplog.set_level("INFO", logger="newsletter.store")
    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + THREE_OPEN)
    with RunningSmtp(SmtpSink()) as mail:
        monkeypatch.setenv("NEWSLETTER_TRANSPORT", mail.dsn())
        ws = Workspace.discover(workspace)
        store = open_store(ws)
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            ws.config.base_url = base

            def ask(slug: str, email: str = "cible@example.org") -> httpx.Response:
                answer = httpx.post(f"{base}/subscribe/{slug}", data={"email": email})
                answers.append((slug, answer.status_code, answer.text))
                return answer

            def requested() -> list[str]:
                return [
                    e["list"] for e in store.person("cible@example.org")["events"] if e["kind"] == "signup-requested"
                ]

            answers: list[tuple[str, int, str]] = []
            for slug in ("alliances", "evenements", "ateliers"):
                ask(slug)
            assert requested() == ["alliances"]
            age_requests(store, "cible@example.org", 9)
            ask("ateliers")
            assert requested() == ["alliances"]  # nine minutes: too soon
            age_requests(store, "cible@example.org", 2)
            ask("evenements")
            ask("ateliers")
            assert requested() == ["alliances", "evenements"]  # ten minutes since the first: one more, not two
            age_requests(store, "cible@example.org", 11)
            ask("ateliers")
            assert requested() == ["alliances", "evenements"]  # the third needs twenty minutes since the second
            age_requests(store, "cible@example.org", 10)
            ask("ateliers")
            assert requested() == ["alliances", "evenements", "ateliers"]
            wait_for_mail(mail.sink, 3)
            wait_for(lambda: events_of(store, "cible@example.org").count("confirmation-sent") == 3, "recorded as sent")
            references = {
                slug: ask(slug, f"autre-{slug}@example.org").text for slug in ("alliances", "evenements", "ateliers")
            }
        store.close()
    # whatever became of it, the same answer as a stranger's to that list: the form tells nothing
    assert {(slug, code, text == references[slug]) for slug, code, text in answers} <= {
        (slug, 200, True) for slug in references
    }
    assert sum(r.recipients == ["cible@example.org"] for r in mail.sink.received) == 3
    assert "held back by their address's limit, no confirmation sent: 1" in caplog.text and "cible" not in caplog.text
