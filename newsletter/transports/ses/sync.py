"""`newsletter subscribers sync` for SES: the account-level suppression list (ListSuppressedDestinations), page after
page, with unsubscribe=provider the contact list's unsubscribes, and the signed, retrying reads preflight() shares
(docs/providers/ses.md, Suppressions).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from newsletter.message import HostedUnsubscribe
from newsletter.transports._http import Again, RetryPolicy, iso_time, retry_after
from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    TransportError,
)
from newsletter.transports.ses.api import RETRY_ERRORS, STOP_ERRORS, error_code
from newsletter.transports.ses.sigv4 import SesSigning, canonical_query
from newsletter.transports.ses.webhooks import _json_object, _list, _recipient


def parse_contacts(body: bytes, topic: str | None) -> tuple[list[DeliveryEvent], str | None]:
    """The unsubscribed contacts in one ListContacts answer, and its NextToken (None on the last page).

    A contact is unsubscribed with UnsubscribeAll, or with an explicit OPT_OUT for `topic` (without a topic: when
    every preference it states is OPT_OUT). TopicDefaultPreferences never count. Raise ValueError when the body is
    not the documented JSON.
    """
    contacts, token = _page_of_addresses(body, "the ListContacts answer", "Contacts", "contact")
    events = []
    for contact, address in contacts:
        preferences = {
            str(item.get("TopicName")): item.get("SubscriptionStatus")
            for item in _list(contact.get("TopicPreferences"))
            if isinstance(item, dict)
        }
        if contact.get("UnsubscribeAll") is True:
            detail = "unsubscribed from every topic of the SES contact list"
        elif topic is not None and preferences.get(topic) == "OPT_OUT":
            detail = f"unsubscribed from the SES topic {topic}"
        elif topic is None and preferences and all(status == "OPT_OUT" for status in preferences.values()):
            detail = "unsubscribed from each topic of the SES contact list"
        else:
            continue
        at = _unix_time(contact.get("LastUpdatedTimestamp"))
        events.append(DeliveryEvent("unsubscribed", address, None, at, detail + (f", {at.isoformat()}" if at else "")))
    return events, token


def _page_of_addresses(body: bytes, what: str, key: str, item: str) -> tuple[list[tuple[dict, str]], str | None]:
    """The objects of one page of a listing (ListContacts, ListSuppressedDestinations), each with its
    EmailAddress, and the page's NextToken (None on the last). Raise ValueError for anything else."""
    data = _json_object(body, what)
    found = data.get(key, [])
    if not isinstance(found, list):
        raise ValueError(f"{key} is not a list")
    token = data.get("NextToken")
    if token is not None and not isinstance(token, str):
        raise ValueError("NextToken is not a string")
    page = []
    for index, entry in enumerate(found):
        if not isinstance(entry, dict):
            raise ValueError(f"{item} {index} is not an object")
        address = _recipient(entry.get("EmailAddress"))
        if address is None:
            raise ValueError(f"{item} {index} has no EmailAddress")
        page.append((entry, address))
    return page, token or None


# Suppressions: the account-level suppression list (ListSuppressedDestinations)

SUPPRESSION_PATH = "/v2/email/suppression/addresses"
# PageSize has no documented maximum (botocore: a bare MaxItems integer); SES's own default page holds 1000.
# No documented maximum page size; SES's default page holds 1000 (aws/aws-cli#7859): docs/providers/ses.md
SUPPRESSION_PAGE_SIZE = 1000
SUPPRESSION_REASONS: dict[str, tuple[EventKind, str]] = {
    "BOUNCE": ("bounced", "hard bounce"),
    "COMPLAINT": ("complained", "spam complaint"),
}
# The first call and three retries of the same page, 1, 2 and 4 s apart without Retry-After (SES sends no rate-limit
# headers); a longer Retry-After than 60 s stops the read with the wait in the message.
READ_RETRY = RetryPolicy(backoff=(1.0, 2.0, 4.0), max_wait=60.0)


