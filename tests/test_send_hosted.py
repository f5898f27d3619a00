"""`send` with Postmark's hosted unsubscribe, end to end: no `newsletter serve`, no base_url, no signing key.

A fake Postmark runs on a real HTTP server on 127.0.0.1 (uvicorn, tests/web_server.py) and answers the three calls
a send makes: the message stream (GET /message-streams/STREAM), its suppression dump, and /email/batch. Its
answers are shaped like Postmark's documented ones (message-streams-api, suppressions-api#suppression-dump,
batch-emails; see tests/transports/test_postmark_unsubscribe.py for the sources).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from dataclasses import dataclass, field

import pytest
from conftest import EXAMPLE_SLUG
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner
from web_server import serving

from newsletter.cli import app
from newsletter.errors import NewsletterError
from newsletter.sending.send import send
from newsletter.sending.wiring import open_store
from newsletter.workspace import Workspace

TOKEN = "pm-server-token-for-tests"
PLACEHOLDER = "{{{ pm:unsubscribe }}}"
ARCHIVE = "https://archive.crdbsl.org/bulletin"
MEMBERS = [
    ("marie@example.org", "Marie Côté"),
    ("francoise@example.org", "Françoise Légaré-Pelletier"),
    ("zoe@example.org", "Zoé Bœuf"),
    ("jean@example.org", ""),
]
LEFT = "zoe@example.org"  # unsubscribed through Postmark's page: on the stream's suppression list


@dataclass
class FakePostmark:
    """What Postmark would answer, and what it was sent."""

    handling: str = "Postmark"
    suppressed: list[str] = field(default_factory=lambda: [LEFT])
    batches: list[list[dict]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def stream(request: Request) -> JSONResponse:
            self.calls.append(f"GET {request.url.path}")
            if request.headers.get("X-Postmark-Server-Token") != TOKEN:
                return JSONResponse({"ErrorCode": 10, "Message": "Bad or missing API token"}, status_code=401)
            stream_id = request.path_params["stream"]
            return JSONResponse(
                {
                    "ID": stream_id,
                    "ServerID": 123456,
                    "Name": "Broadcast Stream",
                    "Description": None,
                    "MessageStreamType": "Broadcasts",
                    "CreatedAt": "2020-07-01T00:00:00-04:00",
                    "UpdatedAt": None,
                    "ArchivedAt": None,
                    "ExpectedPurgeDate": None,
                    "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": self.handling},
                }
            )

        async def dump(request: Request) -> JSONResponse:
            self.calls.append(f"GET {request.url.path}")
            return JSONResponse(
                {
                    "Suppressions": [
                        {
                            "EmailAddress": address,
                            "SuppressionReason": "ManualSuppression",
                            "Origin": "Recipient",
                            "CreatedAt": "2026-04-02T10:12:41-04:00",
                        }
                        for address in self.suppressed
                    ]
                }
            )

        async def batch(request: Request) -> JSONResponse:
            self.calls.append(f"POST {request.url.path}")
            messages = json.loads(await request.body())
            self.batches.append(messages)
            return JSONResponse(
                [
                    {
                        "ErrorCode": 0,
                        "Message": "OK",
                        "MessageID": str(uuid.uuid4()),
                        "SubmittedAt": "2026-04-02T10:15:00Z",
                        "To": message["To"],
                    }
                    for message in messages
                ]
            )

        return Starlette(
            routes=[
                Route("/message-streams/{stream}", stream),
                Route("/message-streams/{stream}/suppressions/dump", dump),
                Route("/email/batch", batch, methods=["POST"]),
            ]
        )


@pytest.fixture
def workspace(example_workspace, monkeypatch):
    """The example workspace without base_url, with archive_url, no signing key, four subscribed members."""
    monkeypatch.chdir(example_workspace)
    monkeypatch.setenv("NEWSLETTER_ASSET_BASE_URL", "https://bulletin.crdbsl.org/archive")
    for variable in (
        "NEWSLETTER_SECRET_KEY",
        "NEWSLETTER_TRANSPORT",
        "NEWSLETTER_DATABASE_URL",
        "NEWSLETTER_BASE_URL",
        "NEWSLETTER_ARCHIVE_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    config = example_workspace / "newsletter.toml"
    text = config.read_text().replace('base_url = "https://bulletin.crdbsl.org"', f'archive_url = "{ARCHIVE}"')
    assert "base_url =" not in text.replace("asset_base_url", "")
    config.write_text(text)
    rows = [("courriel", "nom"), *MEMBERS]
    (example_workspace / "subscribers").mkdir(exist_ok=True)
    (example_workspace / "subscribers" / "liste.csv").write_text("\n".join(f"{a},{b}" for a, b in rows) + "\n")
    assert cli("subscribers", "import", "subscribers/liste.csv", "--list", "alliances").exit_code == 0
    return example_workspace


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def dsn(base: str, unsubscribe: str) -> str:
    return f"postmark+api://{TOKEN}@{base.removeprefix('http://')}?stream=broadcast&unsubscribe={unsubscribe}"


def real_send(workspace, dsn_text: str):
    ws = Workspace.discover(workspace)
    return asyncio.run(send(ws, ws.issues_dir / EXAMPLE_SLUG, "alliances", dsn_text=dsn_text, dry_run=False))


def statuses(workspace) -> dict[str, str]:
    store = open_store(Workspace.discover(workspace))
    try:
        return {member.email: member.status for member in store.members(store.list_id("alliances"))}
    finally:
        store.close()


def test_a_real_send_through_postmarks_hosted_unsubscribe(workspace):
    fake = FakePostmark()
    with serving(fake.app()) as base:
        summary = real_send(workspace, dsn(base, "provider"))

    assert summary.counts["sent"] == 3 and summary.counts["failed"] == 0, summary
    assert fake.calls[:2] == ["GET /message-streams/broadcast", "GET /message-streams/broadcast/suppressions/dump"]
    assert fake.calls[2:] == ["POST /email/batch"]
    # Whoever left through Postmark's page was recorded before the audience was fixed, and got nothing.
    assert statuses(workspace)[LEFT] == "unsubscribed"
    sent = [message for batch in fake.batches for message in batch]
    assert sorted(message["To"].rsplit("<", 1)[-1].rstrip(">") for message in sent) == sorted(
        address for address, _ in MEMBERS if address != LEFT
    )
    for message in sent:
        assert f'href="{PLACEHOLDER}"' in message["HtmlBody"]
        assert PLACEHOLDER in message["TextBody"]
        assert not any(h["Name"].lower().startswith("list-unsubscribe") for h in message["Headers"])
        assert message["MessageStream"] == "broadcast"
        assert f"{ARCHIVE}/{EXAMPLE_SLUG}/" in message["HtmlBody"]  # view online: the published archive
        assert "/u/" not in message["HtmlBody"] and "/u/" not in message["TextBody"]  # no link to `serve`


def test_the_dry_run_says_the_mechanism(workspace):
    """The dry run asks nothing of Postmark; its JSON says which unsubscribe the messages carry."""
    fake = FakePostmark()
    with serving(fake.app()) as base:
        result = cli("send", EXAMPLE_SLUG, "--list", "alliances", "--json", "--transport", dsn(base, "provider"))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert document["unsubscribe"].startswith("Postmark's unsubscribe page and its List-Unsubscribe headers")
    sample = email.message_from_string(document["sample"], policy=email.policy.default)
    assert "List-Unsubscribe" not in sample and "List-Unsubscribe-Post" not in sample
    assert PLACEHOLDER in sample.get_body(("plain",)).get_content()
    assert f'href="{PLACEHOLDER}"' in sample.get_body(("html",)).get_content()
    assert fake.calls == []


def test_our_own_links_on_a_stream_postmark_manages_are_refused(workspace, monkeypatch):
    """unsubscribe=own with everything our links need (base_url, signing key), through a stream whose
    UnsubscribeHandlingType is Postmark: two links would go out, so send refuses in one line and sends nothing."""
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://bulletin.crdbsl.org")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "a-test-secret-key-of-sufficient-length")
    fake = FakePostmark(handling="Postmark")
    with serving(fake.app()) as base:
        result = cli("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", dsn(base, "own"))
        with pytest.raises(NewsletterError, match=r"Manage unsubscribes on your own"):
            real_send(workspace, dsn(base, "own"))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "unsubscribe=own: Postmark manages unsubscribes on Broadcasts stream 'broadcast'" in line
    assert "unsubscribe=provider" in line and TOKEN not in line
    assert fake.batches == [] and all(not call.startswith("POST") for call in fake.calls)
    assert statuses(workspace)[LEFT] == "subscribed"  # nothing was applied either


def test_without_base_url_our_own_links_are_still_refused(workspace):
    """As before: without unsubscribe=provider, the links need `newsletter serve`, hence base_url."""
    fake = FakePostmark()
    with serving(fake.app()) as base:
        result = cli("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", dsn(base, "own"))
    assert result.exit_code == 1
    assert "base_url is not set" in result.stderr and "unsubscribe=provider" in result.stderr
    assert fake.calls == []
