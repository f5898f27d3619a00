"""`newsletter subscribers sync` for Mailgun: the domain's bounces, complaints and unsubscribes lists, page after
page (docs/providers/mailgun.md, Suppressions).
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

import httpx

from newsletter.transports._http import Again, ApiTransport, RetryPolicy, retry_after, short
from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    TransportError,
)

NAME = "Mailgun"
# The suppression lists, in the order suppressions() reads them, and the event each entry becomes.
SUPPRESSION_LISTS: dict[str, EventKind] = {
    "bounces": "bounced",
    "complaints": "complained",
    "unsubscribes": "unsubscribed",
}
SUPPRESSION_PAGE_LIMIT = 1000  # "Maximum number of records to return (optional, default: 100, max: 1000)"
# After a 429, a 5xx or a connection error, the same page again three times, 1, 2 and 4 s apart when Mailgun sends
# no Retry-After; a longer Retry-After than 60 s stops the sync: run it again later.
READ_RETRY = RetryPolicy(backoff=(1.0, 2.0, 4.0), max_wait=60.0)
_YEAR = re.compile(r"\b(\d{4})\b")


def parse_suppressions(body: bytes, endpoint: str) -> tuple[list[DeliveryEvent], str | None]:
    """The events on one page of a Mailgun suppression list, and the URL of the next page (None: the end).

    endpoint: "bounces", "complaints" or "unsubscribes". The next page is `paging.next` as Mailgun wrote it,
    unchecked (suppressions() checks its host); None when this page has no items or no next. Raise ValueError
    when the body is not the documented answer: not a JSON object, no items list, an item without an address.
    """
    kind = SUPPRESSION_LISTS.get(endpoint)
    if kind is None:
        raise ValueError(f"no Mailgun suppression list is called {endpoint!r}: {', '.join(SUPPRESSION_LISTS)}")
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    items = answer.get("items")
    if not isinstance(items, list):
        raise ValueError("no items list")
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"an item that is not an object: {item!r}"[:200])
        address = item.get("address")
        if not isinstance(address, str) or "@" not in address:
            raise ValueError(f"an item without an address: {item!r}"[:200])
        created = item.get("created_at")
        listed = f" (listed {created.strip()})" if isinstance(created, str) and created.strip() else ""
        if kind == "bounced":
            said = " ".join(str(item.get(k)).strip() for k in ("code", "error") if item.get(k) not in (None, ""))
            detail = f"hard bounce on Mailgun's bounces list: {said or 'no reason given'}{listed}"
        elif kind == "complained":
            detail = f"spam complaint on Mailgun's complaints list{listed}"
        else:
            detail = f"{_unsubscribed_from(item)} on Mailgun's unsubscribes list{listed}"
        events.append(DeliveryEvent(kind=kind, email=address.strip(), at=_listed_at(created), detail=detail[:500]))
    paging = answer.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    if following is not None and not isinstance(following, str):
        raise ValueError(f"paging.next is not a URL: {following!r}"[:200])
    if not events or not following or not following.strip():
        return events, None
    return events, following.strip()


def _unsubscribed_from(item: dict) -> str:
    """What an unsubscribes record covers, in words: all of the domain's mail ("*") or named tags only."""
    tags = item.get("tags")
    if isinstance(item.get("tag"), str):  # the earlier API's one tag per record
        tags = [item["tag"]]
    named = [tag for tag in tags if isinstance(tag, str) and tag] if isinstance(tags, list) else []
    if not named:
        return "unsubscribed (no tag given; Mailgun's default is *, all mail of the domain)"
    if "*" in named:
        others = [tag for tag in named if tag != "*"]
        return "unsubscribed from all mail of the domain (tags *" + "".join(f", {tag!r}" for tag in others) + ")"
    return "unsubscribed from Mailgun tag " + ", ".join(repr(tag) for tag in named) + " only"


