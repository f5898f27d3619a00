"""Postmark's hosted unsubscribe (unsubscribe=provider): its placeholder, and preflight(), which reads the message
stream and refuses one on which the messages would be wrong (docs/providers/postmark.md, Unsubscribe).
"""

from __future__ import annotations

from urllib.parse import quote

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe
from newsletter.transports._http import short
from newsletter.transports.base import (
    TransportError,
)
from newsletter.transports.postmark.common import _json_or_none
from newsletter.transports.postmark.sync import PostmarkSuppressions

# A Broadcasts stream appends its own link to a message without it: docs/providers/postmark.md (Unsubscribe)
PLACEHOLDER = "{{{ pm:unsubscribe }}}"  # support article 1208, spaces included
STREAM_PATH = "/message-streams/{stream}"


def hosted_unsubscribe(stream: str) -> HostedUnsubscribe:
    """Postmark's own unsubscribe on a stream; the stream is part of it, since each stream keeps its suppressions."""
    return HostedUnsubscribe(
        provider="postmark",
        url=PLACEHOLDER,
        description=f"Postmark's unsubscribe page and its List-Unsubscribe headers (message stream {stream})",
        fields={"stream": stream},
    )


def stream_path(stream: str) -> str:
    return STREAM_PATH.format(stream=quote(stream, safe=""))


def stream_problem(body: bytes, stream: str, hosted: bool) -> str | None:
    """Why a campaign must not go through this stream, from Postmark's answer to GET /message-streams/STREAM; None
    when the stream fits. hosted: unsubscribe=provider. Raise ValueError when the answer is not a message stream."""
    data = _json_or_none(body)
    kind = data.get("MessageStreamType") if isinstance(data, dict) else None
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"postmark: GET {stream_path(stream)} did not answer a message stream: {short(body)}")
    configuration = data.get("SubscriptionManagementConfiguration")
    handling = configuration.get("UnsubscribeHandlingType") if isinstance(configuration, dict) else None
    if not isinstance(handling, str) or not handling:
        # "Broadcast Message Streams require unsubscribe management, Postmark is default. For Inbound and
        # Transactional Streams default is none." (message-streams-api)
        handling = "Postmark" if kind.lower() == "broadcasts" else "None"
    shown_kind, shown_handling = kind, handling
    kind, handling = kind.lower(), handling.lower()
    where = f"postmark+api://…?stream={stream}"
    if kind == "inbound":
        return f"{where}: '{stream}' is an Inbound stream, which receives mail; use a Broadcasts stream to send"
    if hosted and kind != "broadcasts":
        return (
            f"{where}&unsubscribe=provider: '{stream}' is a {shown_kind} stream, and Postmark adds its "
            "unsubscribe link and List-Unsubscribe headers only on Broadcasts streams; use a Broadcasts stream, or "
            "unsubscribe=own with `newsletter serve` for the links"
        )
    if hosted and handling != "postmark":
        return (
            f"{where}&unsubscribe=provider: stream '{stream}' manages unsubscribes on your own (UnsubscribeHandling"
            f"Type {shown_handling}), so Postmark would not replace {PLACEHOLDER}; use "
            "unsubscribe=own with `newsletter serve` for the links"
        )
    if not hosted and kind == "broadcasts" and handling == "postmark":
        return (
            f"{where}&unsubscribe=own: Postmark manages unsubscribes on Broadcasts stream '{stream}' and would add "
            "its own link and List-Unsubscribe beside ours (two links, two suppression lists); use "
            'unsubscribe=provider, or ask Postmark support to enable "Manage unsubscribes on your own" and turn '
            "it on in the stream's settings"
        )
    return None


class PostmarkHostedUnsubscribe(PostmarkSuppressions):
    """PostmarkTransport's preflight()."""

    hosted_unsubscribe: HostedUnsubscribe | None

    async def preflight(self) -> None:
        """Refuse (NewsletterError) a stream on which this transport's messages would be wrong: see the module
        docstring (Unsubscribe). Raise TransportError when Postmark cannot tell (token refused, no such stream, no
        answer after READ_RETRY.attempts tries)."""
        body = await self._get(stream_path(self.stream), f"the message stream '{self.stream}'", "read")
        try:
            problem = stream_problem(body, self.stream, hosted=self.hosted_unsubscribe is not None)
        except ValueError as error:
            raise TransportError(f"{error}; nothing was sent") from None
        if problem:
            raise NewsletterError(problem)
