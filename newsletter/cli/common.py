"""What the command groups share: the error handler, the arguments and options of many commands, the printing.

Imported by `newsletter --help` and `--version` with every group: typer and the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from newsletter.errors import NewsletterError


class Commands(TyperGroup):
    """Turns every NewsletterError, from any command, into one line on stderr and exit code 1."""

    # Any: the click Context TyperGroup takes is typer's own copy of click's (typer._click) since typer 0.25.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


IssueArg = Annotated[str, typer.Argument(help="The issue: its folder (issues/2025-02-hiver) or its slug.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ListOpt = Annotated[
    str, typer.Option("--list", help="The list's slug: lowercase letters, digits and hyphens, e.g. alliances.")
]


def print_json(document: object) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


def relative(path: str | Path | None) -> str | None:
    """A path as a person reads it: relative below the current folder, absolute elsewhere."""
    if path is None:
        return None
    absolute = Path(path).absolute()
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)
