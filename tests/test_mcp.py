"""`newsletter mcp` as a host runs it: a subprocess on stdio, driven by the official SDK's own client.

An agent drafts an issue, is shown located diagnostics, fixes them, checks, looks at the issue at phone width,
dry-runs a send and gets a confirmation code; sends without it, with a wrong one or with one for other content are
refused; the right one sends through the outbox exactly once. Every tool that takes a name refuses a path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import EXAMPLE_SLUG, PNG_1x1
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from typer.testing import CliRunner

from newsletter.agent import ConfirmationBook, SendBinding
from newsletter.cli import app
from newsletter.errors import NewsletterError
from newsletter.workspace import init_workspace

TOOLS = set(
    "list_issues new_issue read_issue write_issue add_image check_issue build_issue preview_issue list_lists "
    "subscribers_summary send_dry_run send send_test schedule campaign_status delivery_report".split()
)
MEMBERS = ["marie@example.org,Marie Côté", "zoe@example.org,Zoé Bœuf", "jean@example.org,", "luc@example.org,Luc"]
SLUG = "2025-02-hiver"
BROKEN = """\
subject: "Le bulletin de février : l'hiver au Bas-Saint-Laurent"
preheader: "Trois rendez-vous et un appel aux bénévoles."
lang: fr
sections:
  - type: heading
    text: "Bonjour %%name|à toutes et à tous%%"
  - type: encadre
    text: "Une section qui n'existe pas."
