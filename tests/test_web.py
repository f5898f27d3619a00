"""`newsletter serve`'s app on a real uvicorn server: unsubscribe pages, one-click POSTs, archive, webhooks."""

from __future__ import annotations

import ast
import asyncio
import base64
import html
import http.client
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import EXAMPLE_SLUG, PNG_1x1
from test_send import SECRET, run, send_json
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from test_tokens import one_character_changes
from web_server import serving

from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

GMAIL_BODY = b"List-Unsubscribe=One-Click"


@pytest.fixture
def database_setting(database_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def site(workspace):  # noqa: F811
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        yield base, store
    store.close()


def ids(store):
    return {m.email: m.subscriber_id for m in store.members(store.list_id("alliances"))}


def status(store, email):
    return {m.email: m.status for m in store.members(store.list_id("alliances"))}[email]


def token_for(store, email, key=SECRET):
    return TokenSigner(key).sign(ids(store)[email], "alliances")


def test_get_shows_a_page_and_changes_nothing(site):
    base, store = site
    response = httpx.get(f"{base}/u/{token_for(store, 'marie@example.org')}")
    assert response.status_code == 200
    assert 'lang="fr"' in response.text and "Me désabonner" in response.text
    assert "m•••@example.org" in response.text and "marie@" not in response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert status(store, "marie@example.org") == "subscribed"


def test_one_click_exactly_as_gmail_sends_it(site):
    base, store = site
    url = f"{base}/u/{token_for(store, 'marie@example.org')}"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Mozilla/5.0 (Google)"}
    response = httpx.post(url, content=GMAIL_BODY, headers=headers, follow_redirects=False)
    assert response.request.headers["content-length"] == "26" and "cookie" not in response.request.headers
    assert response.status_code == 200 and "C'est fait" in html.unescape(response.text)
    assert status(store, "marie@example.org") == "unsubscribed"
    again = httpx.post(url, content=GMAIL_BODY, headers=headers)  # idempotent
    assert again.status_code == 200
    history = store.history(ids(store)["marie@example.org"])
    assert [(e["kind"], e["source"]) for e in history][-1] == ("unsubscribed", "one-click")
    assert sum(e["kind"] == "unsubscribed" for e in history) == 1
    assert history[-1]["detail"]["user_agent"] == "Mozilla/5.0 (Google)"


def test_one_click_as_multipart_as_rfc_8058_prefers(site):
    base, store = site
    response = httpx.post(
        f"{base}/u/{token_for(store, 'zoe@example.org')}", files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200 and status(store, "zoe@example.org") == "unsubscribed"


def test_the_page_button_then_undo(site):
    base, store = site
    url = f"{base}/u/{token_for(store, 'jean@example.org')}"
    assert httpx.post(url, data={"action": "unsubscribe"}).status_code == 200
    assert status(store, "jean@example.org") == "unsubscribed"
    assert "Me réabonner" in httpx.get(url).text
    response = httpx.post(url, data={"action": "resubscribe"})
    assert response.status_code == 200 and "de nouveau abonné" in response.text
    assert status(store, "jean@example.org") == "subscribed"
    kinds = [(e["kind"], e["source"]) for e in store.history(ids(store)["jean@example.org"])]
    assert kinds[-2:] == [("unsubscribed", "page"), ("subscribed", "page")]


def test_undo_never_resubscribes_a_bounced_address(site):
    base, store = site
    url = f"{base}/u/{token_for(store, 'rebond@example.org')}"
    assert "Me réabonner" not in httpx.get(url).text
    response = httpx.post(url, data={"action": "resubscribe"})
    assert "n'est plus abonné" in html.unescape(response.text) and "de nouveau" not in response.text
    assert status(store, "rebond@example.org") == "bounced"


@pytest.mark.parametrize(
    "make",
    [
        lambda store: token_for(store, "marie@example.org")[:-3],  # truncated
        lambda store: token_for(store, "marie@example.org", key="another-key-of-enough-length"),  # forged
        lambda store: TokenSigner(SECRET).sign(ids(store)["marie@example.org"], "another-list"),  # unknown list
        lambda store: TokenSigner(SECRET).sign(99999, "alliances"),  # unknown subscriber
        lambda store: "x" * 40,
    ],
)
def test_bad_tokens_get_the_same_400_and_change_nothing(site, make):
    base, store = site
    response = httpx.post(
        f"{base}/u/{make(store)}", content=GMAIL_BODY, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400
    reference = httpx.get(f"{base}/u/garbage")
    assert response.text == reference.text  # nothing tells the reasons apart
    assert status(store, "marie@example.org") == "subscribed"


def test_other_spellings_of_a_genuine_token_are_refused(site):
    """Every 1-character change that decodes to the same bytes (base64's spare bits, skipped characters)."""
    base, store = site
    token = token_for(store, "marie@example.org")

    def decoded(text):
        try:
            return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in text.split(".")]
        except ValueError:
            return None

    same_bytes = {t for t in one_character_changes(token) if t != token and decoded(t) == decoded(token)}
    assert len(same_bytes) >= 10
    for spelling in sorted(same_bytes):
        response = httpx.post(f"{base}/u/{spelling}", content=GMAIL_BODY)
        assert response.status_code in (400, 404, 429), spelling  # 404: a "/" made it another path
    assert status(store, "marie@example.org") == "subscribed"


def test_a_retired_key_still_verifies_after_rotation(workspace):  # noqa: F811
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    old = token_for(store, "marie@example.org")  # signed with SECRET before the rotation
    with serving(create_app(ws, store, TokenSigner("the-new-key-0123456789abcdef", (SECRET,)))) as base:
        assert httpx.post(f"{base}/u/{old}", content=GMAIL_BODY).status_code == 200
    with serving(create_app(ws, store, TokenSigner("the-new-key-0123456789abcdef"))) as base:  # retired for good
        assert httpx.post(f"{base}/u/{token_for(store, 'zoe@example.org')}", content=GMAIL_BODY).status_code == 400
    store.close()


def test_oversize_bodies_and_wrong_methods(site):
    base, store = site
    url = f"{base}/u/{token_for(store, 'marie@example.org')}"
    assert httpx.post(url, content=b"x" * 100_000).status_code == 413
    assert httpx.put(url, content=GMAIL_BODY).status_code == 405
    assert httpx.delete(url).status_code == 405
    assert status(store, "marie@example.org") == "subscribed"


def test_refusals_are_rate_limited_per_address_block_but_genuine_clicks_never(site):
    base, store = site
    codes = [httpx.get(f"{base}/u/bad{i}").status_code for i in range(35)]
    assert codes[:30] == [400] * 30 and codes[-1] == 429
    assert httpx.post(f"{base}/u/{token_for(store, 'marie@example.org')}", content=GMAIL_BODY).status_code == 200


def test_leave_takes_only_one_of_the_persons_lists_and_keeps_no_name_it_was_sent(workspace):  # noqa: F811
    """action=leave with a list she is not on, or any text, is refused and changes nothing (before, it left the
    token's list), and the names sent are kept nowhere: 300 POSTs of 15 KB names leave the caches as they were."""
    import random
    import string

    from newsletter.subscribers import add

    ws = Workspace.discover(workspace)
    store = open_store(ws)
    add(store, "evenements", "marie@example.org", None)
    add(store, "ateliers", "jean@example.org", None)  # a list, not hers
    url = f"/u/{token_for(store, 'marie@example.org')}"
    app = create_app(ws, store, TokenSigner(SECRET))
    with serving(app) as base, httpx.Client(base_url=base) as client:
        for _ in range(300):
            name = "".join(random.choices(string.ascii_letters + string.digits + "-", k=15_000))
            assert client.post(url, data={"action": "leave", "list": name}).status_code == 400
        assert list(app.state.site.lists) == ["alliances"]  # the token's list, and nothing the requests named
        refused = [
            client.post(url, data={"action": "leave", **fields}).status_code
            for fields in ({"list": "ateliers"}, {"list": "inconnue"}, {}, {"list": "Alliances"})
        ]
        assert refused == [400] * 4 and list(app.state.site.lists) == ["alliances"]
        memberships = {found.slug: state for found, state in store.memberships_of(ids(store)["marie@example.org"])}
        assert memberships == {"alliances": "subscribed", "evenements": "subscribed"}
        assert status(store, "jean@example.org") == "subscribed"
        assert store.count_members(store.list_id("ateliers"), "subscribed") == 1
        assert client.post(url, data={"action": "leave", "list": "evenements"}).status_code == 200  # hers: left
        memberships = {found.slug: state for found, state in store.memberships_of(ids(store)["marie@example.org"])}
        assert memberships == {"alliances": "subscribed", "evenements": "unsubscribed"}
    store.close()


def test_a_block_limiter_forgets_the_blocks_whose_window_emptied():
    from newsletter.web.common import BlockLimiter

    moment = [0.0]
    limiter = BlockLimiter(limit=2, window=60.0, clock=lambda: moment[0])
    for number in range(1000):  # a thousand blocks, once each
        assert not limiter.count(f"10.{number // 256}.{number % 256}.1")
    assert len(limiter.seen) == 1000
    assert [limiter.count("192.0.2.7") for _ in range(5)] == [False, False, True, True, True]
    assert len(limiter.seen["192.0.2.0/24"]) == 3  # a block hammering holds no more than one past its limit
    moment[0] = 61.0  # a window later, one more visitor: the others are forgotten
    assert not limiter.count("198.51.100.1")
    assert sorted(limiter.seen) == ["198.51.100.0/24"]
    assert [limiter.count("192.0.2.7") for _ in range(3)] == [False, False, True]  # its window emptied too
    assert not limiter.count(None) and not limiter.count("x" * 10_000)  # no address: one "unknown" block
    assert sorted(limiter.seen) == ["192.0.2.0/24", "198.51.100.0/24", "unknown"]


def test_webhooks_without_a_configured_secret_are_refused(site, monkeypatch):
    base, store = site
    for provider in ("postmark", "sendgrid", "mailgun", "ses", "resend"):
        monkeypatch.delenv(f"NEWSLETTER_WEBHOOK_SECRET_{provider.upper()}", raising=False)
        response = httpx.post(
            f"{base}/webhooks/{provider}", json={"RecordType": "Bounce", "Email": "marie@example.org"}
        )
        assert response.status_code == 401
    assert httpx.post(f"{base}/webhooks/nope", json={}).status_code == 404
    assert status(store, "marie@example.org") == "subscribed"


def test_archive_feed_and_health(site):
    base, store = site
    assert httpx.get(f"{base}/healthz").text == "ok"
    assert httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/").status_code == 404  # not sent yet
    assert send_json("--no-dry-run")[0].exit_code == 0
    index = httpx.get(f"{base}/archive/")
    assert "Retour sur le 2e Forum des Alliances" in index.text
    issue = httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/")
    assert issue.status_code == 200 and "Consulter les documents!" in issue.text and "%%" not in issue.text
    assert "style-src 'unsafe-inline'" in issue.headers["content-security-policy"]
    logo = httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/images/logo-alliances.png")
    assert logo.status_code == 200 and logo.content.startswith(b"\x89PNG")
    feed = ElementTree.fromstring(httpx.get(f"{base}/archive/feed.xml").content)
    entries = feed.findall("{http://www.w3.org/2005/Atom}entry")
    assert len(entries) == 1 and entries[0].find("{http://www.w3.org/2005/Atom}title").text.startswith("Retour")


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET path exactly as written (no client's normalisation of `..`, `//` or %2e)."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_archive_shows_what_was_sent_and_serves_no_file_outside_the_issue(site, workspace):  # noqa: F811
    """The review's probes: an issue edited after it was sent to name the store's own file (and /etc/passwd) as
    images; the archive still shows the page as sent and answers 404 to every way of climbing out of its folder."""
    base, store = site
    assert send_json("--no-dry-run")[0].exit_code == 0
    issue_file = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    text = issue_file.read_text(encoding="utf-8")
    (workspace / "subscribers" / "secret.db").write_bytes(b"SQLite format 3\0 every subscriber")
    edited = text.replace("Consulter les documents!", "Texte réécrit après l'envoi") + (
        "  - type: image\n    src: ../../subscribers/secret.db\n    alt: x\n"
        "  - type: image\n    src: /etc/passwd\n    alt: x\n"
    )
    issue_file.write_text(edited, encoding="utf-8")
    page = httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/")
    assert page.status_code == 200 and "Consulter les documents!" in page.text and "réécrit" not in page.text
    slug = EXAMPLE_SLUG
    for path in (
        f"/archive/{slug}/images/../../subscribers/secret.db",
        f"/archive/{slug}/images/%2e%2e/%2e%2e/subscribers/secret.db",
        f"/archive/{slug}/images/..%2f..%2fsubscribers%2fsecret.db",
        f"/archive/{slug}/images///etc/passwd",
        f"/archive/{slug}/images/%2fetc%2fpasswd",
        f"/archive/{slug}/images/../issue.yaml",
    ):
        status_code, body = raw_get(base, path)
        assert status_code == 404 and b"subscriber" not in body and b"root:" not in body, path
    assert raw_get(base, f"/archive/{slug}/images/logo-alliances.png")[0] == 200
    # A picture replaced after the send is not what readers got: not shown, the others still are.
    (workspace / "issues" / slug / "images" / "partenaire-crd-bsl.png").write_bytes(PNG_1x1)
    assert raw_get(base, f"/archive/{slug}/images/partenaire-crd-bsl.png")[0] == 404
    assert raw_get(base, f"/archive/{slug}/images/logo-alliances.png")[0] == 200


def test_the_feed_ids_come_from_newsletter_toml_never_from_host(workspace):  # noqa: F811
    assert send_json("--no-dry-run")[0].exit_code == 0
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    feeds = {}
    for base_url in ("https://bulletin.crdbsl.org", None):  # without base_url: ids from the publisher
        ws.config.base_url = base_url
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            feeds[base_url] = [
                httpx.get(f"{base}/archive/feed.xml", headers={"Host": host, "X-Forwarded-Proto": "https"}).content
                for host in ("bulletin.crdbsl.org", "evil.example")
            ]
    store.close()
    for base_url, (genuine, forged) in feeds.items():
        assert genuine == forged and b"evil" not in forged, base_url
        ids = [e.text for e in ElementTree.fromstring(forged).iter("{http://www.w3.org/2005/Atom}id")]
        assert len(ids) == 2
        assert all(i.startswith("https://bulletin.crdbsl.org/archive/" if base_url else "urn:uuid:") for i in ids)


def test_a_scheduled_issue_is_not_in_the_archive_before_it_goes(site):
    base, store = site
    assert run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--at", "2099-01-01T09:00Z").exit_code == 0
    assert httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/").status_code == 404
    assert EXAMPLE_SLUG not in httpx.get(f"{base}/archive/").text
    assert EXAMPLE_SLUG not in httpx.get(f"{base}/archive/feed.xml").text


def test_500_concurrent_one_clicks_are_all_recorded(workspace):  # noqa: F811
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    from newsletter.subscribers import add

    for number in range(500):
        add(store, "alliances", f"clic{number:03d}@example.org", None)
    tokens = [TokenSigner(SECRET).sign(i, "alliances") for e, i in ids(store).items() if e.startswith("clic")]

    async def click_all(base):
        limits = httpx.Limits(max_connections=500)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post(f"/u/{t}", content=GMAIL_BODY) for t in tokens))

    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        responses = asyncio.run(click_all(base))
    assert [r.status_code for r in responses] == [200] * 500
    left = [m.email for m in store.members(store.list_id("alliances"), "unsubscribed") if m.email.startswith("clic")]
    assert len(left) == 500
    store.close()


def test_serve_refuses_to_start_without_a_secret_key(workspace, monkeypatch):  # noqa: F811
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    result = run("serve")
    assert result.exit_code == 1 and "NEWSLETTER_SECRET_KEY is not set" in result.stderr


def test_signed_webhooks_through_the_server_change_memberships_and_replays_are_refused(site, monkeypatch):
    """A Mailgun permanent failure and a Postmark hard bounce, authenticated as each provider does, on the route."""
    import base64
    import hashlib
    import hmac
    import json
    import time
    from pathlib import Path

    base, store = site
    fixtures = Path(__file__).parent / "fixtures"
    event = json.loads((fixtures / "mailgun/webhooks/failed-permanent.json").read_text())
    event["recipient"] = "marie@example.org"
    event.pop("user-variables", None)
    stamp, token, key = str(int(time.time())), "a" * 50, "mailgun-signing-key"
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    mailgun = {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}
    monkeypatch.setenv("NEWSLETTER_WEBHOOK_SECRET_MAILGUN", key)
    response = httpx.post(f"{base}/webhooks/mailgun", json=mailgun)
    assert response.status_code == 200 and response.json()["changed"] == 1
    assert status(store, "marie@example.org") == "bounced"
    assert httpx.post(f"{base}/webhooks/mailgun", json=mailgun).status_code == 401  # the same token again
    mailgun["signature"]["signature"] = "0" * 64
    assert httpx.post(f"{base}/webhooks/mailgun", json=mailgun).status_code == 401

    postmark = json.loads((fixtures / "postmark/webhooks/bounce-hard.json").read_text())
    postmark["Email"] = "zoe@example.org"
    postmark.pop("Metadata", None)
    monkeypatch.setenv("NEWSLETTER_WEBHOOK_SECRET_POSTMARK", "hook:s3cret")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"hook:wrong").decode()}
    assert httpx.post(f"{base}/webhooks/postmark", json=postmark, headers=wrong).status_code == 401
    assert status(store, "zoe@example.org") == "subscribed"
    right = {"Authorization": "Basic " + base64.b64encode(b"hook:s3cret").decode()}
    assert httpx.post(f"{base}/webhooks/postmark", json=postmark, headers=right).status_code == 200
    assert status(store, "zoe@example.org") == "bounced"
    assert [e["source"] for e in store.history(ids(store)["zoe@example.org"])][-1] == "webhook"


