"""serve's /approve/{token}, as an approver meets it (issue 20): a real `send` with approvers makes the campaign
awaiting approval and writes the approval emails to the outbox; their links lead to a real server, on SQLite and
PostgreSQL; the worker then sends what was approved, and nothing else."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import re
from pathlib import Path

import httpx
import pytest
from conftest import EXAMPLE_SLUG
from test_send import SECRET, run
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from web_server import serving

from newsletter.approval import approval_of
from newsletter.cli.sending import who_asks
from newsletter.sending.wiring import open_store
from newsletter.store import CampaignStatus, Store, now
from newsletter.store.schema import approval_requests
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

APPROVERS = ["direction@crdbsl.org", "com@crdbsl.org"]
MEMBERS = {"marie@example.org", "francoise@example.org", "zoe@example.org", "jean@example.org"}
BANNER = "Approuver l'envoi"  # the banner's title (and the page's): the issue is in French
LINK = re.compile(r'href="([^"]+/approve/([^"?]+))"')


@pytest.fixture
def database_setting(database_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def served(workspace, monkeypatch):  # noqa: F811
    """The workspace with two approvers, its store, and serve's app on 127.0.0.1, its URL the links' base."""
    toml = workspace / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + f"\n[approval]\napprovers = {APPROVERS!r}\n".replace("'", '"'))
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
        monkeypatch.setenv("NEWSLETTER_BASE_URL", base)
        yield workspace, store, base
    store.close()


def outbox(workspace: Path) -> dict[str, email.message.EmailMessage]:
    folder = workspace / "build" / "outbox"
    return {
        file.name: email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
        for file in sorted(folder.glob("*.eml"))
    }


def recipient(message: email.message.EmailMessage) -> str:
    return message["To"].addresses[0].addr_spec


def ask(workspace: Path, *args: str) -> tuple[int, dict[str, str]]:
    """A real send that asks for approval: its campaign, and each approver's approval link from their email."""
    before = set(outbox(workspace))
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", *args)
    assert result.exit_code == 0, result.output
    links = {}
    for name, message in outbox(workspace).items():
        if name not in before:
            html = message.get_body(("html",)).get_content()
            approve = LINK.search(html)
            assert approve is not None and f'href="{approve.group(1)}?decision=decline"' in html
            links[recipient(message)] = approve.group(1)
    assert set(links) == set(APPROVERS)
    campaign_id = int(re.search(r"campaign (\d+)", result.output).group(1))
    return campaign_id, links


def state(store: Store, campaign_id: int) -> tuple:
    """What a decision may change: the campaign's status, its ledger, its requests' decisions."""
    row = store.campaign(campaign_id)
    assert row is not None
    requests = [(r.decision, r.used_at, r.comment) for r in store.approval_requests(campaign_id)]
    return row.status, store.counts(campaign_id), requests


def member_messages(workspace: Path) -> dict[str, email.message.EmailMessage]:
    return {recipient(m): m for m in outbox(workspace).values() if recipient(m) not in APPROVERS}


def shown(response: httpx.Response) -> str:
    """A page's text as read, its entities decoded (Jinja writes an apostrophe &#39;)."""
    return html.unescape(response.text)