"""
FIXED = BROKEN.replace("type: encadre", "type: callout\n    title: Bénévoles")


def server_command() -> tuple[str, list[str]]:
    """`newsletter mcp`, as a host's configuration names it; the venv's script when there is one."""
    script = Path(sys.executable).with_name("newsletter")
    return (str(script), ["mcp"]) if script.is_file() else (sys.executable, ["-m", "newsletter", "mcp"])


@pytest.fixture
def workspace(example_workspace, monkeypatch):
    """The example workspace with a list `alliances` of four subscribed addresses, and an outbox of its own."""
    monkeypatch.chdir(example_workspace)
    for variable in ("NEWSLETTER_TRANSPORT", "NEWSLETTER_DATABASE_URL", "NEWSLETTER_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    (example_workspace / "subscribers").mkdir(exist_ok=True)
    (example_workspace / "subscribers" / "liste.csv").write_text("courriel,nom\n" + "\n".join(MEMBERS) + "\n")
    result = CliRunner().invoke(app, ["subscribers", "import", "subscribers/liste.csv", "--list", "alliances"])
    assert result.exit_code == 0, result.output
    return example_workspace


class Agent:
    """One connection to the server, with the calls a test makes; stray non-protocol lines on stdout are kept."""

    def __init__(self, session: ClientSession, stray: list):
        self.session = session
        self.stray = stray

    async def call(self, tool: str, **arguments) -> tuple[bool, list]:
        result = await self.session.call_tool(tool, arguments)
        return result.is_error, result.content

    async def json(self, tool: str, **arguments) -> dict:
        is_error, content = await self.call(tool, **arguments)
        assert not is_error, content[0].text
        return json.loads(content[-1].text)

    async def error(self, tool: str, **arguments) -> str:
        """The one-line error a tool answers with (it must answer with one)."""
        is_error, content = await self.call(tool, **arguments)
        assert is_error, f"{tool} did not refuse: {content[0].text[:300]}"
        line = content[0].text
        assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line, line
        return line


@contextlib.asynccontextmanager
async def connected(root: Path, stderr: Path, *, cwd: Path | None = None, **environment: str):
    """Start `newsletter mcp` in cwd (default root) as a host does, initialize, and yield an Agent."""
    command, args = server_command()
    if cwd is not None:
        args = [*args, "--workspace", str(root)]
    env = {"NEWSLETTER_TRANSPORT": f"outbox://{root / 'outbox'}", **environment}
    # PYTHONPATH too: the server then runs the code under test (a worktree's), not the venv's installed copy.
    for variable in ("NEWSLETTER_CHROMIUM", "PLAYWRIGHT_BROWSERS_PATH", "PYTHONPATH"):
        if variable in os.environ and variable not in env:
            env[variable] = os.environ[variable]
    stray: list = []

    async def on_message(message) -> None:
        if isinstance(message, Exception):  # a line on stdout that is not JSON-RPC
            stray.append(message)

    parameters = StdioServerParameters(command=command, args=args, cwd=str(cwd or root), env=env)
    with stderr.open("a", encoding="utf-8") as errlog:
        async with (
            stdio_client(parameters, errlog=errlog) as (read, write),
            ClientSession(read, write, message_handler=on_message) as session,
        ):
            await session.initialize()
            yield Agent(session, stray)
    assert stray == [], "the server wrote something other than the protocol on stdout"


def outbox(root: Path) -> list[Path]:
    return sorted((root / "outbox").glob("*.eml")) if (root / "outbox").is_dir() else []


def test_the_tools_their_schemas_resources_and_prompt(workspace, tmp_path):
    async def scenario():
        async with connected(workspace, tmp_path / "stderr.log") as agent:
            tools = {tool.name: tool for tool in (await agent.session.list_tools()).tools}
            assert set(tools) == TOOLS
            for tool in tools.values():
                assert len(tool.description) > 40, tool.name
                assert tool.input_schema["type"] == "object"
                for name in ("issue", "list", "confirmation", "slug", "yaml", "to", "at"):
                    if name in tool.input_schema["properties"]:
                        prop = tool.input_schema["properties"][name]
                        assert prop["type"] == "string" and prop["description"], (tool.name, name)
                        assert name in tool.input_schema["required"], (tool.name, name)
            width = tools["preview_issue"].input_schema["properties"]["width"]
            pixels, both = width["anyOf"]
            assert (pixels["type"], pixels["minimum"], pixels["maximum"]) == ("integer", 200, 2000)
            assert width["default"] == 600
            assert both == {"const": "both", "type": "string"}
            assert tools["preview_issue"].input_schema["properties"]["view"]["enum"] == ["html", "text"]
            assert tools["new_issue"].input_schema["required"] == ["slug"]
            assert tools["send"].input_schema["required"] == ["issue", "list", "confirmation"]
            assert tools["schedule"].input_schema["required"] == ["issue", "list", "at", "confirmation"]
            assert tools["send"].annotations.destructive_hint and tools["check_issue"].annotations.read_only_hint

            resources = {str(r.uri): r for r in (await agent.session.list_resources()).resources}
            issue_uri = f"newsletter://issues/{EXAMPLE_SLUG}/issue.yaml"
            assert {"newsletter://schema/issue.schema.json", "newsletter://docs/issue-format.md", issue_uri} <= set(
                resources
            )
            templates = (await agent.session.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == [
                "newsletter://issues/{slug}/issue.yaml",
                "newsletter://issues/{slug}/issue.{lang}.yaml",  # a translation (tests/test_bilingual_issue.py)
                "newsletter://issues/{slug}/images/{name}",
            ]
            schema = json.loads(
                (await agent.session.read_resource("newsletter://schema/issue.schema.json")).contents[0].text
            )
            assert {"subject", "lang", "sections"} <= set(schema["required"])
            format_text = (await agent.session.read_resource("newsletter://docs/issue-format.md")).contents[0].text
            assert format_text.startswith("## The issue format") and "`callout`" in format_text
            yaml_text = (await agent.session.read_resource(issue_uri)).contents[0].text
            assert yaml_text == (workspace / "issues" / EXAMPLE_SLUG / "issue.yaml").read_text(encoding="utf-8")

            prompts = (await agent.session.list_prompts()).prompts
            assert [p.name for p in prompts] == ["draft_issue"]
            prompt = await agent.session.get_prompt("draft_issue", {"slug": SLUG, "about": "l'hiver"})
            steps = prompt.messages[0].content.text
            steps_in_order = ("new_issue", "write_issue", "check_issue", "preview_issue", "send_dry_run", "send (")
            order = [steps.index(word) for word in steps_in_order]
            assert order == sorted(order)

    asyncio.run(scenario())


def test_draft_fix_check_dry_run_then_the_right_code_sends_exactly_once(workspace, tmp_path):
    async def scenario():
        async with connected(workspace, tmp_path / "stderr.log") as agent:
            created = await agent.json("new_issue", slug=SLUG)
            assert created["file"] == str(workspace / "issues" / SLUG / "issue.yaml")

            is_error, content = await agent.call("write_issue", issue=SLUG, yaml=BROKEN)
            assert is_error  # a host shows it as a failure, with the located diagnostics beside the line
            assert content[0].text == (
                f"error: issues/{SLUG}/issue.yaml was written with 1 error, the first at {created['file']}:7:11: "
                + json.loads(content[1].text)["errors"][0]["message"]
                + "; fix them and write again"
            )
            report = json.loads(content[1].text)
            assert report["ok"] is False
            (error,) = report["errors"]
            assert error["code"] == "unknown-section-type"
            assert (error["file"], error["line"], error["column"]) == (created["file"], 7, 11)
            assert error["path"] == "sections[1].type" and "callout" in error["message"]

            assert (await agent.json("write_issue", issue=SLUG, yaml=FIXED))["ok"] is True
            _, content = await agent.call("read_issue", issue=SLUG)
            assert content[0].text == FIXED
            checked = await agent.json("check_issue", issue=SLUG)
            assert checked["ok"] is True and checked["errors"] == []

            lists = await agent.json("list_lists")
            assert lists == {
                "lists": [{"slug": "alliances", "name": "Le bulletin des Alliances", "subscribed": 4, "segments": {}}]
            }
            summary = await agent.json("subscribers_summary", list="alliances")
            assert summary["counts"]["subscribed"] == 4 and "members" not in summary
            assert "marie@example.org" not in json.dumps(summary)

            dry = await agent.json("send_dry_run", issue=SLUG, list="alliances")
            assert dry["dry_run"] is True and dry["audience"] == 4
            assert dry["recipients"][0] == "marie@example.org"
            assert dry["sample"]["headers"]["Subject"].startswith("Le bulletin de février")
            assert dry["sample"]["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert "Marie Côté" in dry["sample"]["headers"]["To"]
            assert "Bonjour Marie Côté" in dry["sample"]["text"]
            code = dry["confirmation"]
            assert code and dry["confirmation_for"]["audience"] == 4

            refusals = [
                await agent.error("send", issue=SLUG, list="alliances"),
                await agent.error("send", issue=SLUG, list="alliances", confirmation=""),
                await agent.error("send", issue=SLUG, list="alliances", confirmation="0123456789"),
            ]
            assert "confirmation: Field required" in refusals[0]
            assert "no confirmation code" in refusals[1]
            assert "unknown" in refusals[2]

            await agent.json(
                "write_issue", issue=SLUG, yaml=FIXED.replace("Une section qui n'existe pas.", "Quatre rendez-vous.")
            )
            changed = await agent.error("send", issue=SLUG, list="alliances", confirmation=code)
            assert f"{SLUG} changed since the dry run" in changed and "send_dry_run again" in changed
            assert outbox(workspace) == []

            fresh = await agent.json("send_dry_run", issue=SLUG, list="alliances")
            assert fresh["confirmation"] != code and "Quatre rendez-vous." in fresh["sample"]["text"]
            sent = await agent.json("send", issue=SLUG, list="alliances", confirmation=fresh["confirmation"])
            assert (sent["status"], sent["sent"], sent["failed"], sent["pending"]) == ("finished", 4, 0, 0)
            assert sent["transport"] == f"outbox://{workspace / 'outbox'}"
            files = outbox(workspace)
            assert len(files) == 4

            again = await agent.error("send", issue=SLUG, list="alliances", confirmation=fresh["confirmation"])
            assert "was used" in again
            assert outbox(workspace) == files

            status = await agent.json("campaign_status", issue=SLUG, list="alliances")
            assert (status["campaign"], status["status"], status["sent"], status["pending"]) == (1, "finished", 4, 0)

            third = await agent.json("send_dry_run", issue=SLUG, list="alliances")  # the campaign is done
            resent = await agent.json("send", issue=SLUG, list="alliances", confirmation=third["confirmation"])
            assert (resent["campaign"], resent["sent"]) == (1, 4) and outbox(workspace) == files

            test = await agent.json("send_test", issue=SLUG, list="alliances", to="moi@example.org")
            assert test["sent"] == 1 and len(outbox(workspace)) == 5

    asyncio.run(scenario())
    stored = (workspace / "build" / "confirmations.json").read_text()
    assert "0123456789" not in stored and len(json.loads(stored)) == 3  # hashes of the three codes given
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()
    marie = next(p for p in outbox(workspace) if "marie@example.org" in p.read_text())
    assert "Quatre rendez-vous" in marie.read_text()


def test_a_code_covers_the_sender_the_reply_to_and_the_bytes_of_every_image(workspace, tmp_path):
    """The review's probe: a dry run, then a new From or a replaced picture, then send with the old code."""
    picture = base64.b64encode(PNG_1x1).decode()

    async def scenario():
        async with connected(workspace, tmp_path / "stderr.log") as agent:
            _, content = await agent.call("read_issue", issue=EXAMPLE_SLUG)
            original = content[0].text
            code = (await agent.json("send_dry_run", issue=EXAMPLE_SLUG, list="alliances"))["confirmation"]
            spoofed = original.replace(
                "\nlang: fr\n", '\nlang: fr\nfrom: "Your Bank Security <security@bank.example>"\n'
            )
            assert (await agent.json("write_issue", issue=EXAMPLE_SLUG, yaml=spoofed))["ok"] is True
            refused = await agent.error("send", issue=EXAMPLE_SLUG, list="alliances", confirmation=code)
            assert "changed since the dry run" in refused and outbox(workspace) == []

            await agent.json("write_issue", issue=EXAMPLE_SLUG, yaml=original)
            code = (await agent.json("send_dry_run", issue=EXAMPLE_SLUG, list="alliances"))["confirmation"]
            await agent.json("add_image", issue=EXAMPLE_SLUG, name="logo-alliances.png", data_base64=picture)
            refused = await agent.error("send", issue=EXAMPLE_SLUG, list="alliances", confirmation=code)
            assert "changed since the dry run" in refused and outbox(workspace) == []

            replying = original.replace("\nlang: fr\n", "\nlang: fr\nreply_to: redaction@crdbsl.org\n")
            await agent.json("write_issue", issue=EXAMPLE_SLUG, yaml=replying)
            dry = await agent.json("send_dry_run", issue=EXAMPLE_SLUG, list="alliances")
            assert dry["sample"]["headers"]["Reply-To"] == "redaction@crdbsl.org"  # the issue's, over [sender]'s
            sent = await agent.json("send", issue=EXAMPLE_SLUG, list="alliances", confirmation=dry["confirmation"])
            assert sent["sent"] == 4

            for smuggled in ("victim@example.org\r\nBcc: hidden@evil.example", "a@example.org, b@example.org"):
                refused = await agent.error("send_test", issue=EXAMPLE_SLUG, list="alliances", to=smuggled)
                assert "is not one email address" in refused

    asyncio.run(scenario())
    files = outbox(workspace)
    assert len(files) == 4 and all(b"Reply-To: redaction@crdbsl.org" in f.read_bytes() for f in files)
    assert not any(b"hidden@evil.example" in f.read_bytes() or b"bank.example" in f.read_bytes() for f in files)


