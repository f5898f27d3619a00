"""The commands on one issue: init, new, check, build, preview, schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from newsletter.cli.common import IssueArg, JsonOpt, print_json, relative
from newsletter.i18n import LANGUAGES

if TYPE_CHECKING:
    from newsletter.errors import Diagnostic


def _show(diagnostic: Diagnostic) -> str:
    return diagnostic.format().replace(str(diagnostic.file), relative(diagnostic.file) or "", 1)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(errors: int, warnings: int) -> str:
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"


def init(
    path: Annotated[Path, typer.Argument(help="Folder for the new workspace (created if needed).")] = Path("."),
    name: Annotated[str, typer.Option(help="The newsletter's name.")] = "My newsletter",
    lang: Annotated[str, typer.Option(help=f"Language of its issues: {', '.join(LANGUAGES)}.")] = "fr",
    force: Annotated[bool, typer.Option("--force", help="Rewrite newsletter.toml if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace: newsletter.toml, issues/, templates/, subscribers/, issue.schema.json."""
    from newsletter.workspace import init_workspace

    written = init_workspace(path, name, lang, force=force)
    if as_json:
        print_json({"workspace": str(path.resolve()), "files": [str(p) for p in written]})
        return
    for file in written:
        typer.echo(f"wrote {relative(file)}")
    typer.echo("next: fill in [publisher] in newsletter.toml, then `newsletter new SLUG`")


def new(
    slug: Annotated[str, typer.Argument(help="The issue's folder name, e.g. 2025-02-hiver.")],
    lang: Annotated[
        str | None, typer.Option(help="Its language (default: the previous issue's, else lang in newsletter.toml).")
    ] = None,
    from_issue: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="PREVIOUS",
            help="Start from this issue (its slug): its YAML with dates cleared and comments on what to replace, "
            "the images it uses, and its translations.",
        ),
    ] = None,
    also: Annotated[
        list[str] | None,
        typer.Option(
            "--also",
            metavar="LANG",
            help="Also write its translation into LANG beside it (issue.LANG.yaml, e.g. --also en), from the skeleton "
            "in that language.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create issues/SLUG/issue.yaml from a commented skeleton, or from the previous issue with --from; with --also,
    its translation beside it (issue.en.yaml)."""
    from newsletter.workspace import Workspace, new_issue

    created = new_issue(Workspace.discover(), slug, lang=lang, also=also or (), from_issue=from_issue)
    if as_json:
        print_json(created.to_json())
        return
    for warning in created.warnings:
        typer.echo(_show(warning), err=True)
    typer.echo(f"wrote {relative(created.file)}")
    for translation in created.translations:
        typer.echo(f"wrote {relative(translation)}")
    if created.images:
        typer.echo(f"copied {_plural(len(created.images), 'image')}: {', '.join(created.images)}")
    if created.cleared:
        typer.echo(f"cleared {_plural(len(created.cleared), 'date')} to give again: {', '.join(created.cleared)}")
    typer.echo(f"next: edit it, then `newsletter check {relative(created.folder)}`")


def check(
    issue: IssueArg,
    list_slug: Annotated[
        str | None,
        typer.Option(
            "--list",
            help="Check its {{ field }} placeholders against this list's members (default: the only list, if one).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Report every problem in an issue with file:line:col, its translations (issue.en.yaml) too, each compared with
    issue.yaml. Exit 1 when there are errors."""
    from newsletter.checks import Report, check_versions
    from newsletter.field_placeholders import list_fields_for
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    list_fields = list_fields_for(workspace, list_slug)
    checked = check_versions(folder, workspace.config, workspace.templates_dir, list_fields=list_fields)
    report = checked.report
    if as_json:
        print_json(checked.to_json())
    else:
        for diagnostic in report.diagnostics:
            typer.echo(_show(diagnostic), err=diagnostic.severity == "error")
        if checked.translations:  # each file's own, then the whole issue's (newsletter.toml's counted once)
            for version in checked.versions:
                own = Report(version.diagnostics_in_file())
                typer.echo(f"{relative(version.file)}: {_summary(len(own.errors), len(own.warnings))}")
        typer.echo(f"{relative(folder)}: {_summary(len(report.errors), len(report.warnings))}")
    if not report.ok:
        raise typer.Exit(1)


def build(
    issue: IssueArg,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: build/SLUG).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check and build an issue: build/SLUG/{index.html,index.txt,issue.mjml,images/}, and build/SLUG/en/ for its
    translation issue.en.yaml."""
    from newsletter.build import build_issue
    from newsletter.errors import IssueError
    from newsletter.workspace import Workspace

    workspace, folder = Workspace.for_issue(issue)
    try:
        result = build_issue(workspace, folder, out)
    except IssueError as exc:
        if as_json:
            print_json({"ok": False, "errors": [d.to_json() for d in exc.diagnostics]})
        for diagnostic in exc.diagnostics:
            typer.echo(_show(diagnostic), err=True)
        typer.echo(f"error: {relative(folder)} has errors; nothing was built", err=True)
        raise typer.Exit(1) from None
    if as_json:
        print_json(result.to_json())
        return
    for warning in result.warnings:
        typer.echo(_show(warning))
    for version in result.versions:
        typer.echo(f"built {relative(version.html)} ({version.html_bytes / 1024:.1f} KB) and {relative(version.text)}")


def preview(
    issue: IssueArg,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (another free one if taken).")] = 8642,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the default browser.")] = True,
    screenshot: Annotated[
        Path | None, typer.Option(help="Save a full-page PNG of the email to this file, then exit.")
    ] = None,
    width: Annotated[int, typer.Option(min=200, max=2000, help="Screenshot width in px (375 = phone).")] = 600,
    text: Annotated[bool, typer.Option("--text", help="Screenshot the plain-text part instead.")] = False,
    list_slug: Annotated[
        str | None,
        typer.Option("--list", help="Show the message of this list's first subscribed member, not a sample's."),
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            help="The version in this language (issue.LANG.yaml beside issue.yaml), e.g. en; default: issue.yaml's."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve a live preview (desktop, mobile, text) of a member's message, reloaded on save, each version of the
    issue a click away; or a PNG."""
    from newsletter.preview import serve_preview, take_screenshot
    from newsletter.workspace import Workspace

    _, folder = Workspace.for_issue(issue)
    if screenshot is None:
        serve_preview(
            folder,
            port=port,
            open_browser=open_browser,
            announce=lambda url: typer.echo(f"previewing {relative(folder)} at {url} (Ctrl-C to stop)"),
            list_slug=list_slug,
            lang=lang,
        )
        return
    view = "text" if text else "html"
    shot = take_screenshot(folder, screenshot, width=width, view=view, list_slug=list_slug, lang=lang)
    errors = [d for d in shot.diagnostics if d["severity"] == "error"]
    if as_json:
        print_json(shot.to_json())
    else:
        typer.echo(f"wrote {relative(shot.path)} ({shot.width}×{shot.height} px)")
        if errors:
            typer.echo(f"error: the issue has {len(errors)} errors; run `newsletter check`", err=True)
    if errors:
        raise typer.Exit(1)


def schema(as_json: JsonOpt = False) -> None:
    """Print the JSON Schema of issue.yaml (for editors and agents)."""
    from newsletter.workspace import schema_text

    sys.stdout.write(schema_text())
