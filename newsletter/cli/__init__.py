"""The `newsletter` command: parse arguments, call one library function, print, exit. No logic of its own.

Exit codes: 0 success, 1 the command failed (errors found, bad input), 2 bad usage.
Any NewsletterError becomes `error: <message>` on stderr; `--json` prints one JSON document on stdout.

One module per group of commands (issues, subscribers, sending, serving, bounces), registered here in the order
`newsletter --help` lists them. Each command imports what it uses when it runs, so that `--help` and
`--version` import typer and these modules only (tests/test_cli.py checks it, bench/startup.py times it).
"""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter import __version__
from newsletter.cli import bounces, issues, sending, serving, subscribers
from newsletter.cli.common import Commands

app = typer.Typer(
    cls=Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Write an email newsletter as files: check it, build it, preview it, send it.",
)


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


# The order of `newsletter --help` (typer lists the commands first, then the groups), which docs/commands.md follows.
for name, command in (
    ("init", issues.init),
    ("new", issues.new),
    ("check", issues.check),
    ("build", issues.build),
    ("preview", issues.preview),
    ("send", sending.send),
    ("status", sending.status),
    ("delivery", sending.delivery),
    ("worker", sending.worker),
    ("campaigns", sending.campaigns),
    ("approve", sending.approve),
    ("decline", sending.decline),
    ("serve", serving.serve),
    ("archive", serving.archive),
    ("archive-import", serving.archive_import),
    ("mcp", serving.mcp_server),
    ("form", serving.form),
    ("schema", issues.schema),
):
    app.command(name)(command)
app.add_typer(subscribers.subscribers_app, name="subscribers")
app.add_typer(sending.campaign_app, name="campaign")
app.add_typer(bounces.bounces_app, name="bounces")
app.add_typer(serving.db_app, name="db")


def main() -> None:
    app()