def test_preview_at_phone_width_is_a_png_of_that_width(workspace, tmp_path, chromium_installed):
    from PIL import Image

    async def scenario():
        async with connected(workspace, tmp_path / "stderr.log", cwd=tmp_path) as agent:  # --workspace
            is_error, content = await agent.call("preview_issue", issue=EXAMPLE_SLUG, width=375)
            assert not is_error, content[0].text
            picture, text = content
            assert (picture.type, picture.mime_type) == ("image", "image/png")
            image = Image.open(io.BytesIO(base64.b64decode(picture.data)))
            assert image.format == "PNG" and image.width == 375 and image.height > 1000
            document = json.loads(text.text)
            assert (document["width"], document["viewport"], document["view"]) == (375, 375, "html")
            assert document["height"] == image.height
            assert document["recipient"] == "Camille Tremblay <camille.tremblay@example.org>"
            assert "sample" in document["note"]
            assert all(d["severity"] == "warning" for d in document["diagnostics"])

            # The text as sent: a line longer than 600 px (a URL) makes the picture wider, as the JSON says.
            _, content = await agent.call("preview_issue", issue=EXAMPLE_SLUG, width=600, view="text")
            document = json.loads(content[1].text)
            text_image = Image.open(io.BytesIO(base64.b64decode(content[0].data)))
            assert text_image.width == document["width"] > 600 and document["viewport"] == 600

            is_error, content = await agent.call("preview_issue", issue=EXAMPLE_SLUG, width="both")
            assert not is_error, content[0].text
            *pictures, text = content
            images = [Image.open(io.BytesIO(base64.b64decode(p.data))) for p in pictures]
            document = json.loads(text.text)
            assert [(i.width, i.height) for i in images] == [(p["width"], p["height"]) for p in document["previews"]]
            assert [i.width for i in images] == [p["viewport"] for p in document["previews"]] == [600, 375]
            assert [Path(p["png"]).name for p in document["previews"]] == [
                f"{EXAMPLE_SLUG}-600-html.png",
                f"{EXAMPLE_SLUG}-375-html.png",
            ]
            assert document["view"] == "html" and document["recipient"].startswith("Camille Tremblay")

    asyncio.run(scenario())


