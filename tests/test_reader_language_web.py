"""A reader's language in `newsletter serve` (issue 23), on a real uvicorn server with the confirmation emails
through a real SMTP server, on SQLite and PostgreSQL: the sign-up form offers a bilingual list's languages and the
choice carries to the confirmation email, its pages and, once confirmed, the person; the preferences page speaks the
member's language and switches it."""

from __future__ import annotations

import html

import httpx
import pytest
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from test_signup import confirmation_links, serving_with_mail, sign_up, wait_for_mail

from newsletter.sending.wiring import open_store
from newsletter.subscribers import add
from newsletter.tokens import TokenSigner
from newsletter.workspace import Workspace

BILINGUAL = (
    '\n[lists.alliances]\nsubscribe = true\nlangs = ["fr", "en"]\n'
    'title = {fr = "Le bulletin des Alliances", en = "The Alliances Newsletter"}\n'
    'consent = {en = "Yes: send me the bulletin; I can leave at any time."}\n'
    '\n[lists.nouvelles]\nsubscribe = true\nlang = "fr"\n'
)


@pytest.fixture
def database_setting(database_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def site(workspace, monkeypatch):  # noqa: F811
    """serve over the example list, bilingual and open to sign-up, its mail going to a real SMTP server."""
    with serving_with_mail(workspace, monkeypatch, BILINGUAL) as served:
        yield served


def page_text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def lang_of(store, email: str) -> str | None:
    return store.person(email)["lang"]


def unsubscribe_url(base: str, store, email: str, slug: str = "alliances") -> str:
    return f"{base}/u/{TokenSigner(SECRET).sign(store.find_subscriber(email), slug)}"


def test_the_form_offers_the_list_s_languages_the_page_s_first(site):
    base, store, sink = site
    french = page_text(httpx.get(f"{base}/subscribe/alliances"))
    assert 'lang="fr"' in french and "<legend>Langue / Language</legend>" in french
    assert french.index('value="fr" checked') < french.index('value="en"')
    assert '<label for="nl-lang-fr" lang="fr">Français</label>' in french
    assert '<label for="nl-lang-en" lang="en">English</label>' in french
    assert 'action="/subscribe/alliances"' in french and "J'accepte de recevoir" in french  # the default, in French
    english = page_text(httpx.get(f"{base}/subscribe/alliances?lang=en"))
    assert '<html lang="en">' in english and "Email address" in english
    assert english.index('value="en" checked') < english.index('value="fr"')
    assert 'action="/subscribe/alliances?lang=en"' in english and "Yes: send me the bulletin" in english
    unknown = httpx.get(f"{base}/subscribe/alliances?lang=de")
    assert unknown.status_code == 200 and unknown.text == httpx.get(f"{base}/subscribe/alliances").text
    single = page_text(httpx.get(f"{base}/subscribe/nouvelles"))
    assert "Adresse courriel" in single and "Langue / Language" not in single and 'name="lang"' not in single


def test_a_sign_up_in_english_gets_everything_in_english_and_keeps_it(site):
    base, store, sink = site
    answer = sign_up(base, "ann@example.org", lang="en")  # posted from the French page
    assert answer.status_code == 200 and '<html lang="en">' in answer.text and "Thank you!" in page_text(answer)
    wait_for_mail(sink, 1)
    (received,) = sink.received
    assert received.message["Subject"] == "Confirm your subscription to The Alliances Newsletter"  # its title
    assert '<html lang="en">' in received.message.get_body(("html",)).get_content()
    assert "Confirm my subscription" in received.message.get_body(("plain",)).get_content()
    (request,) = [e for e in store.person("ann@example.org")["events"] if e["kind"] == "signup-requested"]
    assert request["detail"]["lang"] == "en"
    assert request["detail"]["consent"].startswith("J'accepte de recevoir")  # what the French page showed
    assert lang_of(store, "ann@example.org") is None  # not hers until she confirms

    (link,) = confirmation_links(sink, "ann@example.org")
    asked = httpx.get(link)
    assert asked.status_code == 200 and "Confirm the subscription of a•••@example.org" in page_text(asked)
    done = httpx.post(link)
    assert done.status_code == 200 and '<html lang="en">' in done.text and "Confirmed:" in page_text(done)
    assert lang_of(store, "ann@example.org") == "en"

    preferences = page_text(httpx.get(unsubscribe_url(base, store, "ann@example.org")))
    assert '<html lang="en">' in preferences and "Stop receiving The Alliances Newsletter" in preferences
    assert '<button type="submit" lang="fr">Le recevoir en français</button>' in preferences


def test_a_sign_up_on_the_english_page_with_french_chosen_and_without_a_choice(site):
    base, store, sink = site
    chose = httpx.post(f"{base}/subscribe/alliances?lang=en", data={"email": "fanny@example.org", "lang": "fr"})
    assert chose.status_code == 200 and '<html lang="fr">' in chose.text
    bare = httpx.post(f"{base}/subscribe/alliances?lang=en", data={"email": "sam@example.org"})
    assert bare.status_code == 200 and '<html lang="en">' in bare.text  # the page's language answers
    bad = httpx.post(f"{base}/subscribe/alliances?lang=en", data={"email": "pas une adresse", "lang": "fr"})
    assert bad.status_code == 400 and "does not look valid" in page_text(bad)
    wait_for_mail(sink, 2)
    subjects = {r.recipients[0]: r.message["Subject"] for r in sink.received}
    assert subjects == {
        "fanny@example.org": "Confirmez votre abonnement à Le bulletin des Alliances",
        "sam@example.org": "Confirmez votre abonnement à Le bulletin des Alliances",  # no choice: the list's first
    }
    requests = {
        email: next(e for e in store.person(email)["events"] if e["kind"] == "signup-requested")["detail"]
        for email in subjects
    }
    assert requests["fanny@example.org"]["consent"] == "Yes: send me the bulletin; I can leave at any time."
    assert requests["fanny@example.org"]["lang"] == "fr" and "lang" not in requests["sam@example.org"]
    httpx.post(confirmation_links(sink, "sam@example.org")[0])
    assert lang_of(store, "sam@example.org") is None  # no choice made: the list's first, whatever it becomes


def test_the_preferences_page_switches_a_member_s_language(site):
    base, store, sink = site
    url = unsubscribe_url(base, store, "marie@example.org")
    french = httpx.get(url)
    assert '<html lang="fr">' in french.text and "Ne plus recevoir" in page_text(french)
    assert '<input type="hidden" name="lang" value="en"><button type="submit" lang="en">Receive it in English' in (
        french.text
    )
    switched = httpx.post(url, data={"action": "lang", "lang": "en"}, headers={"User-Agent": "Navigateur"})
    text = page_text(switched)
    assert switched.status_code == 200 and '<html lang="en">' in switched.text
    assert '<p role="status" class="notice">Done: you will receive it in English from now on.</p>' in text
    assert "Stop receiving The Alliances Newsletter" in text and "Le recevoir en français" in text
    assert "Receive it in English" not in text
    assert lang_of(store, "marie@example.org") == "en"
    assert store.membership(store.find_subscriber("marie@example.org"), "alliances")[2] == "subscribed"
    again = httpx.post(url, data={"action": "lang", "lang": "en"})
    assert again.status_code == 200 and '<html lang="en">' in again.text
    (event,) = [e for e in store.person("marie@example.org")["events"] if e["kind"] == "updated"]
    assert (event["source"], event["list"]) == ("page", "alliances")
    assert event["detail"] == {"user_agent": "Navigateur", "lang": "en", "lang_before": None}

    # Every page after it speaks English: the unsubscribe, and its undo.
    gone = httpx.post(url, data={"action": "unsubscribe"})
    assert '<html lang="en">' in gone.text and "Done: m•••@example.org will no longer receive" in page_text(gone)
    back = httpx.post(url, data={"action": "lang", "lang": "fr"})
    text = page_text(back)
    assert '<html lang="fr">' in text and "C'est noté\u00a0: vous le recevrez désormais en français." in text
    assert "n'est plus abonné·e" in text and "Me réabonner" in text  # the page as it is: unsubscribed, undo offered
    assert lang_of(store, "marie@example.org") == "fr"


def test_a_switch_is_one_of_the_list_s_languages_by_a_genuine_token(site):
    base, store, sink = site
    url = unsubscribe_url(base, store, "marie@example.org")
    for value in ("de", "", "EN"):
        refused = httpx.post(url, data={"action": "lang", "lang": value})
        assert (refused.status_code, refused.text) == (400, "not a language of this list")
    forged = httpx.post(f"{base}/u/garbage", data={"action": "lang", "lang": "en"})
    assert forged.status_code == 400 and "n'est pas valide" in page_text(forged)
    assert lang_of(store, "marie@example.org") is None
    # A list of one language offers no switch, and takes none.
    add(store, "nouvelles", "marie@example.org", None)
    single = unsubscribe_url(base, store, "marie@example.org", "nouvelles")
    assert 'name="lang"' not in httpx.get(single).text
    assert httpx.post(single, data={"action": "lang", "lang": "en"}).status_code == 400


def test_every_page_of_a_member_is_in_their_language_one_click_too(site):
    base, store, sink = site
    add(store, "alliances", "ann@example.org", "Ann", lang="en")
    url = unsubscribe_url(base, store, "ann@example.org")
    assert '<html lang="en">' in httpx.get(url).text
    one_click = httpx.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and one_click.text.startswith("Done: a•••@example.org will no longer")
    # A language the list does not offer: its first.
    add(store, "nouvelles", "ann@example.org", None)
    assert '<html lang="fr">' in httpx.get(unsubscribe_url(base, store, "ann@example.org", "nouvelles")).text


def test_a_confirmation_sent_again_by_a_later_server_is_in_the_chosen_language(workspace):  # noqa: F811
    """A request whose email never went (recorded, two minutes old): the server that sends it at its start writes
    it in the language chosen with it."""
    import datetime as dt
    import signal

    from test_send import wait_for
    from test_signup import serve_process

    from newsletter.store import SignupRequest, events

    config = workspace / "newsletter.toml"
    config.write_text(config.read_text() + BILINGUAL)
    store = open_store(Workspace.discover(workspace))
    with store.transaction() as connection:
        list_id = store.ensure_list("alliances", connection=connection)
        asked = [
            SignupRequest(list_id, "ann@example.org", None, {}, "en"),
            SignupRequest(list_id, "fanny@example.org", None, {}),
        ]
        store.request_signups(asked, every=dt.timedelta(0), connection=connection)
        two_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        connection.execute(events.update().where(events.c.kind == "signup-requested").values(at=two_minutes_ago))
    with RunningSmtp(SmtpSink()) as mail, serve_process(workspace, mail.dsn()) as (server, _):
        wait_for(lambda: len(mail.sink.received) >= 2, "the confirmations sent again")
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=120)
    assert "Traceback" not in errors
    subjects = {r.recipients[0]: r.message["Subject"] for r in mail.sink.received}
    assert subjects == {
        "ann@example.org": "Confirm your subscription to The Alliances Newsletter",
        "fanny@example.org": "Confirmez votre abonnement à Le bulletin des Alliances",
    }
    store.close()
