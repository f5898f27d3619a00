"""What the API transports share: the HTTP client, the base URL for a DSN, status classes and Retry-After.

A provider module subclasses ApiTransport and supplies build_request() and parse_response(); send_batch here
does the rest, mapping httpx's exceptions and the statuses every provider shares in one place:
  connection errors and timeouts, 429 and 5xx  -> every message "retry" (after Retry-After when given)
  401 and 403                                  -> TransportError: nothing can work with these credentials
  anything else                                -> the provider's parse_response (2xx, 400, 422, …)
A provider that tells more apart within those statuses (a 403 for an unverified domain, a 429 for a spent daily
quota) lists them in `own_statuses`, and its parse_response gets them first; it may raise TransportError to stop
the run (a quota spent: the campaign pauses, everyone still pending).
A message that build_request cannot write (ValueError: an address with no ASCII form) fails alone, before
anything is sent; the others of the batch go in a request without it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from newsletter.message import Outgoing
from newsletter.transports.base import Dsn, Outcome, TransportError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass
class ApiRequest:
    path: str  # appended to the base URL, e.g. "/email/batch"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    data: Any = None  # form fields
    files: Any = None  # multipart parts


def api_base_url(dsn: Dsn, default_host: str) -> str:
    """`default` is the provider's real host; any other host[:port] is used as given (http on this machine)."""
    if dsn.host in ("", "default"):
        return f"https://{default_host}"
    scheme = "http" if dsn.host in LOCAL_HOSTS else "https"
    host = f"[{dsn.host}]" if ":" in dsn.host else dsn.host
    return f"{scheme}://{host}" + (f":{dsn.port}" if dsn.port else "")


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, its name in any case; None when absent or not text (webhook headers arrive in any case)."""
    try:
        items = list(headers.items())
    except (AttributeError, TypeError):
        return None
    wanted = name.lower()
    for key, value in items:
        if isinstance(key, str) and key.lower() == wanted:
            return value if isinstance(value, str) else None
    return None


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 time from a provider's JSON, in UTC when it names no zone; None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def short(body: bytes, limit: int = 200) -> str:
    """A response body as one short line for a message."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ApiTransport:
    """Base of the provider transports: one HTTP request per batch."""

    scheme: ClassVar[str]
    max_batch: ClassVar[int]
    default_host: ClassVar[str]
    name: ClassVar[str]  # the provider's name in messages, e.g. "Postmark"
    own_statuses: ClassVar[frozenset[int]] = frozenset()  # statuses parse_response classifies itself

    def __init__(self, dsn: Dsn, *, client: httpx.AsyncClient | None = None):
        self.dsn = dsn
        self.base_url = api_base_url(dsn, self.default_host)
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT)

    def __str__(self) -> str:
        return str(self.dsn)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        raise NotImplementedError

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        raise NotImplementedError

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        try:
            request = self.build_request(messages)
        except ValueError as exc:
            return await self._without_unwritable(messages, exc)
        try:
            response = await self.client.request(
                request.method,
                self.base_url + request.path,
                headers=request.headers,
                json=request.json,
                content=request.content,
                data=request.data,
                files=request.files,
            )
        except httpx.TransportError as exc:  # refused, reset, timed out: nothing was decided
            reason = f"{self.name}: {type(exc).__name__} {exc}".strip()
            return [Outcome.retry(reason) for _ in messages]
        status, body = response.status_code, response.content
        if status in self.own_statuses:
            return self.parse_response(status, response.headers, body, messages)
        if status in (401, 403):
            raise TransportError(
                f"{self.name} refused the credentials ({status}: {short(body)}); check the key in "
                "NEWSLETTER_TRANSPORT or --transport"
            )
        if status == 429 or status >= 500:
            delay = retry_after(response.headers)
            return [Outcome.retry(f"{self.name} {status}: {short(body)}", delay) for _ in messages]
        return self.parse_response(status, response.headers, body, messages)

    async def _without_unwritable(self, messages: Sequence[Outgoing], error: ValueError) -> list[Outcome]:
        """Fail the messages that cannot be written even alone and send the others (nothing was sent yet); raise
        the error again when each can (the batch itself is wrong, e.g. two campaigns in one: a bug to see)."""
        unwritable: dict[int, Outcome] = {}
        for index, message in enumerate(messages):
            try:
                self.build_request([message])
            except ValueError as exc:
                unwritable[index] = Outcome.failed(f"{self.name}: the message cannot be written: {exc}")
        if not unwritable:
            raise error
        rest = [message for index, message in enumerate(messages) if index not in unwritable]
        answers = iter(await self.send_batch(rest) if rest else [])
        return [unwritable[index] if index in unwritable else next(answers) for index in range(len(messages))]

    async def aclose(self) -> None:
        await self.client.aclose()
