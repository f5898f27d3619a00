"""`newsletter subscribers sync` for SendGrid: its suppression lists, page after page, and the unsubscribe group of
unsubscribe=provider (docs/providers/sendgrid.md, Suppressions).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

import httpx

from newsletter.transports._http import Again, ApiTransport, RetryPolicy, retry_after, short
from newsletter.transports.base import (
    DeliveryEvent,
    EventKind,
    TransportError,
)
from newsletter.transports.sendgrid.webhooks import _event_time, _json_array, _one_line, _text


def _errors(body: bytes) -> list[dict[str, str]]:
    """SendGrid's `errors` array as {"message", "field"} strings (field "" when absent or null)."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    errors = []
    for item in items:
        if isinstance(item, dict):
            field = item.get("field")
            errors.append(
                {
                    "message": str(item.get("message") or "").strip(),
                    "field": "" if field in (None, "null") else str(field),
                }
            )
    return errors


def _describe(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['message']} ({e['field']})" if e["field"] else e["message"] for e in errors)


SUPPRESSION_PAGE_SIZE = 500  # "The maximum page size for this endpoint is 500 items per page."
# name -> (path, kind); read in this order. Not read: blocks (temporary). The unsubscribe group of
# unsubscribe=provider is read after them (GROUP_SUPPRESSIONS_PATH), other groups never.
SUPPRESSION_LISTS: dict[str, tuple[str, EventKind]] = {
    "bounces": ("/v3/suppression/bounces", "bounced"),
    "invalid_emails": ("/v3/suppression/invalid_emails", "bounced"),
    "spam_reports": ("/v3/suppression/spam_reports", "complained"),
    "unsubscribes": ("/v3/suppression/unsubscribes", "unsubscribed"),
}
SUPPRESSION_SCOPES = ", ".join(f"suppression.{name}.read" for name in SUPPRESSION_LISTS)
GROUP_PATH = "/v3/asm/groups/{group_id}"
GROUP_SUPPRESSIONS_PATH = "/v3/asm/groups/{group_id}/suppressions"
GROUP_SCOPES = "asm.groups.read, asm.groups.suppressions.read"
# Five tries of one page on 429, 5xx or a dropped connection, 2, 4, 8 and 16 s apart when SendGrid names no wait;
# a longer wait than 120 s asked for ends the sync: run it again later.
READ_RETRY = RetryPolicy(backoff=(2.0, 4.0, 8.0, 16.0), max_wait=120.0)


def parse_suppressions(
    body: bytes, list_name: str = "bounces", *, offset: int = 0, limit: int = SUPPRESSION_PAGE_SIZE
) -> tuple[list[DeliveryEvent], int | None]:
    """One page of a suppression list (SUPPRESSION_LISTS names it): its events, and the offset of the next page.

    The next offset is None when the page holds fewer than `limit` entries: the list ends there. Raise ValueError
    when the body is not a JSON array of objects, or when an entry names no address.
    """
    path, kind = SUPPRESSION_LISTS[list_name]
    data = _json_array(body, f"sendgrid {path}", "answer")
    events = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"sendgrid {path}: entry {offset + index} is {type(item).__name__}, not an object")
        email = item.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"sendgrid {path}: entry {offset + index} without an email address")
        at = _event_time(item.get("created"))
        events.append(
            DeliveryEvent(kind=kind, email=email.strip(), at=at, detail=_suppression_detail(list_name, item, at))
        )
    return events, (offset + len(data) if len(data) >= limit else None)


def parse_group_suppressions(body: bytes, group_id: int) -> list[DeliveryEvent]:
    """The events in SendGrid's answer to GET /v3/asm/groups/{group_id}/suppressions: a JSON array of addresses
    (not paged), each "unsubscribed" from the group. Raise ValueError when the body is not a JSON array of addresses.
    """
    path = GROUP_SUPPRESSIONS_PATH.format(group_id=group_id)
    data = _json_array(body, f"sendgrid {path}", "answer", " of addresses")
    events = []
    for index, address in enumerate(data):
        if not isinstance(address, str) or "@" not in address:
            raise ValueError(f"sendgrid {path}: entry {index} is not an email address: {str(address)[:100]}")
        detail = f"unsubscribed from SendGrid unsubscribe group {group_id}"
        events.append(DeliveryEvent(kind="unsubscribed", email=address.strip(), detail=detail))
    return events


def _suppression_detail(list_name: str, item: dict[str, Any], at: datetime | None) -> str:
    """The provider's words for the event log, e.g. "hard bounce (5.1.1) on SendGrid's bounce list since …: 550 …"."""
    since = f" since {at:%Y-%m-%d %H:%M:%S} UTC" if at else ""
    reason = _text(item.get("reason"))
    if list_name == "bounces":
        status = _text(item.get("status"))
        what = {"4": "soft bounce", "5": "hard bounce"}.get(status[:1], "bounce") + (f" ({status})" if status else "")
        detail = f"{what} on SendGrid's bounce list{since}"
    elif list_name == "invalid_emails":
        detail = f"invalid address on SendGrid's invalid email list{since}"
    elif list_name == "spam_reports":
        detail, reason = f"spam report on SendGrid's spam report list{since}", ""
    else:
        detail, reason = f"global unsubscribe on SendGrid's unsubscribe list{since}", ""
    return _one_line(f"{detail}: {reason}" if reason else detail)


