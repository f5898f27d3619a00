"""`newsletter subscribers sync` for Postmark: the stream's suppression list, read in one suppressions/dump answer
(docs/providers/postmark.md, Suppressions).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx

from newsletter.transports._http import Again, ApiTransport, RetryPolicy, iso_time, retry_after, short
from newsletter.transports.base import (
    DeliveryEvent,
    TransportError,
)
from newsletter.transports.postmark.common import _error, _json_or_none, _one_line, _text
from newsletter.transports.postmark.webhooks import SUPPRESSION_KINDS

# The dump does not page: one answer is the whole list (docs/providers/postmark.md, Suppressions).
SUPPRESSIONS_PATH = "/message-streams/{stream}/suppressions/dump"
# Four attempts, 2, 5 and 10 s apart when Postmark gives no Retry-After (it documents none); never longer than 120 s.
READ_RETRY = RetryPolicy(backoff=(2.0, 5.0, 10.0), max_wait=120.0, cap=True)


def suppressions_path(stream: str) -> str:
    return SUPPRESSIONS_PATH.format(stream=quote(stream, safe=""))


def parse_suppressions(body: bytes) -> tuple[list[DeliveryEvent], None]:
    """Return the events in one answer of /message-streams/{stream}/suppressions/dump, and the next page: None.

    The dump is not paged (see the module docstring), so the second item is always None. HardBounce is "bounced",
    SpamComplaint "complained", ManualSuppression "unsubscribed" (SUPPRESSION_KINDS); another reason is skipped.
    Raise ValueError when the body is not {"Suppressions": [...]} or an entry has no address.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeError) as error:
        raise ValueError(f"postmark suppressions: the answer is not JSON ({error}): {short(body)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Suppressions"), list):
        raise ValueError(f'postmark suppressions: expected {{"Suppressions": [...]}}, got {short(body)}')
    events = []
    for entry in data["Suppressions"]:
        if not isinstance(entry, dict):
            raise ValueError(f"postmark suppressions: an entry is not an object: {str(entry)[:200]}")
        email = entry.get("EmailAddress")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"postmark suppressions: an entry without an EmailAddress: {json.dumps(entry)[:200]}")
        reason = entry.get("SuppressionReason")
        kind = SUPPRESSION_KINDS.get(reason) if isinstance(reason, str) else None
        if kind is None:
            continue
        origin = _text(entry.get("Origin"))
        created = _text(entry.get("CreatedAt"))
        detail = f"suppressed: {reason}" + (f" by {origin}" if origin else "") + (f" at {created}" if created else "")
        events.append(
            DeliveryEvent(kind=kind, email=email.strip(), at=iso_time(created), detail=_one_line(detail), key=None)
        )
    return events, None


class PostmarkSuppressions(ApiTransport):
    """PostmarkTransport's suppressions(), and the retrying GET that preflight() reads the stream with."""

    _token: str
    stream: str

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on this stream's suppression list, read from one suppressions/dump answer.

        Raise TransportError when Postmark refuses the token (401/403), keeps answering 429 or 5xx (or cannot be
        reached) after READ_RETRY.attempts tries, refuses the request (404/422, e.g. no such stream), or answers
        something else than the documented JSON.
        """
        body = await self._get(
            suppressions_path(self.stream), f"the suppression list of stream '{self.stream}'", "synced"
        )
        try:
            events, _ = parse_suppressions(body)
        except ValueError as error:
            raise TransportError(f"{error}; nothing was synced") from None
        for event in events:
            yield event

    async def _get(self, path: str, what: str, done: str) -> bytes:
        """The body of a 2xx answer to GET path, asked up to READ_RETRY.attempts times on 429, 5xx and lost
        connections (a longer Retry-After is shortened to READ_RETRY.max_wait).

        what names the resource in messages ("the suppression list of stream 'broadcast'"); done says what did not
        happen when it fails ("synced"). Raise TransportError on 401/403, another 4xx, or no answer in time.
        """
        url = self.base_url + path
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self._token}

        def answer(response: httpx.Response) -> bytes | Again:
            status, body = response.status_code, response.content
            if 200 <= status < 300:
                return body
            if status in (401, 403):
                raise TransportError(
                    f"postmark refused the credentials ({status}: {short(body)}) for {what}; it needs the "
                    "server's API token, check it in NEWSLETTER_TRANSPORT or --transport"
                )
            if status != 429 and status < 500:
                code, text = _error(_json_or_none(body))
                said = f"ErrorCode {code}: {_one_line(text)}" if code is not None else short(body)
                raise TransportError(
                    f"postmark {status} for {what} ({said}); check ?stream= in the transport DSN: the ID of a "
                    "message stream of this server"
                )
            return Again(f"{status}: {short(body)}", retry_after(response.headers))

        def exhausted(problem: str) -> str:
            return (
                f"postmark: {what} could not be read after {READ_RETRY.attempts} attempts (last: {problem}); nothing "
                f"was {done}, try again later"
            )

        return await self.read(lambda: self.client.get(url, headers=headers), READ_RETRY, answer, exhausted=exhausted)
