"""`newsletter mcp`: the MCP server (stdio) through which an agent drafts, checks, looks at and sends an issue.

Every tool calls the library functions the CLI calls and answers with the JSON the CLI prints with `--json`; the
rules an agent works under (slugs only, writes only inside issues/<slug>/, no send without a dry run's
confirmation code) live in `newsletter.agent`. No logic of its own, like `cli/`.

stdout carries only the protocol: the SDK's stdio transport points file descriptor 1 at stderr while it serves, so
whatever a tool's work prints (a browser, a library) lands in the host's log. A NewsletterError becomes a tool
error whose text is the CLI's line, `error: <message>`; bad arguments become one line too; the server goes on.
"""

import asyncio
import base64
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, InputRequiredResult, TextContent, ToolAnnotations
from mcp_types import Resource as MCPResource
from pydantic import AnyUrl, Field, ValidationError

from newsletter import __version__, agent
from newsletter.build import build_issue
from newsletter.config import CONFIG_FILE
from newsletter.delivery import DEFAULT_LIMIT, delivery_report
from newsletter.errors import IssueError, NewsletterError
from newsletter.i18n import LANGUAGES, Language
from newsletter.sending.send import campaign_status
from newsletter.sending.send import send as send_issue
from newsletter.transports import transport_dsn
from newsletter.workspace import Workspace, new_issue, schema_text

SCHEMA_URI = "newsletter://schema/issue.schema.json"
FORMAT_URI = "newsletter://docs/issue-format.md"
ISSUE_URI = "newsletter://issues/{slug}/issue.yaml"
TRANSLATION_URI = "newsletter://issues/{slug}/issue.{lang}.yaml"
IMAGE_URI = "newsletter://issues/{slug}/images/{name}"
INSTRUCTIONS = (
    "Write, check, look at and send the issues of the email newsletter in this workspace. Work in this order: "
    "new_issue (start from the previous issue with from_issue: its masthead, logos, contacts and images come "
    "along), write_issue until it reports no errors, add_image for each image, check_issue, preview_issue at "
    "600 and 375 px (look at the pictures), send_dry_run, then ask the person you work for before send or "
    "schedule with the dry run's confirmation code. Where newsletter.toml names approvers, a send or schedule "
    "waits for a person's approval (status awaiting-approval): campaign_status says when it is approved or "
    "declined, with the approver's comment. To send to part of a list, give send_dry_run, send and schedule the "
    "same segment (a name list_lists shows, or an expression like tag:rimouski). To answer why someone did not get "
    "an issue, or no longer gets the newsletter, call delivery_report with their address. Results are JSON, as "
    "the CLI's --json prints them. Each issue's YAML and images are resources "
    "(newsletter://issues/SLUG/issue.yaml, .../images/NAME). An issue in two languages is issue.yaml and its "
    "translation issue.en.yaml (or issue.fr.yaml) beside it: read_issue, write_issue, check_issue and "
    "preview_issue take lang to work on the translation, and check_issue compares the two files."
)

IssueName = Annotated[str, Field(description="The issue's slug, its folder under issues/ (e.g. 2025-02-hiver).")]
VersionLang = Annotated[
    Language | None,
    Field(
        description="Which version: the language of the issue's translation (issue.en.yaml for en); omitted, or "
        "issue.yaml's own language, it is issue.yaml."
    ),
]
ListName = Annotated[str, Field(description="The list's slug (list_lists shows them), e.g. alliances.")]
SegmentName = Annotated[
    str | None,
    Field(
        description="Only part of the list: a segment named in newsletter.toml ([lists.SLUG.segments]) or an "
        'expression, e.g. \'tag:"MRC Rimouski-Neigette" or municipalite in ["Matane", "Amqui"]\'. Omit it for the '
        "whole list."
    ),
]
Confirmation = Annotated[
    str, Field(description="The confirmation code that send_dry_run gave for exactly this issue and list.")
]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
SENDS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)
ToolFunction = TypeVar("ToolFunction", bound=Callable[..., Any])  # a tool, registered and returned as it is


