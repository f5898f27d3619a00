"""Mailgun's hosted unsubscribe (?unsubscribe=provider): its %tag_unsubscribe_url% and one tag a list, and
preflight(), which reads the domain's tracking settings before anything is sent (docs/providers/mailgun.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

import httpx

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Outgoing
from newsletter.transports._http import short
from newsletter.transports.base import (
    TransportError,
    not_built_for,
)
from newsletter.transports.mailgun.sync import NAME, MailgunSuppressions, _json

# Characters no deliverable address contains outside a quoted local part (which we do not accept either).
_BAD_ADDRESS_CHARS = re.compile(r'[\s<>,;"()\[\]\\\x00-\x1f\x7f]')
# Mailgun's hosted unsubscribe (unsubscribe=provider): its variable for "all tags provided in the message", one tag
# per message (the list's slug), and the headers it then writes itself.
# Mailgun's unsubscribe is per tag: one tag a list, and its tracking must be set so: docs/providers/mailgun.md
TAG_UNSUBSCRIBE_URL = "%tag_unsubscribe_url%"
MAX_TAG = 128  # "Tags are case insensitive and should be ascii only. Maximum tag length is 128 characters."


def hosted_unsubscribe(domain: str) -> HostedUnsubscribe:
    """What unsubscribe=provider gives a Mailgun transport: the tag variable, for its sending domain's lists."""
    return HostedUnsubscribe(
        provider="mailgun",
        url=TAG_UNSUBSCRIBE_URL,
        description=(
            f"Mailgun's hosted unsubscribe for {domain} (%tag_unsubscribe_url%, each message tagged with its list; "
            "Mailgun writes List-Unsubscribe and keeps the unsubscribes list)"
        ),
        fields={"domain": domain},
    )


def list_tag(message: Outgoing) -> str | None:
    """The list's slug, the o:tag of its messages: the List-Id's <slug.sender-domain>, or None."""
    list_id = message.headers.get("List-Id") or ""
    inside = list_id[list_id.rfind("<") + 1 : list_id.rfind(">")] if "<" in list_id and ">" in list_id else ""
    suffix = "." + message.sender.domain
    slug = inside[: -len(suffix)] if inside.endswith(suffix) else ""
    return slug if slug and slug.isascii() and len(slug) <= MAX_TAG and not _BAD_ADDRESS_CHARS.search(slug) else None


def hosted_problem(messages: Sequence[Outgoing], hosted: HostedUnsubscribe) -> str | None:
    """Why these messages cannot go out with Mailgun's unsubscribe (one line), or None.

    Every message must have been built for it (the placeholder's value is Mailgun's variable, no List-Unsubscribe of
    ours), the issue must carry %%unsubscribe_url%% in its HTML and in its text, and the List-Id must name the list.
    """
    for message in messages:
        if problem := not_built_for(message, hosted, "Mailgun"):
            return problem
        if list_tag(message) is None:
            return f"{message.key} has no List-Id naming its list (<slug.{message.sender.domain}>) to tag it with"
    rendered = messages[0].body.rendered
    for kind, parts in (("HTML", rendered.html_parts), ("text", rendered.text_parts)):
        if not any(not isinstance(part, str) and part[0] == "unsubscribe_url" for part in parts):
            return (
                f"the issue's {kind} part has no %%unsubscribe_url%%, so it would carry no Mailgun unsubscribe link; "
                "keep it in the footer template"
            )
    return None


class MailgunHostedUnsubscribe(MailgunSuppressions):
    """MailgunTransport's preflight()."""

    hosted_unsubscribe: HostedUnsubscribe | None

    async def preflight(self) -> None:
        """With unsubscribe=provider, refuse a domain whose messages would lack Mailgun's link or carry two.

        Reads GET /v3/domains/{domain}/tracking: unsubscribe tracking must be active (else %tag_unsubscribe_url%
        stays as written) and its HTML and text footers blank (else Mailgun appends its own footer, a second
        link). Raise NewsletterError saying what to change; TransportError when Mailgun cannot be asked.
        """
        if self.hosted_unsubscribe is None:
            return
        where = f"{NAME}'s tracking settings for {self.domain}"
        url = f"{self.base_url}/v3/domains/{quote(self.domain, safe='')}/tracking"
        try:
            response = await self.client.get(
                url, headers={"Authorization": self._authorization, "Accept": "application/json"}
            )
        except httpx.TransportError as exc:
            raise TransportError(f"{where} could not be read ({type(exc).__name__} {exc}); try again".strip()) from None
        status, body = response.status_code, response.content
        said = _json(body).get("message")
        said = said if isinstance(said, str) and said else short(body)
        if status in (401, 403):
            raise TransportError(
                f"{NAME} refused the key reading {where} ({status}: {said}); unsubscribe=provider needs an account "
                "key (a Domain Sending Key may only send)"
            )
        if status == 404:
            raise TransportError(
                f"{NAME} 404 reading {where} ({said}); check the sending domain after the ':' in the DSN and its "
                "region (?region=eu for a domain created in the EU)"
            )
        if not 200 <= status < 300:
            raise TransportError(f"{NAME} {status} reading {where}: {said or 'no answer'}; try again")
        problem = tracking_problem(body, self.domain)
        if problem:
            raise NewsletterError(f"{NAME} (unsubscribe=provider): {problem}")


def tracking_problem(body: bytes, domain: str) -> str | None:
    """What in a GET /v3/domains/{domain}/tracking answer stops Mailgun's hosted unsubscribe working alone, or None."""
    tracking = _json(body).get("tracking")
    unsubscribe = tracking.get("unsubscribe") if isinstance(tracking, dict) else None
    if not isinstance(unsubscribe, dict):
        return f"the tracking settings of {domain} are not the documented answer: {short(body)}"
    settings = f"Sending > Domain settings > Tracking > Unsubscribes for {domain}"
    if unsubscribe.get("active") is not True:
        return (
            f"unsubscribe tracking is off for {domain}, so %tag_unsubscribe_url% would reach readers as written; "
            f"turn it on in {settings} (its DNS tracking record first), or send without unsubscribe=provider"
        )
    footers = [kind for kind in ("html_footer", "text_footer") if str(unsubscribe.get(kind) or "").strip()]
    if footers:
        return (
            f"Mailgun appends its unsubscribe footer ({' and '.join(footers)}) to every message of {domain}, a "
            f"second link beside the footer's: empty the HTML and text footers in {settings}"
        )
    return None
