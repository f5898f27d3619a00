"""A list's welcome email: `[lists.alliances] welcome = "bienvenue"` names an issue in issues/ that each person
receives once, when they confirm a sign-up (serve's /confirm) or are added with `subscribers add --welcome` or
`subscribers import --welcome`; never on a plain import.

The welcome is a campaign of its own per list (store/welcomes.py), frozen as any campaign is
(frozen.py) from the issue checked as a real send checks it (send.prepare: errors, and for a transport that leaves
this machine a link on a reserved name or a missing base_url, are refused), so that every server and worker builds
the same bytes from the store; messages carry the same headers (List-Unsubscribe, one-click) and footer as a
campaign's. A version is found by the digest of what its messages are made of (message_digest): a changed issue,
sender or list name freezes a new welcome, which those who join afterwards get. A person's row is queued in the
transaction that subscribes them (WelcomeIssue.queue), so that nobody is subscribed without it and nobody gets two;
then any sender sends it under a lease (runner.py): serve at once in the background (web/welcome.py) and every
minute, `newsletter worker` whatever is still pending, with its retries and backoff up to max_attempts.

No approval: [approval] gates what a send or an agent asks to mail to a list now; a welcome goes to each newcomer as
a person set it up, checked (an issue with errors is never frozen, and serve does not start with one) and frozen
by a person's serve or command, and the MCP server never writes a welcome's issue (agent.py), so that no agent
changes unseen what every newcomer receives.

Languages: the welcome issue's versions in the list's languages (issue.yaml, and issue.LANG.yaml) are frozen in one
campaign, as a send's are, and each person gets theirs as a campaign's members do: their language when the issue
has it, else the list's first (message.Campaign.build, the one place this is chosen).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsletter.config import CONFIG_FILE, Config, toml_line
from newsletter.errors import ConfigError, IssueError, NewsletterError
from newsletter.message import HostedUnsubscribe
from newsletter.sending.frozen import FrozenCampaign, NewerContentFormat
from newsletter.store import Connection, ListRow, Store
from newsletter.workspace import Workspace


@dataclass
class WelcomeIssue:
    """A list's welcome: the issue newsletter.toml names, checked and frozen with each of its versions in the list's
    languages, as a send to the list freezes them."""

    list_slug: str
    issue_slug: str
    newsletter_name: str  # what a list without a name of its own is titled (config.name)
    frozen: FrozenCampaign  # its list_name as newsletter.toml titles the list; the store's name replaces it
    content_hash: str
    signature: tuple = ()  # the issue's files as they were read (folder_signature): a change is noticed by it
    digests: dict[int, str] = field(default_factory=dict)  # each welcome campaign's message_digest, read once
    # The content frozen for the list's name -> (content, its message_digest), made once.
    named: dict[str, tuple[FrozenCampaign, str]] = field(default_factory=dict)

    def queue(self, store: Store, list_id: int, emails: Sequence[str], *, connection: Connection) -> dict[int, int]:
        """Queue the welcome for these addresses, in the caller's transaction (the one that subscribes them, and
        sets their language): a pending row for each who is subscribed and never had a welcome of this list.
        Returns how many were queued, by welcome campaign (made at the first one queued). Each gets the version
        in their language when it is sent, as a campaign's members do (message.Campaign.build)."""
        campaign_id = self.campaign_for(store, list_id, connection=connection)
        count = store.queue_welcome(campaign_id, list_id, emails, connection=connection)
        return {campaign_id: count} if count else {}

    def campaign_for(self, store: Store, list_id: int, *, connection: Connection) -> int:
        """The welcome campaign of this content to the list, made if there is none yet: with the list locked, so
        that two servers making it at once make one."""
        found_list = store.lookup_list(self.list_slug, connection=connection)
        name = (found_list or ListRow(list_id, self.list_slug, self.list_slug)).title(self.newsletter_name)
        if name not in self.named:  # the list's name, as it is now, is in every message (List-Id)
            named = dataclasses.replace(self.frozen, list_name=name)
            self.named[name] = (named, named.message_digest())
        frozen, digest = self.named[name]
        if (found := self._matching(store, list_id, digest, connection)) is not None:
            return found
        store.lock_list(list_id, connection=connection)
        if (found := self._matching(store, list_id, digest, connection)) is not None:
            return found
        return store.create_welcome(
            list_id, self.issue_slug, self.content_hash, frozen.subject, frozen.to_json(), connection=connection
        )

    def _matching(self, store: Store, list_id: int, digest: str, connection: Connection) -> int | None:
        for campaign_id in store.welcome_campaigns(list_id, self.issue_slug, self.content_hash, connection=connection):
            if campaign_id not in self.digests:  # a campaign's content never changes: read once
                row = store.campaign(campaign_id, connection=connection)
                if row is None or not row.content:
                    continue
                try:
                    self.digests[campaign_id] = FrozenCampaign.of(row).message_digest()
                except NewerContentFormat:  # frozen by a newer newsletter: not this content
                    self.digests[campaign_id] = ""
            if self.digests[campaign_id] == digest:
                return campaign_id
        return None