class NewsletterServer(MCPServer):
    """MCPServer whose tool errors read like the CLI's, and whose resources list every issue's YAML."""

    def __init__(self, root: Path):
        super().__init__("newsletter", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
        self.root = root

    def workspace(self) -> Workspace:
        """The workspace as it is now: newsletter.toml is read again for every call."""
        return Workspace.discover(self.root)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, IssueError):
                return _error(str(cause), {"ok": False, "errors": [d.to_json() for d in cause.diagnostics]})
            if isinstance(cause, NewsletterError):
                return _error(str(cause))
            if isinstance(cause, ValidationError):
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in cause.errors()
                )
                return _error(f"bad arguments to {name}: {problems}")
            raise

    async def list_resources(self) -> list[MCPResource]:
        """The static resources, then each issue's issue.yaml followed by the images in its images/ folder."""
        try:
            workspace = self.workspace()
            issues = agent.list_issues(workspace)["issues"]
        except NewsletterError:  # newsletter.toml being edited, say: the tools say what is wrong
            issues = []
        listed = await super().list_resources()
        for item in issues:
            slug = item["slug"]
            listed.append(
                MCPResource(
                    uri=ISSUE_URI.format(slug=slug),
                    name=f"issues/{slug}/issue.yaml",
                    description=item.get("subject") or item.get("problem"),
                    mime_type="application/yaml",
                )
            )
            listed += [
                MCPResource(
                    uri=TRANSLATION_URI.format(slug=slug, lang=lang),
                    name=f"issues/{slug}/issue.{lang}.yaml",
                    description=f"Its {lang} version",
                    mime_type="application/yaml",
                )
                for lang in item.get("translations", [])
            ]
            try:
                images = agent.issue_images(workspace, slug)
            except NewsletterError:  # the folder went away since
                images = []
            listed += [
                MCPResource(
                    uri=IMAGE_URI.format(slug=slug, name=quote(name, safe="")),
                    name=f"issues/{slug}/images/{name}",
                    mime_type=mime,
                )
                for name, mime in images
            ]
        return listed

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        """As the SDK reads it, with each image's own MIME type, and a reason for an image URI that matches none."""
        try:
            contents = await super().read_resource(uri, context)
        except ResourceNotFoundError as exc:
            if str(exc).startswith("Unknown resource") and str(uri).startswith(IMAGE_URI.split("{")[0]):
                raise ResourceNotFoundError(
                    f"error: {uri} names no image: an image is newsletter://issues/SLUG/images/NAME, NAME a file "
                    "name without folders (list_resources lists them)"
                ) from None
            raise
        if isinstance(contents, InputRequiredResult):
            return contents
        return [
            replace(item, mime_type=agent.image_type(item.content) or item.mime_type)
            if isinstance(item.content, bytes)
            else item
            for item in contents
        ]


def approval_sentence(root: Path) -> str:
    """What send's and schedule's descriptions say of a person's approval in the workspace at root."""
    try:
        approval = Workspace.discover(root).config.approval
    except NewsletterError:  # newsletter.toml being edited: the tools say what is wrong when called
        return "Whether a person must approve it depends on [approval] in newsletter.toml, which does not load now."
    if not approval.approvers:
        return "In this workspace no approval is required ([approval] in newsletter.toml lists no approvers)."
    who = ", ".join(approval.approvers)
    return (
        f"In this workspace a person must approve it: nothing goes out until {approval.required} of {who} "
        "approves it from the email they get (status awaiting-approval until then; campaign_status shows the "
        "decision). The agent cannot skip this."
    )


def _json(document: object) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2, default=str)


def _result(document: object, *, is_error: bool = False) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=_json(document))], is_error=is_error)


def _error(message: str, document: object | None = None) -> CallToolResult:
    content: list[ContentBlock] = [TextContent(text=f"error: {message}")]
    if document is not None:
        content.append(TextContent(text=_json(document)))
    return CallToolResult(content=content, is_error=True)