def test_failures_are_one_line_tool_errors_and_the_server_goes_on(workspace, tmp_path):
    async def scenario():
        async with connected(workspace, tmp_path / "stderr.log", NEWSLETTER_CHROMIUM="/nonexistent/chromium") as agent:
            missing_list = await agent.error("send_dry_run", issue=EXAMPLE_SLUG, list="nope")
            assert missing_list == "error: no list 'nope'; lists: alliances"
            assert "no list 'nope'" in await agent.error("subscribers_summary", list="nope")
            assert "NEWSLETTER_CHROMIUM=/nonexistent/chromium does not exist" in await agent.error(
                "preview_issue", issue=EXAMPLE_SLUG
            )
            bad = await agent.error("preview_issue", issue=EXAMPLE_SLUG, width="wide")
            assert bad.startswith(
                "error: bad arguments to preview_issue: width.constrained-int: Input should be a valid integer"
            )
            assert "Input should be 'both'" in bad
            assert "width.constrained-int: Input should be greater than or equal to 200" in await agent.error(
                "preview_issue", issue=EXAMPLE_SLUG, width=10
            )
            assert "bad arguments to read_issue: issue:" in await agent.error("read_issue", issue=["a"])
            assert "no issue 'missing'" in await agent.error("check_issue", issue="missing")
            assert "already exists" in await agent.error("new_issue", slug=EXAMPLE_SLUG)
            assert "bad arguments to new_issue: lang: Input should be 'fr' or 'en'" in await agent.error(
                "new_issue", slug="x", lang="de"
            )

            await agent.json("new_issue", slug="broken")
            assert "was written with 1 error" in await agent.error(
                "write_issue", issue="broken", yaml="subject: [unclosed\n"
            )
            is_error, content = await agent.call("build_issue", issue="broken")
            assert is_error and content[0].text == "error: broken has errors; nothing was built"
            assert json.loads(content[1].text)["errors"][0]["code"] == "yaml-syntax"
            refused = await agent.error("send_dry_run", issue="broken", list="alliances")
            assert "issues/broken/issue.yaml:2:1: error[yaml-syntax]" in refused

            dry = await agent.json("send_dry_run", issue=EXAMPLE_SLUG, list="alliances")
            code = dry["confirmation"]
            late = await agent.error("schedule", issue=EXAMPLE_SLUG, list="alliances", at="tomorrow", confirmation=code)
            assert "--at 'tomorrow' is not a time" in late
            # That refusal left the code usable:
            at = "2099-02-10 09:00"
            scheduled = await agent.json("schedule", issue=EXAMPLE_SLUG, list="alliances", at=at, confirmation=code)
            assert scheduled["status"] == "scheduled" and scheduled["scheduled_at"].startswith("2099-02-10")
            assert (await agent.json("campaign_status", issue=EXAMPLE_SLUG, list="alliances"))["status"] == "scheduled"
            assert outbox(workspace) == []

            listed = {i["slug"]: i for i in (await agent.json("list_issues"))["issues"]}
            assert listed[EXAMPLE_SLUG]["lang"] == "fr" and "yaml-syntax" in listed["broken"]["problem"]

    asyncio.run(scenario())
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