def payload_of(token: str) -> str:
    """The signed text of an approval token: request . campaign . content . nonce."""
    import base64

    part = token.partition(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


def viewed(store: Store, campaign_id: int) -> list[dict]:
    return [e.detail for e in store.campaign_events(campaign_id) if e.kind == "approval-viewed"]


def test_serve_imports_no_send_path():
    """`newsletter serve` decides without the send path: the app brings in only the frozen content of sending/."""
    import subprocess
    import sys

    code = "import sys, newsletter.web.app; print(sorted(m for m in sys.modules if m.startswith('newsletter.sending')))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "['newsletter.sending', 'newsletter.sending.frozen']"


def test_the_page_shows_what_is_asked_and_a_get_decides_nothing(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    before = state(store, campaign_id)
    assert before[0] == CampaignStatus.AWAITING_APPROVAL
    row = store.campaign(campaign_id)

    page = httpx.get(links["direction@crdbsl.org"])
    text = shown(page)
    assert page.status_code == 200 and '<html lang="fr">' in text
    # Who asks, the list, how many people now (the list's four subscribed), when, as the email's banner said.
    asker = who_asks()  # the terminal's user and host, whose `send` asked
    assert BANNER in text and f"{asker} demande d'envoyer ce numéro à la liste" in text
    assert "4\u00a0personnes, dès qu'il sera approuvé" in text
    assert f"Objet\u00a0: {row.subject}" in text and "De\u00a0: " in text and "Cette demande expire le" in text
    assert text.index('value="approve"') < text.index('value="decline"') and "autofocus" not in text
    assert 'name="comment"' in text and 'maxlength="2000"' in text
    assert "<style" not in text and "https://" not in text.split("</head>")[0]  # page.css only

    # The email's Decline button: the decline form first, its comment focused.
    declining = httpx.get(links["com@crdbsl.org"] + "?decision=decline")
    assert declining.status_code == 200 and "autofocus" in shown(declining)
    assert shown(declining).index('value="decline"') < shown(declining).index('value="approve"')

    assert state(store, campaign_id) == before  # mail scanners prefetch links: a GET never decides
    views = viewed(store, campaign_id)
    assert [v["by"] for v in views] == ["direction@crdbsl.org", "com@crdbsl.org"]
    requests = {r.approver: r.id for r in store.approval_requests(campaign_id)}
    assert [v["request"] for v in views] == [requests["direction@crdbsl.org"], requests["com@crdbsl.org"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", v["ip_hash"]) for v in views)
    assert "127.0.0.1" not in str(views)
    assert approval_of(store, campaign_id)["state"] == "awaiting-approval"


def test_approve_starts_the_campaign_a_replay_changes_nothing_and_the_worker_sends_to_the_list(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    link = links["direction@crdbsl.org"]

    approved = httpx.post(link, data={"decision": "approve"})
    assert approved.status_code == 200 and "C'est approuvé" in shown(approved)
    assert 'value="approve"' not in shown(approved)  # decided: no form any more
    assert store.campaign(campaign_id).status == CampaignStatus.RUNNING
    assert store.counts(campaign_id)["pending"] == 4  # its audience fixed at the approval
    assert {d.email for d in store.pending(campaign_id, 10)} == MEMBERS
    assert approval_of(store, campaign_id)["by"] == ["direction@crdbsl.org"]
    decided = [e for e in store.campaign_events(campaign_id) if e.kind == "approved"]
    assert len(decided) == 1 and re.fullmatch(r"[0-9a-f]{32}", decided[0].detail["ip_hash"])

    # The same link again, and the other approver's: nothing changes.
    after = state(store, campaign_id)
    replayed = httpx.post(link, data={"decision": "approve"})
    assert replayed.status_code == 409 and "déjà répondu" in shown(replayed)
    other = httpx.post(links["com@crdbsl.org"], data={"decision": "decline"})
    assert other.status_code == 409 and "n'est plus ouverte" in shown(other) and "en cours" in shown(other)
    assert state(store, campaign_id) == after
    again = httpx.get(link)  # still genuine: it says where things stand, and offers nothing
    assert again.status_code == 200 and "déjà répondu" in shown(again) and 'value="approve"' not in shown(again)

    assert run("worker", "--until-idle").exit_code == 0
    sent = member_messages(workspace)
    assert set(sent) == MEMBERS
    for message in sent.values():
        assert BANNER not in message.get_body(("html",)).get_content()
        assert not str(message["Subject"]).startswith("[À approuver]")
    assert store.campaign(campaign_id).status == CampaignStatus.FINISHED


def test_a_forged_token_changes_nothing(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    link = links["direction@crdbsl.org"]
    token = link.rpartition("/")[2]
    before = state(store, campaign_id)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    forged = [
        token[:i] + alphabet[(alphabet.index(token[i]) + 1) % len(alphabet)] + token[i + 1 :]
        for i in (0, len(token) // 3, token.index(".") + 1, len(token) - 1)
        if token[i] != "."
    ]
    signed = payload_of(token).split(".")
    other_key = TokenSigner("another-key-of-sufficient-length")
    forged.append(other_key.sign_approval(int(signed[0]), int(signed[1]), signed[2], signed[3]))
    for fake in forged:
        url = f"{base}/approve/{fake}"
        refused = httpx.get(url)
        assert refused.status_code == 400 and "n'est pas valide" in shown(refused), fake
        assert httpx.post(url, data={"decision": "approve"}).status_code == 400
        assert httpx.post(url, data={"decision": "decline"}).status_code == 400
    assert state(store, campaign_id) == before
    assert viewed(store, campaign_id) == []  # nothing recorded for a forged link


def test_another_campaigns_request_swapped_in_changes_nothing(served):
    workspace, store, base = served
    first, first_links = ask(workspace)
    issue = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace("Prochaines étapes", "Les prochaines étapes"))
    second, links = ask(workspace)
    assert second != first and store.campaign(first).status == CampaignStatus.DECLINED  # voided by the new one
    first_requests = [r.id for r in store.approval_requests(first)]
    second_requests = {r.approver: r.id for r in store.approval_requests(second)}
    before = state(store, first), state(store, second)

    token = links["direction@crdbsl.org"].rpartition("/")[2]
    request, campaign, content, nonce = payload_of(token).split(".")
    assert int(request) == second_requests["direction@crdbsl.org"] and int(campaign) == second
    import base64

    def spelled(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    signer = TokenSigner(SECRET)  # signed by the key itself: the store still refuses what does not fit
    swapped = [
        # the first campaign's request in this token's text, its signature kept
        f"{spelled(f'{first_requests[0]}.{campaign}.{content}.{nonce}')}.{token.partition('.')[2]}",
        signer.sign_approval(first_requests[0], second, content, nonce),  # another campaign's request
        signer.sign_approval(first_requests[0], first, content, nonce),  # its campaign too: not its nonce
        signer.sign_approval(int(request), second, "0" * 16, nonce),  # other content
    ]
    for fake in swapped:
        url = f"{base}/approve/{fake}"
        assert httpx.get(url).status_code == 400, fake
        assert httpx.post(url, data={"decision": "approve"}).status_code == 400, fake
    assert viewed(store, first) == viewed(store, second) == []
    # The other approver's request with this one's nonce: only the store knows the nonces, so it is the decision
    # that is refused (open_token reads no nonce: the page would show that request's summary).
    other = signer.sign_approval(second_requests["com@crdbsl.org"], second, content, nonce)
    assert httpx.post(f"{base}/approve/{other}", data={"decision": "approve"}).status_code == 400
    assert (state(store, first), state(store, second)) == before


def test_an_expired_request_changes_nothing(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    with store.transaction() as connection:  # as if its 48 hours had passed
        connection.execute(
            approval_requests.update()
            .where(approval_requests.c.campaign_id == campaign_id)
            .values(expires_at=now() - dt.timedelta(hours=1))
        )
    before = state(store, campaign_id)
    page = httpx.get(links["direction@crdbsl.org"])
    assert page.status_code == 200 and "a expiré" in shown(page) and 'value="approve"' not in shown(page)
    refused = httpx.post(links["direction@crdbsl.org"], data={"decision": "approve"})
    assert refused.status_code == 410 and "a expiré" in shown(refused)
    assert state(store, campaign_id) == before
    assert run("worker", "--until-idle").exit_code == 0
    assert member_messages(workspace) == {}


def test_a_decline_and_its_comment_come_back_to_whoever_asked(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    comment = "Le titre est faux : il faut « Assemblée » et non « Assemble ». " + "x" * 2100
    declined = httpx.post(links["com@crdbsl.org"], data={"decision": "decline", "comment": comment})
    assert declined.status_code == 200 and "C'est refusé" in shown(declined)
    assert store.campaign(campaign_id).status == CampaignStatus.DECLINED
    where = approval_of(store, campaign_id)
    assert where["state"] == "declined" and where["by"] == "com@crdbsl.org"
    assert where["comment"] == comment[:2000]  # the textarea's maxlength, kept by the server too
    # The other approver comes too late.
    late = httpx.post(links["direction@crdbsl.org"], data={"decision": "approve"})
    assert late.status_code == 409 and "refusé" in shown(late)
    assert store.campaign(campaign_id).status == CampaignStatus.DECLINED
    assert run("worker", "--until-idle").exit_code == 0
    assert member_messages(workspace) == {}


def test_an_edit_after_the_request_voids_it(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    issue = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace("Prochaines étapes", "Les prochaines étapes"))
    changed = httpx.post(links["direction@crdbsl.org"], data={"decision": "approve"})
    assert changed.status_code == 409 and "a changé depuis cette demande" in shown(changed)
    assert 'value="approve"' not in shown(changed)
    assert store.campaign(campaign_id).status == CampaignStatus.DECLINED
    assert approval_of(store, campaign_id)["state"] == "voided"
    assert store.counts(campaign_id)["pending"] == 0
    assert run("worker", "--until-idle").exit_code == 0
    assert member_messages(workspace) == {}


def test_a_post_that_is_no_decision_changes_nothing(served):
    workspace, store, base = served
    campaign_id, links = ask(workspace)
    link = links["direction@crdbsl.org"]
    before = state(store, campaign_id)
    assert httpx.post(link, data={"decision": "yes"}).status_code == 400
    assert httpx.post(link, data={}).status_code == 400
    assert httpx.post(link, data={"decision": "approve", "comment": "x" * 20000}).status_code == 413
    assert state(store, campaign_id) == before


def test_approve_on_a_phone_in_chromium_then_the_worker_sends_to_the_list(served, chromium_installed):
    """The director opens the email's Approve and send on a phone (375 px), reads the summary, approves."""
    from playwright.sync_api import sync_playwright

    from newsletter.preview import block_remote_requests, launch_chromium

    workspace, store, base = served
    campaign_id, links = ask(workspace)
    link = links["direction@crdbsl.org"]
    assert link.startswith(f"{base}/approve/")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 375, "height": 740})
        block_remote_requests(page)
        page.goto(link)
        assert page.get_by_role("heading", name=BANNER).is_visible()
        assert page.get_by_text("4 personnes").is_visible()
        assert page.evaluate("document.querySelector('link[rel=stylesheet]').sheet !== null")  # page.css found
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the phone
        approve = page.get_by_role("button", name="Approuver et envoyer")
        assert approve.is_visible() and approve.bounding_box()["height"] >= 40  # a thumb's target
        approve.click()
        page.wait_for_selector("text=C'est approuvé")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.get_by_role("button", name="Approuver et envoyer").count() == 0
        browser.close()
    assert store.campaign(campaign_id).status == CampaignStatus.RUNNING
    assert run("worker", "--until-idle").exit_code == 0
    assert set(member_messages(workspace)) == MEMBERS
