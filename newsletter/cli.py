"""The `newsletter` command: parse arguments, call one library function, print, exit. No logic of its own.

Exit codes: 0 success, 1 the command failed (errors found, bad input), 2 bad usage.
Any NewsletterError becomes `error: <message>` on stderr; `--json` prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from newsletter import __version__
from newsletter.build import build_issue
from newsletter.checks import check_issue
from newsletter.errors import Diagnostic, IssueError, NewsletterError
from newsletter.i18n import LANGUAGES
from newsletter.workspace import Workspace, init_workspace, new_issue, schema_text


class _Commands(TyperGroup):
    """Turns every NewsletterError, from any command, into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Write an email newsletter as files: check it, build it, preview it.",
)

IssueArg = Annotated[str, typer.Argument(help="The issue: its folder (issues/2025-02-hiver) or its slug.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _print_json(document: object) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


def _relative(path: str | Path | None) -> str | None:
    """A path as a person reads it: relative below the current folder, absolute elsewhere."""
    if path is None:
        return None
    absolute = Path(path).absolute()
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)


def _show(diagnostic: Diagnostic) -> str:
    return diagnostic.format().replace(str(diagnostic.file), _relative(diagnostic.file) or "", 1)


def _summary(errors: int, warnings: int) -> str:
    def plural(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Folder for the new workspace (created if needed).")] = Path("."),
    name: Annotated[str, typer.Option(help="The newsletter's name.")] = "My newsletter",
    lang: Annotated[str, typer.Option(help=f"Language of its issues: {', '.join(LANGUAGES)}.")] = "fr",
    force: Annotated[bool, typer.Option("--force", help="Rewrite newsletter.toml if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace: newsletter.toml, issues/, templates/, subscribers/, issue.schema.json."""
    written = init_workspace(path, name, lang, force=force)
    if as_json:
        _print_json({"workspace": str(path.resolve()), "files": [str(p) for p in written]})
        return
    for file in written:
        typer.echo(f"wrote {_relative(file)}")
    typer.echo("next: fill in [publisher] in newsletter.toml, then `newsletter new SLUG`")


@app.command()
def new(
    slug: Annotated[str, typer.Argument(help="The issue's folder name, e.g. 2025-02-hiver.")],
    lang: Annotated[str | None, typer.Option(help="Its language (default: lang in newsletter.toml).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create issues/SLUG/issue.yaml from a commented skeleton."""
    file = new_issue(Workspace.discover(), slug, lang=lang)
    if as_json:
        _print_json({"issue": str(file.parent), "file": str(file)})
        return
    typer.echo(f"wrote {_relative(file)}")
    typer.echo(f"next: edit it, then `newsletter check {_relative(file.parent)}`")


@app.command()
def check(issue: IssueArg, as_json: JsonOpt = False) -> None:
    """Report every problem in an issue with file:line:col. Exit 1 when there are errors."""
    workspace, folder = Workspace.for_issue(issue)
    report = check_issue(folder, workspace.config, workspace.templates_dir).report
    if as_json:
        _print_json(report.to_json())
    else:
        for diagnostic in report.diagnostics:
            typer.echo(_show(diagnostic), err=diagnostic.severity == "error")
        typer.echo(f"{_relative(folder)}: {_summary(len(report.errors), len(report.warnings))}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def build(
    issue: IssueArg,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: build/SLUG).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check and build an issue: build/SLUG/{index.html,index.txt,issue.mjml,images/}."""
    workspace, folder = Workspace.for_issue(issue)
    try:
        result = build_issue(workspace, folder, out)
    except IssueError as exc:
        if as_json:
            _print_json({"ok": False, "errors": [d.to_json() for d in exc.diagnostics]})
        for diagnostic in exc.diagnostics:
            typer.echo(_show(diagnostic), err=True)
        typer.echo(f"error: {_relative(folder)} has errors; nothing was built", err=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(result.to_json())
        return
    for warning in result.warnings:
        typer.echo(_show(warning))
    typer.echo(f"built {_relative(result.html)} ({result.html_bytes / 1024:.1f} KB) and {_relative(result.text)}")


@app.command()
def preview(
    issue: IssueArg,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (another free one if taken).")] = 8642,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the default browser.")] = True,
    screenshot: Annotated[
        Path | None, typer.Option(help="Save a full-page PNG of the email to this file, then exit.")
    ] = None,
    width: Annotated[int, typer.Option(min=200, max=2000, help="Screenshot width in px (375 = phone).")] = 600,
    text: Annotated[bool, typer.Option("--text", help="Screenshot the plain-text part instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Serve a live preview (desktop, mobile, text) that reloads on save; or take a PNG screenshot."""
    from newsletter.preview import serve_preview, take_screenshot

    _, folder = Workspace.for_issue(issue)
    if screenshot is None:
        serve_preview(
            folder,
            port=port,
            open_browser=open_browser,
            announce=lambda url: typer.echo(f"previewing {_relative(folder)} at {url} (Ctrl-C to stop)"),
        )
        return
    shot = take_screenshot(folder, screenshot, width=width, view="text" if text else "html")
    errors = [d for d in shot.diagnostics if d["severity"] == "error"]
    if as_json:
        _print_json(shot.to_json())
    else:
        typer.echo(f"wrote {_relative(shot.path)} ({shot.width}×{shot.height} px)")
        if errors:
            typer.echo(f"error: the issue has {len(errors)} errors; run `newsletter check`", err=True)
    if errors:
        raise typer.Exit(1)


@app.command()
def schema(as_json: JsonOpt = False) -> None:
    """Print the JSON Schema of issue.yaml (for editors and agents)."""
    sys.stdout.write(schema_text())


def main() -> None:
    app()
