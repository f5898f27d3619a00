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
A provider's reads (suppression lists, account checks before a campaign) go through ApiTransport.read, the one
retrying reader: a RetryPolicy says how often and how long it asks again after a 429, a 5xx or a lost connection,
the provider's answer() says what each response means, and its messages say what failed.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

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


@dataclass(frozen=True)
class RetryPolicy:
    """How ApiTransport.read asks again after a 429, a 5xx or a lost connection.

    backoff: the seconds before each new attempt when the provider names no wait, so `attempts` (one name for the
    count, the first included) is len(backoff) + 1. A longer wait than max_wait asked for is shortened to max_wait
    with `cap`; without it, the read stops there (the provider's too_long message says to run it again later).
    """

    backoff: tuple[float, ...]
    max_wait: float
    cap: bool = False

    @property
    def attempts(self) -> int:
        return len(self.backoff) + 1


@dataclass(frozen=True)
class Again:
    """A response worth asking again (a 429, a 5xx): the problem, for the messages, and the wait the provider asked
    for (Retry-After; None: the policy's backoff)."""

    problem: str
    wait: float | None = None


Answer = TypeVar("Answer")


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
    # One request sends one content to all its recipients (SendGrid, Mailgun, SES): a batch of several (a campaign's
    # versions in two languages, approval emails) goes as one request per content.
    one_content: ClassVar[bool] = False

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
        if self.one_content and len({id(m.body) for m in messages}) > 1:
            return await self._by_content(messages)
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

    async def _by_content(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """One request per content (Body) of the batch, in the order each first appears; the outcomes in the
        batch's order."""
        groups: dict[int, list[int]] = {}
        for index, message in enumerate(messages):
            groups.setdefault(id(message.body), []).append(index)
        outcomes: dict[int, Outcome] = {}
        for indexes in groups.values():
            answers = await self.send_batch([messages[index] for index in indexes])
            outcomes.update(zip(indexes, answers, strict=True))
        return [outcomes[index] for index in range(len(messages))]

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

    async def pause(self, seconds: float) -> None:
        """How read() waits between attempts; the tests replace it, to wait for nothing and see the waits."""
        await asyncio.sleep(seconds)

    async def read(
        self,
        send: Callable[[], Awaitable[httpx.Response]],
        policy: RetryPolicy,
        answer: Callable[[httpx.Response], Answer | Again],
        *,
        exhausted: Callable[[str], str],
        too_long: Callable[[str, float], str] | None = None,
    ) -> Answer:
        """What answer() makes of the first response it does not ask again (Again), after up to policy.attempts
        requests: send() makes one (anew each time: SES signs each), a lost connection is asked again too.
        answer() raises TransportError for a response that no new attempt can mend (credentials refused, 404).
        Raise TransportError(exhausted(last problem)) after the last attempt, and TransportError(too_long(problem,
        seconds)) when the provider asks for a longer wait than policy.max_wait (unless policy.cap)."""
        problem = ""
        for attempt in range(1, policy.attempts + 1):
            wait: float | None = None
            try:
                response = await send()
            except httpx.TransportError as exc:  # refused, reset, timed out: ask again
                problem = f"{type(exc).__name__} {exc}".strip()
            else:
                result = answer(response)
                if not isinstance(result, Again):
                    return result
                problem, wait = result.problem, result.wait
            if attempt == policy.attempts:
                break
            seconds = wait if wait is not None else policy.backoff[attempt - 1]
            if seconds > policy.max_wait:
                if too_long is not None and not policy.cap:
                    raise TransportError(too_long(problem, seconds))
                seconds = policy.max_wait
            await self.pause(seconds)
        raise TransportError(exhausted(problem))

    async def aclose(self) -> None:
        await self.client.aclose()