def _listed_at(created: object) -> datetime | None:
    """created_at ("Fri, 18 Oct 2024 18:28:14 UTC") as a datetime, or None.

    The import default "Mon, 01 Jan 0001 00:00:00 UTC" is no date (the parser would read year 0001 as 2001).
    """
    if not isinstance(created, str) or not created.strip():
        return None
    try:
        when = email.utils.parsedate_to_datetime(created.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    year = _YEAR.search(created)
    if year is None or int(year.group(1)) != when.year:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _json(body: bytes) -> dict:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class MailgunSuppressions(ApiTransport):
    """MailgunTransport's suppressions(), and the retrying reads it shares with preflight()."""

    domain: str
    _authorization: str

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on the domain's bounces, complaints and unsubscribes lists, page after page.

        Raise TransportError when Mailgun refuses the key, does not know the domain, keeps failing, answers
        what is not its documented JSON, or gives a next page elsewhere than where the first one was asked.
        """
        for endpoint in SUPPRESSION_LISTS:
            path = f"/v3/{quote(self.domain, safe='')}/{endpoint}"
            url: str | None = f"{self.base_url}{path}?limit={SUPPRESSION_PAGE_LIMIT}"
            read: set[str] = set()
            while url is not None and url not in read:
                read.add(url)
                body = await self._suppression_page(url, endpoint)
                try:
                    events, following = parse_suppressions(body, endpoint)
                except ValueError as exc:
                    raise TransportError(
                        f"{NAME}'s {endpoint} list: the answer is not what Mailgun documents ({exc}): {short(body)}"
                    ) from None
                for event in events:
                    yield event
                url = self._next_page(following, path, endpoint) if following else None

    def _next_page(self, following: str, path: str, endpoint: str) -> str:
        """paging.next if it stays where the first page was asked (scheme, host, port and path), else refuse it."""
        ours, theirs = urlsplit(self.base_url), urlsplit(following)
        same_place = (theirs.scheme.lower(), theirs.netloc.lower()) == (ours.scheme.lower(), ours.netloc.lower())
        if not same_place or unquote(theirs.path) != unquote(path):
            where = f"{theirs.scheme}://{theirs.hostname or ''}{theirs.path}" if theirs.scheme else repr(following[:80])
            raise TransportError(
                f"{NAME}'s {endpoint} list gave its next page at {where}, not at {ours.netloc}{path}: refused, "
                "the request would carry the API key; nothing after this page was read"
            )
        return following

    async def _suppression_page(self, url: str, endpoint: str) -> bytes:
        """The body of one page; 429, 5xx and connection errors are tried again, anything else not 2xx raises."""
        headers = {"Authorization": self._authorization, "Accept": "application/json"}

        def answer(response: httpx.Response) -> bytes | Again:
            status, body = response.status_code, response.content
            if 200 <= status < 300:
                return body
            said = _json(body).get("message")
            said = said if isinstance(said, str) and said else short(body)
            if status in (401, 403):
                raise TransportError(
                    f"{NAME} refused the credentials reading the {endpoint} list ({status}: {said}); check the "
                    "API key before the ':' in NEWSLETTER_TRANSPORT or --transport. A Domain Sending Key may only "
                    "send: sync needs an account key (or a role with access to suppressions)"
                )
            if status == 404:
                raise TransportError(
                    f"{NAME} 404 reading the {endpoint} list ({said}); check the sending domain after the ':' in "
                    "the DSN and its region (?region=eu for a domain created in the EU)"
                )
            if status != 429 and status < 500:
                raise TransportError(f"{NAME} {status} reading the {endpoint} list: {said or 'request refused'}")
            return Again(f"{status}: {said}", retry_after(response.headers))

        return await self.read(
            lambda: self.client.get(url, headers=headers),
            READ_RETRY,
            answer,
            exhausted=lambda problem: (
                f"{NAME} kept failing on the {endpoint} list ({READ_RETRY.attempts} attempts, the last {problem}); "
                "run `newsletter subscribers sync` again later"
            ),
            too_long=lambda problem, wait: (
                f"{NAME} asks to wait {wait:.0f} s before reading the {endpoint} list again ({problem}); run "
                "`newsletter subscribers sync` again later"
            ),
        )
