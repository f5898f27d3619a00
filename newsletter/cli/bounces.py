"""`newsletter bounces scan|review`: the bounce mailbox of an SMTP sender (newsletter/bounces/)."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.common import Commands, JsonOpt, print_json

bounces_app = typer.Typer(
    cls=Commands,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The bounces and complaints that come back as mail ([bounces] mailbox in newsletter.toml).",
)


def _scan(dry_run: bool):
    from newsletter.bounces.scan import scan_configured
    from newsletter.sending.wiring import open_store
    from newsletter.tokens import TokenSigner
    from newsletter.workspace import Workspace

    workspace = Workspace.discover()
    store = open_store(workspace)
    try:
        # The key that signed the return paths: a token checked with any other key matches nobody.
        signer = TokenSigner.from_environment(required=workspace.config.bounces.return_path is not None)
        return scan_configured(workspace.config, store, signer, dry_run=dry_run)
    finally:
        store.close()


@bounces_app.command("scan")
def scan(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be decided; change nothing, move nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read the bounce mailbox: mark hard bounces and complaints, count soft bounces, file what was acted on.

    Reads [bounces] mailbox (imaps://, imap:// on this machine, or maildir://; the password in
    NEWSLETTER_BOUNCES_PASSWORD, or an OAuth2 token in NEWSLETTER_BOUNCES_OAUTH2_TOKEN). Each message acted on is
    moved to [bounces] processed; nothing is deleted; what cannot be classified or matched stays, for `review`.
    Running it again counts nothing twice. `newsletter worker` runs it every [bounces] every.
    """
    report = _scan(dry_run)
    if as_json:
        print_json(report.to_json())
    else:
        typer.echo(report.summary())
        for message in report.unreadable:
            typer.echo(f"  skipped {message.ref}: {message.why}", err=True)


@bounces_app.command("review")
def review(as_json: JsonOpt = False) -> None:
    """List the messages a scan leaves in the bounce mailbox, and why (not recognised, or matched to nobody).

    Reads the mailbox without changing anything. Look at each in a mail client: move a real bounce by hand, or
    delete what is not one.
    """
    report = _scan(dry_run=True)
    left = report.unreadable + report.left
    if as_json:
        print_json({"mailbox": report.mailbox, "read": report.read, "left": [m.to_json() for m in left]})
        return
    if not left:
        typer.echo(f"{report.mailbox}: nothing to review ({report.read} messages, all understood)")
        return
    typer.echo(f"{report.mailbox}: {len(left)} of {report.read} messages left for a person to look at:")
    for message in left:
        typer.echo(f"- {message.ref}: {message.subject or '(no subject)'} from {message.sender or '?'}")
        typer.echo(f"  {message.why}")