def test_a_one_click_during_a_send_removes_that_subscriber_from_the_rest_of_it(site):
    """The campaign runner re-reads memberships before each batch: a POST in the middle of a send is honoured."""
    from sample_messages import example_campaign
    from test_campaign import ScriptedTransport

    from newsletter.sending.runner import Pacing, run

    base, store = site
    list_id = store.list_id("alliances")
    row = store.campaign(store.create_campaign(list_id, EXAMPLE_SLUG, "hash", "Sujet"))
    jean = token_for(store, "jean@example.org")

    def click_during_first_batch(batch_number):
        if batch_number == 1:
            assert httpx.post(f"{base}/u/{jean}", content=GMAIL_BODY).status_code == 200

    transport = ScriptedTransport(on_batch=click_during_first_batch)
    transport.max_batch = 1
    report = asyncio.run(run(store, transport, example_campaign(), row.id, list_id, Pacing(concurrency=1)))
    assert "jean@example.org" not in transport.delivered
    assert report.counts["skipped"] == 1 and report.counts["sent"] == 3


def test_pages_come_from_templates_the_workspace_may_override(workspace):  # noqa: F811
    override = workspace / "templates" / "pages" / "invalid.html.j2"
    override.parent.mkdir(parents=True)
    override.write_text(
        '{% extends "base.html.j2" %}{% block main %}<p>Lien expiré ({{ t(message) }})</p>{% endblock %}'
    )
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        refused = httpx.get(f"{base}/u/garbage")
        css = httpx.get(f"{base}/assets/page.css")
    store.close()
    assert refused.status_code == 400 and "Lien expiré (Ce lien" in refused.text
    assert '<link rel="stylesheet" href="/assets/page.css">' in refused.text and "<style" not in refused.text
    assert css.headers["content-type"].startswith("text/css") and "button{" in css.text
    assert "style-src 'self'" in refused.headers["content-security-policy"]


