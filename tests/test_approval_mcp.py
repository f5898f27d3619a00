"""End to end, as issue 20 asks: an agent's `send` over MCP (the SDK's client, `newsletter mcp` on stdio) waits
for a person; the approval email in the outbox carries the banner, the buttons and the audience; its link, opened
in Chromium at 375 px on `newsletter serve`, approves it; the worker then sends to the list. A decline comes back
to the agent with its comment; an edit after the request voids it; forged, replayed and other-campaign tokens
change nothing. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_mcp import SLUG, connected, outbox
from test_mcp import workspace as mcp_workspace  # noqa: F401  (the fixture)
from typer.testing import CliRunner
from web_server import serving

from newsletter.cli import app
from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

SECRET = "a-secret-key-for-the-approval-tests"
APPROVERS = ("direction@crdbsl.org", "com@crdbsl.org")
ISSUE = """\
subject: "Le bulletin de février"
preheader: "Trois rendez-vous et un appel aux bénévoles."
lang: fr
sections:
  - type: heading
    text: "Bonjour %%name|à toutes et à tous%%"
  - type: text
    text: "Trois rendez-vous cet hiver."
"""


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


@pytest.fixture
def workspace(mcp_workspace, database_url, monkeypatch):  # noqa: F811
    """test_mcp's workspace (four subscribed) on this engine, with two approvers."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    config = mcp_workspace / "newsletter.toml"
    listed = ", ".join(f'"{a}"' for a in APPROVERS)
    config.write_text(config.read_text() + f"\n[approval]\napprovers = [{listed}]\n")
    result = CliRunner().invoke(app, ["subscribers", "import", "subscribers/liste.csv", "--list", "alliances"])
    assert result.exit_code == 0, result.output  # the list in this engine's database
    return mcp_workspace


@pytest.fixture
def server(workspace, monkeypatch):
    """`newsletter serve`'s app on 127.0.0.1, its URL the base_url of the agent's links."""
    current = Workspace.discover(workspace)
    store = open_store(current)
    with serving(create_app(current, store, TokenSigner(SECRET))) as url:
        monkeypatch.setenv("NEWSLETTER_BASE_URL", url)
        yield url
    store.close()


def environment(workspace, url: str) -> dict[str, str]:
    import os

    return {
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DATABASE_URL": os.environ["NEWSLETTER_DATABASE_URL"],
        "NEWSLETTER_BASE_URL": url,
    }


def messages(workspace) -> dict[str, email.message.EmailMessage]:
    return {
        path.name: email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for path in outbox(workspace)
    }


def approval_links(workspace, url: str) -> dict[str, str]:
    """The Approve link of each approval email in the outbox, by approver."""
    found = {}
    for name, message in messages(workspace).items():
        if "-approval-" in name:
            html = message.get_body(preferencelist=("html",)).get_content()
            link = re.search(rf'href="({re.escape(url)}/approve/[^"?]+)"', html)
            assert link, "no Approve button"
            found[str(message["To"])] = link.group(1)
    return found


def members_mailed(workspace) -> list[str]:
    return [name for name in messages(workspace) if "-approval-" not in name]


async def draft_and_send(agent) -> dict:
    await agent.json("new_issue", slug=SLUG)
    assert (await agent.json("write_issue", issue=SLUG, yaml=ISSUE))["ok"] is True
    dry = await agent.json("send_dry_run", issue=SLUG, list="alliances")
    return await agent.json("send", issue=SLUG, list="alliances", confirmation=dry["confirmation"])