def welcome_of(config: Config, list_slug: str) -> str:
    """The slug of the list's welcome issue; NewsletterError when newsletter.toml gives it none."""
    slug = config.list_settings(list_slug).welcome
    if slug is None:
        raise NewsletterError(
            f"the list '{list_slug}' has no welcome email: name one in newsletter.toml, "
            f'[lists.{list_slug}] welcome = "SLUG" (an issue in issues/)'
        )
    return slug


def prepare_welcome(
    workspace: Workspace, list_slug: str, dsn_text: str, hosted: HostedUnsubscribe | None = None
) -> WelcomeIssue:
    """The list's welcome as its messages will be (through the transport of dsn_text, with its hosted unsubscribe
    if any): checked and frozen, once, for every person it is queued for. ConfigError in one line, at the setting's
    line in newsletter.toml, when it names no issue or the issue would be refused (`newsletter check SLUG` shows
    every problem)."""
    from newsletter.sending.send import prepare  # the send path: imported by serve only when a welcome is set

    config = workspace.config
    slug = welcome_of(config, list_slug)
    setting = _setting(config, list_slug, slug)
    folder = workspace.issues_dir / slug
    if not (folder / "issue.yaml").is_file():
        raise ConfigError(f"{setting} names no issue: write issues/{slug}/issue.yaml (`newsletter new {slug}`)")
    try:
        prepared = prepare(workspace, folder, dsn_text, list_slug, real=True, hosted=hosted)
    except IssueError as exc:
        errors = len(exc.diagnostics)
        raise ConfigError(
            f"{setting}: the issue has {errors} error{'s' if errors != 1 else ''} ({exc}); "
            f"`newsletter check {slug}` lists them"
        ) from None
    except NewsletterError as exc:
        raise ConfigError(f"{setting}: its messages cannot go: {exc}") from None
    row = ListRow(0, list_slug, config.list_title(list_slug) or list_slug)
    return WelcomeIssue(
        list_slug, slug, config.name, prepared.freeze(row), prepared.digest(), folder_signature(workspace, slug)
    )


def folder_signature(workspace: Workspace, slug: str) -> tuple:
    """What the welcome's messages are rendered from, as the file system has it now (each file of the issue's folder
    and of templates/, with its size and time): when it changes, the issue is read and frozen again."""
    files: list[tuple[str, int, int]] = []
    for folder in (workspace.issues_dir / slug, workspace.templates_dir):
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    stat = path.stat()
                    files.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(files)


def _setting(config: Config, list_slug: str, slug: str) -> str:
    """Where the welcome is set: newsletter.toml:LINE: [lists.SLUG] welcome = "…"."""
    text = config.file.read_text(encoding="utf-8") if config.file else ""
    line = toml_line(text, ("lists", list_slug, "welcome"))
    return f'{CONFIG_FILE}{f":{line}" if line else ""}: [lists.{list_slug}] welcome = "{slug}"'


def welcomed_lists(config: Config) -> list[str]:
    """The lists newsletter.toml gives a welcome email, in its order."""
    return [slug for slug, settings in config.lists.items() if settings.welcome]


def welcome_for_command(workspace: Workspace, list_slug: str) -> WelcomeIssue:
    """The list's welcome for a command that queues it (`subscribers add --welcome`, `import --welcome`): frozen for
    NEWSLETTER_TRANSPORT, the transport serve and the worker send it through."""
    import asyncio

    from newsletter.sending.wiring import hosted_unsubscribe
    from newsletter.transports import transport_dsn, transport_for

    dsn_text = transport_dsn(None)
    transport = transport_for(workspace, dsn_text)
    try:
        hosted = hosted_unsubscribe(transport)
    finally:
        asyncio.run(transport.aclose())
    return prepare_welcome(workspace, list_slug, dsn_text, hosted)