def mailgun_body(recipient: str, token: str, key: str, *, kind: str = "complained.json") -> bytes:
    """A Mailgun webhook as Mailgun posts it, signed with key: only timestamp + token are signed, not the event."""
    import hashlib
    import hmac
    import json
    import time
    from pathlib import Path

    event = json.loads((Path(__file__).parent / "fixtures" / "mailgun" / "webhooks" / kind).read_text())
    event["recipient"] = recipient
    event.pop("user-variables", None)
    stamp = str(int(time.time()))
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}
    ).encode()


def test_one_mailgun_token_is_acted_on_once_even_six_at_once_and_after_a_restart(workspace, monkeypatch):  # noqa: F811
    """Mailgun signs a token, not the event: six bodies under one signature, each naming another recipient, posted
    at once, change one membership; the same body after the server restarted over the same store, none."""
    from newsletter.subscribers import add

    key, token = "mailgun-signing-key", "b" * 50
    monkeypatch.setenv("NEWSLETTER_WEBHOOK_SECRET_MAILGUN", key)
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    people = [f"plainte{i}@example.org" for i in range(6)]
    for address in people:
        add(store, "alliances", address, None)
    bodies = [mailgun_body(address, token, key) for address in people]

    async def post_all(base):
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=6), timeout=60) as client:
            return await asyncio.gather(*(client.post("/webhooks/mailgun", content=body) for body in bodies))

    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        answers = asyncio.run(post_all(base))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 5
    (accepted,) = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert [status(store, address) for address in people].count("complained") == 1
    assert status(store, people[accepted]) == "complained"
    store.close()

    store = open_store(ws)  # a restart: another process's memory, the same store
    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        for body in (bodies[accepted], bodies[(accepted + 1) % 6]):
            assert httpx.post(f"{base}/webhooks/mailgun", content=body).status_code == 401
        fresh = mailgun_body(people[(accepted + 1) % 6], "c" * 50, key)  # another token: Mailgun's next event
        assert httpx.post(f"{base}/webhooks/mailgun", content=fresh).status_code == 200
    assert [status(store, address) for address in people].count("complained") == 2
    store.close()