def _unix_time(value: object) -> datetime | None:
    """A rest-json timestamp (Unix seconds, maybe fractional; an ISO 8601 string tolerated) as a UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return _unix_time(float(value))
        except ValueError:
            return iso_time(value)
    return None


def parse_suppressions(body: bytes) -> tuple[list[DeliveryEvent], str | None]:
    """The events in one ListSuppressedDestinations answer, and its NextToken (None on the last page).

    BOUNCE -> "bounced", COMPLAINT -> "complained", another reason is skipped. Raise ValueError when the body is
    not the documented JSON (a summary without an address, a list that is not a list).
    """
    summaries, token = _page_of_addresses(
        body, "the ListSuppressedDestinations answer", "SuppressedDestinationSummaries", "summary"
    )
    events = []
    for summary, address in summaries:
        reason = summary.get("Reason")
        if reason not in SUPPRESSION_REASONS:
            continue
        kind, label = SUPPRESSION_REASONS[reason]
        at = _unix_time(summary.get("LastUpdateTime"))
        detail = f"on the SES suppression list: {reason} ({label})" + (f", since {at.isoformat()}" if at else "")
        events.append(DeliveryEvent(kind, address, None, at, detail))
    return events, token


class SesSuppressions(SesSigning):
    """SesTransport's suppressions(), and the retrying reads it shares with preflight()."""

    hosted_unsubscribe: HostedUnsubscribe | None

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on the region's account-level suppression list, page after page (see the module doc);
        with unsubscribe=provider, then every contact of the contact list who unsubscribed (from the topic or all)."""
        async for event in self._account_suppressions():
            yield event
        if self.hosted_unsubscribe is not None:
            async for event in self._contact_list_unsubscribes():
                yield event

    async def _contact_list_unsubscribes(self) -> AsyncIterator[DeliveryEvent]:
        assert self.hosted_unsubscribe is not None
        contact_list = str(self.hosted_unsubscribe.fields["contact_list"])
        topic = self.hosted_unsubscribe.fields.get("topic")
        path = f"/v2/email/contact-lists/{quote(contact_list, safe='')}/contacts/list"
        token: str | None = None
        seen: set[str] = set()
        while True:
            request = {"NextToken": token} if token else {}
            body = await self._call("POST", path, json.dumps(request).encode(), "ListContacts", contact_list)
            try:
                events, token = parse_contacts(body, str(topic) if topic else None)
            except ValueError as exc:
                raise TransportError(f"SES ListContacts: an answer this transport cannot read: {exc}") from None
            for event in events:
                yield event
            if token is None:
                return
            if token in seen:
                raise TransportError("SES ListContacts gave the same NextToken twice; stopping there")
            seen.add(token)

    async def _call(self, method: str, path: str, content: bytes, operation: str, contact_list: str) -> bytes:
        """The body of one contact-list call (signed; JSON); retried on throttling, 5xx and connection errors."""

        def missing(code: str | None, status: int, label: str, text: str) -> str | None:
            if code == "NotFoundException" or status == 404:
                return (
                    f"{label}: no contact list {contact_list} in {self.region} ({text}); create it "
                    "(CreateContactList: one per account and region) or fix ?contact_list="
                )
            return None

        return await self._read(
            method,
            path,
            operation,
            content=content,
            before=missing,
            refused="check the access key",
            again="try again",
            exhausted="nothing was sent, try again later",
        )

    async def _account_suppressions(self) -> AsyncIterator[DeliveryEvent]:
        token: str | None = None
        seen: set[str] = set()
        while True:
            body = await self._suppression_page(token)
            try:
                events, token = parse_suppressions(body)
            except ValueError as exc:
                raise TransportError(
                    f"SES ListSuppressedDestinations: an answer this transport cannot read: {exc}"
                ) from None
            for event in events:
                yield event
            if token is None:
                return
            if token in seen:
                raise TransportError("SES ListSuppressedDestinations gave the same NextToken twice; stopping there")
            seen.add(token)

    async def _suppression_page(self, token: str | None) -> bytes:
        """The body of one page; retried on throttling, 5xx and connection errors; TransportError otherwise."""
        query = {"PageSize": str(SUPPRESSION_PAGE_SIZE)}
        if token:
            query["NextToken"] = token

        def expired(code: str | None, status: int, label: str, text: str) -> str | None:
            if code == "InvalidNextTokenException":
                return f"{label}: the NextToken is invalid or expired ({text}); run the sync again"
            return None

        return await self._read(
            "GET",
            SUPPRESSION_PATH,
            "ListSuppressedDestinations",
            query=query,
            after=expired,
            refused="check the access key in NEWSLETTER_TRANSPORT or --transport",
            again="run the sync again",
            exhausted="nothing is lost, run the sync again later",
            exhausted_where=" on the same page",
        )

    async def _read(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        content: bytes = b"",
        query: dict[str, str] | None = None,
        before: Callable[[str | None, int, str, str], str | None] = lambda *_: None,
        after: Callable[[str | None, int, str, str], str | None] = lambda *_: None,
        refused: str,
        again: str,
        exhausted: str,
        exhausted_where: str = "",
    ) -> bytes:
        """The body of one signed call that reads (the contact list, the suppressions): retried on throttling, 5xx
        and connection errors; TransportError saying what to do otherwise. `before` and `after` name the
        operation's own errors, checked before and after the retryable ones."""
        headers = {"Content-Type": "application/json"} if content else {}
        url = self.base_url + path + (f"?{canonical_query(query)}" if query else "")

        def send() -> Awaitable[httpx.Response]:  # signed anew for each attempt: the signature holds the time
            signed = self.signed_headers(method, path, content, query=query, headers=headers)
            return self.client.request(method, url, headers=signed, content=content or None)

        def answer(response: httpx.Response) -> bytes | Again:
            status, body = response.status_code, response.content
            if 200 <= status < 300:
                return body
            code, text = error_code(response.headers, body)
            label = f"SES {operation} {status}" + (f" {code}" if code else "")
            if message := before(code, status, label, text):
                raise TransportError(message)
            if code in ("AccessDeniedException", "NotAuthorized"):
                raise TransportError(
                    f"{label}: these credentials may not call ses:{operation}; grant it in IAM ({text})"
                )
            if code in STOP_ERRORS:
                raise TransportError(f"{label}: {STOP_ERRORS[code]} ({text})")
            if status in (401, 403):
                raise TransportError(f"{label}: SES refused the credentials ({text}); {refused}")
            if status == 429 or status >= 500 or code in RETRY_ERRORS:
                asked = retry_after(response.headers)
                if asked is not None and asked > READ_RETRY.max_wait:  # even on the last attempt: say the wait
                    raise TransportError(f"{label}: {text}; SES asks to wait {asked:.0f} s, {again} then")
                return Again(f"{status}" + (f" {code}" if code else "") + f": {text}", asked)
            if message := after(code, status, label, text):
                raise TransportError(message)
            raise TransportError(f"{label}: {text}")

        return await self.read(
            send,
            READ_RETRY,
            answer,
            exhausted=lambda problem: (
                f"SES {operation} failed {READ_RETRY.attempts} times{exhausted_where} (last: {problem}); {exhausted}"
            ),
        )