def create_server(root: Path) -> NewsletterServer:
    """The server for the workspace at root, with its tools, resources and the draft_issue prompt."""
    server = NewsletterServer(root)
    workspace = server.workspace

    def tool(
        annotations: ToolAnnotations, name: str | None = None, *, gated: bool = False
    ) -> Callable[[ToolFunction], ToolFunction]:
        def register(function: ToolFunction) -> ToolFunction:
            description = inspect.cleandoc(function.__doc__ or "")
            if gated:  # what a host shows its user before the call: whether a person must approve it here
                description += "\n\n" + approval_sentence(root)
            server.add_tool(
                function, name=name, description=description, annotations=annotations, structured_output=False
            )
            return function

        return register

    @tool(READ_ONLY)
    def list_issues() -> CallToolResult:
        """List the workspace's issues: slug, subject, lang, date (or the problem that stops the YAML loading), and
        translations: the languages of its translations beside issue.yaml (["en"] for issue.en.yaml)."""
        return _result(agent.list_issues(workspace()))

    @tool(WRITES, "new_issue")
    def new_issue_tool(
        slug: Annotated[str, Field(description="The new issue's slug: lowercase letters, digits, hyphens.")],
        lang: Annotated[
            Language | None,
            Field(description="Its language (default: the previous issue's, else lang in newsletter.toml)."),
        ] = None,
        from_issue: Annotated[
            str | None,
            Field(description="The previous issue's slug, to start from it (masthead, logos, contacts, images)."),
        ] = None,
        also: Annotated[
            list[Language] | None,
            Field(description='Also write its translation into these languages beside it, e.g. ["en"]: issue.en.yaml.'),
        ] = None,
    ) -> CallToolResult:
        """Create issues/SLUG/issue.yaml from the commented skeleton, or from the previous issue (from_issue).

        From a previous issue: its YAML dated today, its other dates cleared, a comment above each part to replace,
        and the images it uses copied, its translations likewise. With also, a translation's skeleton beside it
        (issue.en.yaml). Answers {"issue", "file", "translations", "images", "cleared_dates", "warnings"}.
        """
        agent.refuse_welcome(workspace(), slug)  # a list's welcome goes out unseen: a person writes it
        created = new_issue(workspace(), slug, lang=lang, also=also or (), from_issue=from_issue)
        return _result(created.to_json())

    @tool(READ_ONLY)
    def read_issue(issue: IssueName, lang: VersionLang = None) -> CallToolResult:
        """Return the issue's issue.yaml as it is on disk (YAML text), to edit and give back to write_issue; with
        lang, its translation into that language (issue.en.yaml)."""
        return CallToolResult(content=[TextContent(text=agent.read_issue(workspace(), issue, lang))])

    @tool(WRITES)
    def write_issue(
        issue: IssueName,
        yaml: Annotated[str, Field(description="The whole new issue.yaml, in UTF-8 (see the issue-format resource).")],
        lang: VersionLang = None,
    ) -> CallToolResult:
        """Replace the issue's issue.yaml (only that file, in that issue's folder), then check it. With lang, its
        translation into that language instead (issue.en.yaml beside issue.yaml, created if need be: the same
        sections in the same order, the same links and images, in that language; its lang is that language).

        Answers like check_issue with lang: {"ok", "errors", "warnings", "files"}, of the file written, each with
        file, line, column, path, code and message. With errors the answer is a tool error (the file is written all
        the same): its first line says how many and where the first is; fix what it reports and write again until
        ok is true.
        """
        report = agent.write_issue(workspace(), issue, yaml, lang)
        if report["ok"]:
            return _result(report)
        first = report["errors"][0]
        where = ":".join(str(first[k]) for k in ("file", "line", "column") if first.get(k) is not None)
        count = len(report["errors"])
        written = Path(report["files"][0]["file"]).name
        return _error(
            f"issues/{issue}/{written} was written with {count} error{'s' if count > 1 else ''}, the first at "
            f"{where}: {first['message']}; fix them and write again",
            report,
        )

    @tool(WRITES)
    def add_image(
        issue: IssueName,
        name: Annotated[str, Field(description="The image's file name, no folders: logo.png, photo.jpg, …")],
        data_base64: Annotated[str, Field(description="The image's bytes, base64-encoded: a PNG, JPEG or GIF.")],
    ) -> CallToolResult:
        """Save an image in the issue's images/ folder; refused unless it is a PNG, JPEG or GIF.

        Answers {"src", "width", "height", "bytes", "warnings"}; use src (images/NAME) in an image's src, with alt.
        """
        return _result(agent.add_image(workspace(), issue, name, data_base64))

    @tool(READ_ONLY, "check_issue")
    def check_issue_tool(issue: IssueName, lang: VersionLang = None) -> CallToolResult:
        """Report every problem of the issue, as `newsletter check --json`: {"ok", "errors", "warnings", "files"}.

        Each problem has file, line, column, path (e.g. sections[3].url), code and message. ok false: fix the errors.
        An issue with a translation (issue.en.yaml) is checked whole: each file, and the translation compared with
        issue.yaml (warnings in the translation naming issue.yaml's line: translation-missing-section, …); "files"
        gives each file's own {"file", "lang", "ok", "errors", "warnings"}. With lang, only that version's.
        """
        current = workspace()
        folder = agent.issue_folder(current, issue)
        return _result(agent.check_report(current, folder, lang, every=lang is None))

    @tool(WRITES, "build_issue")
    def build_issue_tool(issue: IssueName) -> CallToolResult:
        """Check and build the issue into build/SLUG/ (index.html, index.txt, issue.mjml, images/), and its
        translation into build/SLUG/en/ (issue.en.yaml's).

        Answers {"html", "text", "html_bytes", "warnings", "versions": [{"lang", "html", "text", "html_bytes"}, …]};
        with errors in any file nothing is built: {"ok": false, "errors"}.
        """
        current = workspace()
        folder = agent.issue_folder(current, issue)
        try:
            return _result(build_issue(current, folder).to_json())
        except IssueError as exc:
            return _error(
                f"{issue} has errors; nothing was built",
                {"ok": False, "errors": [d.to_json() for d in exc.diagnostics]},
            )

    @tool(READ_ONLY)
    def preview_issue(
        issue: IssueName,
        width: Annotated[
            Annotated[int, Field(ge=200, le=2000)] | Literal["both"],
            Field(description='Width in px: 600 desktop, 375 a phone; "both": 600 and 375 in one call.'),
        ] = 600,
        view: Annotated[Literal["html", "text"], Field(description="html: the email; text: its plain part.")] = "html",
        lang: VersionLang = None,
    ) -> CallToolResult:
        """Look at the email as a member gets it: a PNG of the whole page per width, in headless Chromium; with
        lang, of the issue's translation into that language (issue.en.yaml).

        It shows the message of a sample member (a fictional name and address; its unsubscribe link is a sample),
        with the footer and links every message carries. Answers one image per width (600 first with "both"),
        then {"png", "width", "height", "viewport", "view", "recipient", "note", "diagnostics"}, or with "both"
        {"previews": [{"png", "width", "height", "viewport"}, …], "view", "recipient", "note", "diagnostics"}.
        width and height are the PNG's: the text view, shown as sent (no line wrapped again), is wider than the
        viewport where a line is (a long URL). An issue with errors shows them.
        """
        from newsletter.preview import VIEWS, take_screenshots

        current = workspace()
        folder = agent.issue_folder(current, issue)
        widths = [VIEWS["desktop"], VIEWS["mobile"]] if width == "both" else [width]
        version = f"{lang}-" if lang else ""
        outputs = [(w, current.build_dir / "previews" / f"{folder.name}-{version}{w}-{view}.png") for w in widths]
        shots = take_screenshots(folder, outputs, view=view, lang=lang)
        pictures = [
            ImageContent(data=base64.b64encode(shot.path.read_bytes()).decode("ascii"), mime_type="image/png")
            for shot in shots
        ]
        documents = [shot.to_json() for shot in shots]
        document = documents[0]
        if width == "both":  # what the shots share, once
            shared = ("view", "recipient", "note", "diagnostics")
            document = {
                "previews": [{k: v for k, v in d.items() if k not in shared} for d in documents],
                **{key: document[key] for key in shared},
            }
        return CallToolResult(content=[*pictures, TextContent(text=_json(document))])

    @tool(READ_ONLY)
    def list_lists() -> CallToolResult:
        """List the subscriber lists: slug, the name subscribers see, how many are subscribed, and the segments
        newsletter.toml names for each (name: expression), which send_dry_run, send and schedule take."""
        return _result(agent.lists_summary(workspace()))

    @tool(READ_ONLY)
    def subscribers_summary(
        list: ListName,
        addresses: Annotated[bool, Field(description="Also list every member's address (only when needed).")] = False,
    ) -> CallToolResult:
        """Count a list's members by status (subscribed, pending, unsubscribed, bounced, complained)."""
        return _result(agent.subscribers_summary(workspace(), list, addresses=addresses))

    @tool(READ_ONLY)
    def send_dry_run(issue: IssueName, list: ListName, segment: SegmentName = None) -> CallToolResult:
        """Show what sending the issue to the list (or to a segment of it) would do, and give the confirmation code
        a send needs.

        Answers as `newsletter send --json` (a dry run: audience, recipients, transport, segment), with the sample
        message as its headers and plain text, and `confirmation`: a code for exactly this content, list, segment
        and audience, used once, valid for an hour. Nothing is sent. Show the person you work for what it says
        before sending. An issue in two languages to a list of both adds `languages` (how many get each version)
        and `samples` (one message of each version, by language); the code binds both versions.
        """
        current = workspace()
        folder = agent.issue_folder(current, issue)
        dry_run = agent.confirmable_dry_run(current, folder, list, transport_dsn(None), segment)
        return _result(asyncio.run(dry_run))

    @tool(SENDS, gated=True)
    def send(
        issue: IssueName, list: ListName, confirmation: Confirmation, segment: SegmentName = None
    ) -> CallToolResult:
        """Send the issue to every subscribed member of the list (or of the segment), through NEWSLETTER_TRANSPORT
        (default: the outbox).

        Refused without the code of a dry run of exactly this content, list and segment, or with a used or expired
        code.
        Answers as `newsletter send --json`: campaign, status, sent, failed, skipped, pending, and `approval` when a
        person must approve it (status awaiting-approval: campaign_status then says approved or declined, with the
        comment). Nobody gets it twice.
        """
        current = workspace()
        folder = agent.issue_folder(current, issue)
        dsn = transport_dsn(None)
        summary = asyncio.run(agent.confirmed_send(current, folder, list, dsn, confirmation, segment=segment))
        return _result(summary.to_json(), is_error=not summary.ok)

    @tool(SENDS)
    def send_test(
        issue: IssueName,
        list: ListName,
        to: Annotated[str, Field(description="The one address to send the test to, e.g. your own.")],
    ) -> CallToolResult:
        """Send one test message, subject prefixed [TEST], to one address, as a member of the list would get it (an
        issue in two languages: one message in each)."""
        current = workspace()
        folder = agent.issue_folder(current, issue)
        summary = asyncio.run(send_issue(current, folder, list, dsn_text=transport_dsn(None), dry_run=False, to=to))
        return _result(summary.to_json(), is_error=not summary.ok)

    @tool(SENDS, gated=True)
    def schedule(
        issue: IssueName,
        list: ListName,
        at: Annotated[
            str,
            Field(description='When: "2027-02-10 09:00" (newsletter.toml\'s timezone) or ISO 8601 with an offset.'),
        ],
        confirmation: Confirmation,
        segment: SegmentName = None,
    ) -> CallToolResult:
        """Schedule the issue to the list (or to a segment of it) at a time to come; a running `newsletter worker`
        sends it then.

        Needs the confirmation code of a dry run of exactly this content, list and segment, as send does.
        """
        current = workspace()
        folder = agent.issue_folder(current, issue)
        dsn = transport_dsn(None)
        summary = asyncio.run(agent.confirmed_send(current, folder, list, dsn, confirmation, at=at, segment=segment))
        return _result(summary.to_json())

    @tool(READ_ONLY, "campaign_status")
    def campaign_status_tool(issue: IssueName, list: ListName, segment: SegmentName = None) -> CallToolResult:
        """Show where sending the issue to the list stands, as `newsletter status --json`: sent, pending, failed.

        When a person was asked to approve it, `approval` says where that stands: {"state": "awaiting-approval",
        "approvers", "required", "approved_by", "expires_at"}, {"state": "approved", "by", "at"}, {"state":
        "declined", "by", "at", "comment"} (fix what the comment asks, dry-run and send again: a new request goes),
        or {"state": "voided", "reason"} (the issue changed after the request).
        """
        current = workspace()
        folder = agent.issue_folder(current, issue)
        return _result(campaign_status(current, folder.name, list, segment).to_json())

    @tool(READ_ONLY, "delivery_report")
    def delivery_report_tool(
        address: Annotated[str, Field(description="The person's email address, e.g. marie@example.org.")],
        limit: Annotated[
            int, Field(ge=1, le=100, description="How many of the latest campaigns of their lists to cover.")
        ] = DEFAULT_LIMIT,
    ) -> CallToolResult:
        """Why did someone not get it, or why do they no longer get the newsletter? What became of their copy of
        each recent campaign of the lists they are or were on, newest first, as `newsletter delivery --json`.

        Answers {"email", "name", "erased_at", "memberships": [{"list", "status", "since", "joined_at",
        "source"}], "campaigns": [...], "more"}. Each campaign: {"campaign", "issue", "subject", "list",
        "segment", "started_at", "campaign_status", "status", "at", "provider_id", "attempts",
        "next_attempt_at", "error", "reason", "events"}, status being what became of their copy: sent (at, the
        provider's id), queued (not tried yet), deferred (pending, tried again: attempts, error, next_attempt_at;
        or the receiving server's delay report), failed (error), bounced, soft-bounced, complained, unsubscribed
        (a report after it left: see events), skipped (no longer subscribed when its turn came: reason),
        cancelled (the campaign ended before its turn) or not-in-audience (reason.code: joined-after, with at;
        not-subscribed, with the status then, since at, and source, how it came: one-click, page, webhook, sync,
        import, cli, send, bounce-mail; outside-segment; had-it-already, with the earlier campaign). events:
        [{"kind", "at", "source", "probable", "status" (5.1.1), "diagnostic" (the server's words),
        "feedback_type"}], probable true when only its time ties it to this campaign. A person erased at their
        request: erased_at and nothing else. An unknown address is an error.
        """
        return _result(delivery_report(workspace(), address, limit=limit).to_json())

    @server.resource(
        SCHEMA_URI,
        name="issue.schema.json",
        mime_type="application/schema+json",
        description="The JSON Schema of issue.yaml.",
    )
    def issue_schema() -> str:
        return schema_text()

    @server.resource(
        FORMAT_URI,
        name="The issue format",
        mime_type="text/markdown",
        description="The issue format (docs/issue-format.md): issue.yaml's fields, section types, what check reports.",
    )
    def issue_format() -> str:
        return agent.issue_format_text()

    @server.resource(
        ISSUE_URI, name="issue.yaml", mime_type="application/yaml", description="An issue's YAML, by its slug."
    )
    def issue_yaml(slug: str) -> str:
        try:
            return agent.read_issue(workspace(), slug)
        except NewsletterError as exc:
            raise ResourceNotFoundError(f"error: {exc}") from None

    @server.resource(
        TRANSLATION_URI,
        name="issue.LANG.yaml",
        mime_type="application/yaml",
        description="An issue's translation (issue.en.yaml), by its slug and language.",
    )
    def translation_yaml(slug: str, lang: str) -> str:
        try:
            if lang not in LANGUAGES:
                raise NewsletterError(f"{lang!r} is no language of an issue; use one of: {', '.join(LANGUAGES)}")
            if not agent.version_file(workspace(), slug, lang).name.endswith(f".{lang}.yaml"):
                raise NewsletterError(f"issues/{slug}/issue.yaml is the {lang} version: read its issue.yaml")
            return agent.read_issue(workspace(), slug, lang)
        except NewsletterError as exc:
            raise ResourceNotFoundError(f"error: {exc}") from None

    @server.resource(
        IMAGE_URI,
        name="An issue's image",
        mime_type="image/png",  # the template's; each image is read with its own (read_resource)
        description="An image of an issue's images/ folder (PNG, JPEG or GIF), by the issue's slug and its file name.",
        security=ResourceSecurity(exempt_params={"slug", "name"}),  # agent.read_image confines them, with a reason
    )
    def issue_image(slug: str, name: str) -> bytes:
        try:
            return agent.read_image(workspace(), slug, name)[0]
        except NewsletterError as exc:
            raise ResourceNotFoundError(f"error: {exc}") from None

    @server.prompt(name="draft_issue", description="Draft an issue, check it, look at it, dry-run it, then send it.")
    def draft_issue(slug: str, about: str = "", list: str = "") -> str:
        return DRAFT_PROMPT.format(
            slug=slug, about=about or "(ask the person you work for)", list=list or "(list_lists shows them; ask which)"
        )

    return server