def _sync_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before the next try: Retry-After, else X-RateLimit-Reset (Unix time), else None (the backoff)."""
    delay = retry_after(headers, now)
    if delay is not None:
        return delay
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if reset.isdigit():
        return max(1.0, int(reset) - (time.time() if now is None else now))
    return None


class SendgridSuppressions(ApiTransport):
    """SendgridTransport's suppressions(), and the retrying reads it shares with preflight()."""

    key: str
    group_id: int | None
    suppression_page_size: ClassVar[int] = SUPPRESSION_PAGE_SIZE  # the tests lower it, to make short lists long

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on SendGrid's bounce, invalid email, spam report and global unsubscribe lists, page by page,
        and with unsubscribe=provider its unsubscribe group's suppressions too (group_unsubscribe: "unsubscribed").

        Raise TransportError when the key is refused (401, 403), when SendGrid still cannot answer after
        READ_RETRY.attempts tries or asks to wait longer than READ_RETRY.max_wait, and when an answer is malformed.
        """
        limit = self.suppression_page_size
        seen: set[tuple[str, str]] = set()
        for list_name, (path, _) in SUPPRESSION_LISTS.items():
            offset: int | None = 0
            previous: bytes | None = None
            while offset is not None:
                body = await self._suppression_page(path, limit, offset)
                if body == previous:
                    raise TransportError(
                        f"SendGrid answered GET {path} at offset {offset} with the page before it again; its "
                        "pagination did not move on, so the sync stopped"
                    )
                try:
                    events, next_offset = parse_suppressions(body, list_name, offset=offset, limit=limit)
                except ValueError as error:
                    raise TransportError(f"SendGrid's answer could not be read: {error}") from None
                for event in _not_seen(events, seen):
                    yield event
                previous, offset = body, next_offset
        if self.group_id is not None:
            path = GROUP_SUPPRESSIONS_PATH.format(group_id=self.group_id)
            _, body = await self._get(path, None, GROUP_SCOPES)
            try:
                events = parse_group_suppressions(body, self.group_id)
            except ValueError as error:
                raise TransportError(f"SendGrid's answer could not be read: {error}") from None
            for event in _not_seen(events, seen):
                yield event

    async def _suppression_page(self, path: str, limit: int, offset: int) -> bytes:
        """The body of one page (2xx), after up to READ_RETRY.attempts tries on 429, 5xx and dropped connections."""
        _, body = await self._get(path, {"limit": limit, "offset": offset}, SUPPRESSION_SCOPES)
        return body

    async def _get(
        self,
        path: str,
        params: dict[str, int] | None,
        scopes: str,
        *,
        missing_ok: bool = False,
        again: str = "run the sync again later",
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx answer to GET path (or of a 404 with missing_ok), after up to READ_RETRY.attempts
        tries on 429, 5xx and dropped connections. Raise TransportError on 401/403 (naming `scopes`), another 4xx, or
        no answer in time."""
        request = f"GET {path}" + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}

        def answer(response: httpx.Response) -> tuple[int, bytes] | Again:
            status, body = response.status_code, response.content
            if 200 <= status < 300 or (missing_ok and status == 404):
                return status, body
            said = _describe(_errors(body)) or short(body) or "no error message"
            if status in (401, 403):
                hint = "check the key" if status == 401 else "the key may lack the permission"
                what = "the suppression lists" if scopes == SUPPRESSION_SCOPES else "the unsubscribe group"
                raise TransportError(
                    f"SendGrid refused the credentials ({status}: {said}) for {request}; reading {what} needs an "
                    f"API key with read access to them ({scopes}): {hint} in NEWSLETTER_TRANSPORT or --transport"
                )
            if status != 429 and status < 500:
                raise TransportError(f"SendGrid answered {status} to {request}: {said}")
            return Again(f"{status}: {said}", _sync_wait(response.headers))

        return await self.read(
            lambda: self.client.get(self.base_url + path, params=params, headers=headers),
            READ_RETRY,
            answer,
            exhausted=lambda problem: (
                f"SendGrid still answered {problem} after {READ_RETRY.attempts} tries of {request}; {again}"
            ),
            too_long=lambda problem, wait: (
                f"SendGrid answered {problem} to {request} and asks to wait {wait:.0f} s; {again}"
            ),
        )


def _not_seen(events: list[DeliveryEvent], seen: set[tuple[str, str]]) -> list[DeliveryEvent]:
    """The events not yielded before: an address with the same kind on two lists (or a list and the group) goes once."""
    fresh = []
    for event in events:
        key = (event.kind, event.email.lower())
        if key not in seen:
            seen.add(key)
            fresh.append(event)
    return fresh