ESCAPES = [
    "../outside",
    "..",
    "/etc",
    str(Path("/tmp").resolve()),
    "issues/../../outside",
    "a/b",
    "evil",
    "",
    " x",
    "new\n",
    "a" * 300,
]


def test_every_tool_that_takes_a_name_refuses_a_path(workspace, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "issue.yaml").write_text("subject: not yours\n")
    (workspace / "issues" / "evil").symlink_to(outside, target_is_directory=True)
    picture = base64.b64encode(PNG_1x1).decode()

    async def scenario():
        async with connected(workspace, tmp_path / "stderr.log") as agent:
            for name in ESCAPES:
                calls = {
                    "new_issue": {"slug": name},
                    "read_issue": {"issue": name},
                    "write_issue": {"issue": name, "yaml": "subject: overwritten\n"},
                    "add_image": {"issue": name, "name": "x.png", "data_base64": picture},
                    "check_issue": {"issue": name},
                    "build_issue": {"issue": name},
                    "preview_issue": {"issue": name},
                    "send_dry_run": {"issue": name, "list": "alliances"},
                    "send": {"issue": name, "list": "alliances", "confirmation": "0123456789"},
                    "send_test": {"issue": name, "list": "alliances", "to": "moi@example.org"},
                    "schedule": {"issue": name, "list": "alliances", "at": "2099-01-01 09:00", "confirmation": "x"},
                    "campaign_status": {"issue": name, "list": "alliances"},
                }
                for tool, arguments in calls.items():
                    await agent.error(tool, **arguments)
                for image_name in (name, f"../{name}.png", "../../x.png", "/tmp/x.png", "sub/x.png", ".x.png"):
                    await agent.error("add_image", issue=EXAMPLE_SLUG, name=image_name, data_base64=picture)
                for list_name in ("../alliances", "/etc/passwd"):
                    assert "no list" in await agent.error("subscribers_summary", list=list_name)
                    await agent.error("send_dry_run", issue=EXAMPLE_SLUG, list=list_name)
                with pytest.raises(MCPError):  # refused by the SDK's ResourceSecurity, or by the slug check
                    await agent.session.read_resource(f"newsletter://issues/{name.replace('/', '%2F')}/issue.yaml")
            added = await agent.json("add_image", issue=EXAMPLE_SLUG, name="pixel.png", data_base64=picture)
            assert added["src"] == "images/pixel.png" and (added["width"], added["height"]) == (1, 1)
            assert "not a PNG, JPEG or GIF" in await agent.error(
                "add_image", issue=EXAMPLE_SLUG, name="fake.png", data_base64=base64.b64encode(b"GIF? no").decode()
            )
            assert "not base64" in await agent.error("add_image", issue=EXAMPLE_SLUG, name="y.png", data_base64="%%")

    asyncio.run(scenario())
    assert (outside / "issue.yaml").read_text() == "subject: not yours\n"
    assert sorted(p.name for p in outside.iterdir()) == ["issue.yaml"]
    assert sorted(p.name for p in (workspace / "issues").iterdir()) == [EXAMPLE_SLUG, "evil"]
    assert not (tmp_path / "x.png").exists() and not (workspace / "x.png").exists()