DRAFT_PROMPT = """\
Draft the newsletter issue `{slug}` about: {about}. The list to send it to: {list}.

Work in this order, with the tools of the newsletter server:
1. new_issue with slug `{slug}` (skip it if list_issues already shows it), then read_issue to see the skeleton.
   To start from the previous issue (list_issues shows them), give it as from_issue: its YAML comes dated
   today, its other dates cleared, a comment above each part to replace, and its images copied.
   The resources issue.schema.json and "The issue format" describe every field and section type; each issue's
   images are resources too (newsletter://issues/SLUG/images/NAME).
2. write_issue with the whole YAML. It answers with every problem as file:line:column, a code and a message:
   fix them and write again until "ok" is true. Read the warnings too (subject length, preheader, leftover TODO).
   In two languages: write issue.yaml in the list's first language, then its translation with write_issue and
   lang (the same sections in the same order, the same links and images), until check_issue warns of none.
3. add_image for each image, then use the src it answers (images/NAME) with an alt text that says what it shows.
4. check_issue, then preview_issue at width 600 and at width 375 (a phone). Look at both pictures: nothing cut
   off, nothing wider than the screen, the text readable. Fix and preview again.
5. send_dry_run to the list: read the audience, the first recipients and the sample message's headers and text.
   Show them to the person you work for and ask whether to send; do not send without a clear yes.
6. send (or schedule, with a time) with the confirmation code of that dry run. If the issue or the list changed
   since, the code is refused: run send_dry_run again. campaign_status shows how the sending goes. Where a person
   must approve it (the answer's status is awaiting-approval), they get the issue by email: campaign_status shows
   their decision; if declined, fix what their comment asks, then dry-run and send again (a new request goes).
Never send without a dry run, never put a secret in a file, never write outside the issue's folder.
"""


def serve(root: Path) -> None:
    """Serve the workspace at root over stdio until the host closes stdin."""
    if not (root / CONFIG_FILE).is_file():
        raise NewsletterError(
            f"no {CONFIG_FILE} in {root}: start the server in a workspace, or --workspace DIR "
            "(`newsletter init` makes one)"
        )
    create_server(root).run("stdio")
