"""The welcome emails `serve` sends (sending/welcome.py): each queued in the transaction that confirms its person,
then sent in the background through the server's transport, under a lease like any sender's, and never lost.

    queue(connection, …)   in /confirm's own write: the person's row, committed with their subscription
    later(campaigns)       once committed: a background sender claims what is due of those welcomes and sends it
    send_pending()         at start and every minute: the rows still pending and due (a retry, a row that a server
                           killed before it sent it left until its lease ran out, one queued by `subscribers add
                           --welcome`), and the issue read and frozen again once its files changed

The rows are the ledger's (store/welcomes.py), claimed and recorded as a worker claims and records them (runner.py),
so that serve, other servers and `newsletter worker` share them and none goes twice. The log says why a welcome did
not go, never to whom.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError
from newsletter.web.site import Site

if TYPE_CHECKING:
    from newsletter.message import HostedUnsubscribe
    from newsletter.sending.welcome import WelcomeIssue
    from newsletter.store import Connection

log = logging.getLogger("newsletter.web")
WELCOME_EVERY = 60.0  # seconds between two looks for welcome emails still pending


class WelcomeMail:
    def __init__(self, site: Site):
        self.site, self.store = site, site.store
        self.welcomes: dict[str, WelcomeIssue] = {}  # by list slug
        self.tried: dict[str, tuple] = {}  # by list slug, the files of a changed issue that could not be frozen
        self.sending: set[int] = set()  # welcome campaigns a background sender of this server works on
        self.again: set[int] = set()  # asked for again while it did
        self.readied: dict[int, float] = {}  # as the worker's: when the provider's unsubscribes were last read
        self.skipped: dict[int, str] = {}  # welcomes this server may not send, and why (logged once)
        self.owner = ""  # this server as a sender (runner.sender_id), once it sends

    def prepare(self) -> None:
        """Read and freeze the welcome of every list newsletter.toml gives one; ConfigError (one line) when one
        cannot go: serve does not start with a welcome it would refuse to send."""
        from newsletter.sending.welcome import prepare_welcome, welcomed_lists

        for slug in welcomed_lists(self.site.config):
            self.welcomes[slug] = prepare_welcome(self.site.workspace, slug, *self._transport())

    def _transport(self) -> tuple[str, HostedUnsubscribe | None]:
        from newsletter.sending.wiring import hosted_unsubscribe
        from newsletter.transports import transport_dsn

        return transport_dsn(None), hosted_unsubscribe(self.site.transport())

    def queue(self, connection: Connection, list_slug: str, list_id: int, email: str) -> list[int]:
        """In the caller's transaction: the welcome of the list for this person who is now subscribed (none when
        the list has no welcome, or they had it already); the welcome campaigns queued into."""
        welcome = self.welcomes.get(list_slug)
        if welcome is None:
            return []
        return list(welcome.queue(self.store, list_id, [email], connection=connection))

    def later(self, campaign_ids: list[int]) -> None:
        """Send what is due of these welcomes in the background; one sender a welcome, asked again if it is busy."""
        for campaign_id in campaign_ids:
            if campaign_id in self.sending:
                self.again.add(campaign_id)
                continue
            self.sending.add(campaign_id)
            self.site.in_background(self._sender(campaign_id))

    async def _sender(self, campaign_id: int) -> None:
        try:
            while True:
                self.again.discard(campaign_id)
                await self._send(campaign_id)
                if campaign_id not in self.again:
                    return
        finally:
            self.sending.discard(campaign_id)

    async def _send(self, campaign_id: int) -> None:
        from newsletter.sending.runner import sender_id
        from newsletter.sending.wiring import is_local
        from newsletter.sending.worker import send_running
        from newsletter.transports import transport_dsn

        self.owner = self.owner or sender_id()
        try:
            done = await send_running(
                self.store,
                self.site.transport(),
                self.site.signer,
                self.site.config,
                campaign_id,
                local=is_local(transport_dsn(None)),
                owner=self.owner,
                stop=asyncio.Event(),  # never set: a stopping server lets what it sends be recorded
                readied=self.readied,
                skipped=self.skipped,
                log=log.warning,
            )
        except Exception as exc:  # the transport refused the credentials, the store failed: the next look tries again
            log.warning("welcome emails of campaign %d not sent: %s", campaign_id, exc)
            return
        if done is not None and done.failed:
            log.warning("welcome emails of campaign %d: %d failed for good", campaign_id, done.failed)

    async def send_pending(self) -> None:
        """The welcomes still pending and due, on every welcome campaign; first the issues read again if changed."""
        await self.refresh()
        from newsletter.store import CampaignStatus

        self.later(await asyncio.to_thread(self.store.campaign_ids, CampaignStatus.RUNNING, welcome=True))

    async def refresh(self) -> None:
        """A welcome whose issue's files changed is read and frozen again, for those who join from now on; a version
        that would be refused is not taken (the log says why, once), and the one before goes on."""
        from newsletter.sending.welcome import folder_signature, prepare_welcome

        workspace = self.site.workspace
        for slug, welcome in list(self.welcomes.items()):
            now = await asyncio.to_thread(folder_signature, workspace, welcome.issue_slug)
            if now == welcome.signature or now == self.tried.get(slug):
                continue
            try:
                changed = await asyncio.to_thread(prepare_welcome, workspace, slug, *self._transport())
            except NewsletterError as exc:
                self.tried[slug] = now
                log.warning("the welcome of %s changed and is not taken: %s; the version before goes on", slug, exc)
                continue
            self.welcomes[slug] = changed
            log.info("the welcome of %s changed: those who join from now on get the new version", slug)