BINDING = SendBinding("2025-02-hiver", "alliances", "c0ffee", 4, "outbox:///tmp/outbox")


def test_a_code_is_single_use_even_when_redeemed_at_once_by_many(tmp_path):
    book = ConfirmationBook(tmp_path / "build" / "confirmations.json")
    code, _ = book.issue(BINDING)

    def redeem(_) -> bool:
        try:
            ConfirmationBook(book.path).redeem(code, BINDING)
        except NewsletterError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(redeem, range(16))) == [False] * 15 + [True]


def test_a_code_expires_and_is_bound_to_list_content_audience_and_transport(tmp_path):
    book = ConfirmationBook(tmp_path / "confirmations.json")
    now = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    code, expires = book.issue(BINDING, at=now)
    assert expires == now + dt.timedelta(hours=1)
    with pytest.raises(NewsletterError, match="expired"):
        book.redeem(code, BINDING, at=now + dt.timedelta(minutes=61))
    code, _ = book.issue(BINDING)
    for changed, reason in [
        ({"list": "membres"}, "is for 2025-02-hiver to the list 'alliances'"),
        ({"content": "decaf"}, "changed since the dry run"),
        ({"audience": 5}, "the audience changed since the dry run .* \\(4 then, 5 now\\)"),
        ({"transport": "smtp://mail.example.org"}, "the transport changed"),
    ]:
        with pytest.raises(NewsletterError, match=reason):
            book.redeem(code, SendBinding(**{**BINDING.__dict__, **changed}))
    book.redeem(code, BINDING)  # the refusals above did not use it
    book.path.write_text("{not json")  # a damaged file refuses every code, never accepts one
    with pytest.raises(NewsletterError, match="unknown"):
        book.redeem(code, BINDING)


def test_init_writes_agents_md_and_keeps_one_already_there(tmp_path):
    written = init_workspace(tmp_path / "lettre", "La Lettre", "fr")
    guide = (tmp_path / "lettre" / "AGENTS.md").read_text(encoding="utf-8")
    assert tmp_path / "lettre" / "AGENTS.md" in written
    assert "La Lettre" in guide and '{"command": "newsletter", "args": ["mcp"]}' in guide
    for words in ("--json", "send_dry_run", "confirmation code", "Never", "secrets"):
        assert words in guide, words
    own = tmp_path / "repo"
    own.mkdir()
    (own / "AGENTS.md").write_text("the repository's own guide\n")
    init_workspace(own, "Autre", "en")
    assert (own / "AGENTS.md").read_text() == "the repository's own guide\n"


def test_the_server_refuses_to_start_outside_a_workspace(tmp_path):
    import subprocess

    command, args = server_command()
    arguments = [command, *args, "--workspace", str(tmp_path)]
    result = subprocess.run(arguments, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: no newsletter.toml in ") and "Traceback" not in result.stderr