def in_thread(coroutine):
    """Run a coroutine to its end in a thread of its own: Playwright's sync API keeps an event loop running in
    this one once Chromium is started."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def worker(workspace) -> None:
    """`newsletter worker --until-idle`, a process of its own, into the outbox the agent's server sends to."""
    command = [sys.executable, "-m", "newsletter", "worker", "--until-idle", "--transport"]
    done = subprocess.run(
        [*command, f"outbox://{workspace / 'outbox'}"], cwd=workspace, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def test_an_agents_send_waits_for_a_person_who_approves_it_on_a_phone(workspace, server, tmp_path, chromium):
    async def ask():
        async with connected(workspace, tmp_path / "stderr.log", **environment(workspace, server)) as agent:
            tools = {tool.name: tool for tool in (await agent.session.list_tools()).tools}
            for name in ("send", "schedule"):
                assert "a person must approve it" in tools[name].description
                assert "direction@crdbsl.org" in tools[name].description
                assert tools[name].annotations.destructive_hint is True
            sent = await draft_and_send(agent)
            status = await agent.json("campaign_status", issue=SLUG, list="alliances")
            return sent, status

    sent, status = in_thread(ask())
    assert sent["status"] == "awaiting-approval" and sent["sent"] == 0
    assert status["approval"]["state"] == "awaiting-approval"
    assert status["approval"]["requested_by"] == "an agent, through `newsletter mcp`"
    assert members_mailed(workspace) == []
    links = approval_links(workspace, server)
    assert set(links) == set(APPROVERS)
    (request, *_) = [m for n, m in messages(workspace).items() if "-approval-" in n]
    text = request.get_body(preferencelist=("plain",)).get_content()
    assert "an agent, through `newsletter mcp` demande d'envoyer ce numéro" in text
    assert "4\u00a0personnes" in text or "4 personnes" in text

    page = chromium.new_page(viewport={"width": 375, "height": 800})
    try:
        page.goto(links["direction@crdbsl.org"])
        assert page.get_by_text("Le bulletin de février").first.is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.get_by_role("button", name="Approuver et envoyer").click()
        page.wait_for_load_state()
        assert "approuvé" in page.inner_text("main")
    finally:
        page.close()
    worker(workspace)
    assert len(members_mailed(workspace)) == 4

    async def look():
        async with connected(workspace, tmp_path / "stderr.log", **environment(workspace, server)) as agent:
            return await agent.json("campaign_status", issue=SLUG, list="alliances")

    status = in_thread(look())
    assert status["status"] == "finished" and status["sent"] == 4
    assert status["approval"]["state"] == "approved" and status["approval"]["by"] == ["direction@crdbsl.org"]

    # Replayed, or the other approver's now that it is decided: nothing changes, nothing more is sent.
    for link in links.values():
        answer = httpx.post(link, data={"decision": "approve"})
        assert answer.status_code >= 400
    worker(workspace)
    assert len(members_mailed(workspace)) == 4


def test_a_decline_comes_back_to_the_agent_and_forged_or_other_tokens_change_nothing(workspace, server, tmp_path):
    env = environment(workspace, server)

    async def ask():
        async with connected(workspace, tmp_path / "stderr.log", **env) as agent:
            return await draft_and_send(agent)

    first = in_thread(ask())
    links = approval_links(workspace, server)
    link = links["com@crdbsl.org"]
    payload = link.rsplit("/", 1)[1].split(".")[0]
    other_key = TokenSigner("another-key-of-enough-length")
    forged = [
        link[:-1] + ("A" if link[-1] != "A" else "B"),  # one character changed
        f"{server}/approve/{payload}.{other_key.sign_approval(1, 1, '0' * 16, 'x' * 43).split('.')[1]}",  # its MAC
        # genuine, but request 1 is not of that campaign, and the nonce and content are not its own
        f"{server}/approve/" + TokenSigner(SECRET).sign_approval(1, first["campaign"] + 1, "0" * 16, "n" * 43),
    ]
    for bad in forged:
        assert httpx.post(bad, data={"decision": "approve"}).status_code == 400
        assert httpx.get(bad).status_code == 400
    answer = httpx.post(link, data={"decision": "decline", "comment": "Ajoutez la date de l'assemblée."})
    assert answer.status_code == 200, answer.text

    async def look():
        async with connected(workspace, tmp_path / "stderr.log", **env) as agent:
            return await agent.json("campaign_status", issue=SLUG, list="alliances")

    status = in_thread(look())
    assert status["status"] == "declined"
    assert status["approval"] == {
        "state": "declined",
        "by": "com@crdbsl.org",
        "at": status["approval"]["at"],
        "comment": "Ajoutez la date de l'assemblée.",
    }
    assert httpx.post(links["direction@crdbsl.org"], data={"decision": "approve"}).status_code >= 400
    worker(workspace)
    assert members_mailed(workspace) == []


def test_an_edit_after_the_request_voids_it(workspace, server, tmp_path):
    env = environment(workspace, server)

    async def ask():
        async with connected(workspace, tmp_path / "stderr.log", **env) as agent:
            sent = await draft_and_send(agent)
            edited = ISSUE.replace("Trois rendez-vous cet hiver.", "Quatre rendez-vous cet hiver.")
            assert (await agent.json("write_issue", issue=SLUG, yaml=edited))["ok"] is True
            return sent

    in_thread(ask())
    link = approval_links(workspace, server)["direction@crdbsl.org"]
    answer = httpx.post(link, data={"decision": "approve"})
    assert "changé" in answer.text
    worker(workspace)
    assert members_mailed(workspace) == []

    async def look():
        async with connected(workspace, tmp_path / "stderr.log", **env) as agent:
            return await agent.json("campaign_status", issue=SLUG, list="alliances")

    status = in_thread(look())
    assert status["status"] == "declined" and status["approval"]["state"] == "voided"