def test_a_webhook_whose_events_fail_to_apply_leaves_its_token_to_the_retry(database_url):
    """The reservation is in the transaction that applies the events: a failure takes both back, and the
    provider's retry (the same token) is applied; a token goes once its provider's window has passed."""
    import datetime as dt

    import sqlalchemy as sa

    from newsletter.store import Store, now
    from newsletter.subscribers import add

    store = Store.open(database_url)
    add(store, "alliances", "a@example.org", None)
    keep = dt.timedelta(hours=9)
    unwritable = [("complained", "a@example.org", None, {"detail": object()})]  # its event cannot be written
    with pytest.raises((sa.exc.StatementError, TypeError)):  # as each driver reports it
        store.apply_webhook("mailgun", "t" * 50, unwritable, keep=keep)
    assert store.membership(ids(store)["a@example.org"], "alliances")[2] == "subscribed"  # taken back too
    complaint = [("complained", "a@example.org", None, {"provider": "mailgun"})]
    assert store.apply_webhook("mailgun", "t" * 50, complaint, keep=keep) == 1
    assert store.apply_webhook("mailgun", "t" * 50, complaint, keep=keep) is None
    assert store.apply_webhook("resend", "t" * 50, [], keep=keep) == 0  # each provider's tokens are its own
    assert store.apply_webhook("postmark", None, complaint, keep=keep) == 0  # no token: applied (no change left)
    assert store.forget_webhook_tokens(now() + keep - dt.timedelta(minutes=1)) == 0
    assert store.forget_webhook_tokens(now() + keep + dt.timedelta(minutes=1)) == 2
    store.close()


PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"


def imported_modules(file: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function, by its full name (a `from A import b` counts
    as A and as A.b, which is how a submodule is imported)."""
    package = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package up
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def route_modules() -> dict[str, Path]:
    """web/'s route modules: each defines routes(site)."""
    return {
        f"newsletter.web.{file.stem}": file
        for file in sorted((PACKAGE / "web").glob("*.py"))
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "routes" for node in ast.parse(file.read_bytes()).body
        )
    }


def test_routes_depend_on_the_site_never_on_the_app_or_each_other():
    routes = route_modules()
    assert {"newsletter.web.archive", "newsletter.web.subscribe", "newsletter.web.unsubscribe"} <= set(routes)
    # newsletter.web itself is the app: its __init__ imports app.py
    forbidden = {"newsletter.web", "newsletter.web.app", *routes}
    for name, file in routes.items():
        assert not imported_modules(file) & (forbidden - {name}), f"{name} imports the app or another route module"
    # Nor does what they share import them, or the circle is back.
    for shared in ("site", "common", "writes", "confirmations", "welcome"):
        assert not imported_modules(PACKAGE / "web" / f"{shared}.py") & forbidden, f"web/{shared}.py"


def test_only_serve_reaches_into_web():
    """What the CLI and the static archive share with serve (newsletter/pages.py) lives outside web/: outside it,
    only `newsletter serve` imports the app, and nothing else of web/."""
    for file in sorted(PACKAGE.rglob("*.py")):
        if file.parent.name == "web":
            continue
        web = {
            name for name in imported_modules(file) if name == "newsletter.web" or name.startswith("newsletter.web.")
        }
        assert web <= {"newsletter.web", "newsletter.web.create_app"}, f"{file.relative_to(PACKAGE)} imports {web}"
