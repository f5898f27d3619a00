"""What a sender (`send` or `worker`) takes from the workspace and the environment: the store, the transport (its
DSN, with the DKIM signer), the pacing; and what it checks of its transport before it sends a campaign's messages
(the same unsubscribe as the campaign's, the provider's preflight and its unsubscribes recorded first).
"""

from __future__ import annotations

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.message import Campaign, HostedUnsubscribe
from newsletter.sending.frozen import FrozenCampaign
from newsletter.sending.runner import Pacing
from newsletter.store import Store, database_url
from newsletter.subscribers import sync_suppressions
from newsletter.transports import Dsn, Transport
from newsletter.transports.base import hosted_unsubscribe_of, preflight
from newsletter.workspace import Workspace

LOCAL_SCHEMES = ("outbox", "null")  # nothing leaves this machine


def open_store(workspace: Workspace) -> Store:
    return Store.open(database_url(workspace.root))


def is_local(dsn_text: str) -> bool:
    return Dsn.parse(dsn_text).scheme in LOCAL_SCHEMES


def pacing_for(config: Config, frozen: FrozenCampaign | None = None) -> Pacing:
    """This process's pacing; the rate limits are the campaign's own (frozen with it) when it has them."""
    return Pacing(
        concurrency=config.sending.concurrency,
        rate=frozen.rate if frozen is not None else config.sending.rate,
        per_hour=frozen.per_hour if frozen is not None else config.sending.per_hour,
        max_attempts=config.sending.max_attempts,
        lease=config.sending.lease,
    )


def hosted_unsubscribe(transport: Transport) -> HostedUnsubscribe | None:
    return hosted_unsubscribe_of(transport)


def check_transport_fits(campaign: Campaign, transport: Transport) -> None:
    """A campaign's messages carry the unsubscribe it was begun with: only a transport with the same one sends it on
    (another would send links nobody answers, or a second unsubscribe beside the provider's)."""
    mine, theirs = campaign.hosted, hosted_unsubscribe(transport)
    if mine == theirs:
        return
    if mine is None:
        raise NewsletterError(
            f"campaign {campaign.id} carries the unsubscribe links of `newsletter serve`; {transport} uses "
            f"{theirs.description if theirs else 'another unsubscribe'}: send it on with unsubscribe=own"
        )
    raise NewsletterError(
        f"campaign {campaign.id} carries {mine.description}; send it on through the same provider and settings "
        f"(a {mine.provider} DSN with unsubscribe=provider), not {transport}"
    )


async def apply_provider_suppressions(store: Store, transport: Transport, list_id: int) -> int:
    """With a provider's hosted unsubscribe, whoever left through its page is recorded before anything is sent;
    the runner then skips them. As `subscribers sync --list`: unsubscribes count for the list being sent (each
    campaign reads them for its own), bounces and complaints for every list. Returns how many memberships
    changed."""
    if hosted_unsubscribe(transport) is None:
        return 0
    return (await sync_suppressions(store, transport, list_id=list_id)).changed


async def ready(store: Store, transport: Transport, list_id: int) -> None:
    """What a sender does before it sends a campaign's messages: the provider's own checks of the account (a
    stream that would add a second unsubscribe link is refused), then its unsubscribes recorded in the store."""
    await preflight(transport)
    await apply_provider_suppressions(store, transport, list_id)
