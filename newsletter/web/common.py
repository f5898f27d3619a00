"""What every group of routes shares: security headers, the refusal limiter, request bodies and forms, masked
addresses (the keyed hash of a client's address is tokens.ip_hash, which an import records too)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from newsletter.tokens import MAX_ADDRESS

MAX_BODY = 16 * 1024  # a one-click POST is 26 bytes; a sign-up form a few hundred
MAX_FIELDS = 20  # a one-click POST has one field, the page's buttons two, a sign-up form three
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token must not leak to the pages linked from here
    "Cache-Control": "no-store",
}


# What a plain-text answer (a one-click POST's, a webhook's) needs of them: it is never a document to frame or
# to run, so no policy; but never sniffed as one, never cached, and no token in a Referer.
TEXT_HEADERS = ("X-Content-Type-Options", "Cache-Control", "Referrer-Policy")


class SecurityHeaders:
    """Adds the security headers a response does not set itself (pure ASGI: streaming responses keep working)."""

    def __init__(self, app):
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        self.text_headers = [(k.lower().encode(), SECURITY_HEADERS[k].encode()) for k in TEXT_HEADERS]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower(): v for k, v in headers}
                text = present.get(b"content-type", b"").startswith(b"text/plain")
                headers += [(k, v) for k, v in (self.text_headers if text else self.headers) if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def address_block(host: str | None) -> str:
    """The address block a client is in (IPv4 /24, IPv6 /48): what limits count by."""
    return _block(host or "") if len(host or "") <= MAX_ADDRESS else "unknown"


@functools.lru_cache(maxsize=4096)  # the same clients come back: parsing an address costs more than the request
def _block(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "unknown"
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class BlockLimiter:
    """Counts events per address block in a sliding window; past the limit, `count` is true for that block.

    Holds at most limit + 1 moments a block, and no block whose window has emptied once a window has passed, so
    that its size follows the blocks seen lately, not every one ever seen. Per process: copies behind a proxy
    each keep their own.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.seen: dict[str, deque[float]] = {}
        self.swept_at = clock()

    def count(self, host: str | None) -> bool:
        """Count one event; True when this block is over its limit."""
        moment = self.clock()
        if moment - self.swept_at > self.window:
            self._sweep(moment)
        events = self.seen.setdefault(address_block(host), deque())
        while events and events[0] < moment - self.window:
            events.popleft()
        if len(events) <= self.limit:  # one past the limit is enough to know it is over
            events.append(moment)
        return len(events) > self.limit

    def _sweep(self, moment: float) -> None:
        """Forget the blocks with no event left in the window."""
        self.seen = {block: events for block, events in self.seen.items() if events[-1] >= moment - self.window}
        self.swept_at = moment


def mask(address: str) -> str:
    """m•••@example.org: enough for its owner to recognise, not enough to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


def hashed(path: str) -> str:
    """What the logs hold of a path with a token in it."""
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def header(request: Request, name: bytes) -> str:
    """One request header by its lower-case name ("" when absent). The routes read a few: a dict made once per
    request costs less than Starlette's Headers, which decodes every name on each lookup."""
    found = request.scope.get("newsletter.headers")
    if found is None:
        found = request.scope["newsletter.headers"] = dict(request.scope["headers"])
    return found.get(name, b"").decode("latin-1")


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than limit (read no further)."""
    declared = header(request, b"content-length")
    if declared and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk, more = message.get("body", b""), message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's request.form() reads the cached body
    return body


async def form_fields(request: Request, body: bytes) -> dict[str, str] | None:
    """A small form's fields; None for what is not one (more than MAX_FIELDS fields, a file, broken multipart),
    which the routes answer 400. Urlencoded (Gmail's one-click, a page's button, a sign-up) is parsed here:
    Starlette's form parser costs more than the rest of the request."""
    try:
        if header(request, b"content-type").startswith("multipart/form-data"):
            form = await request.form(max_files=0, max_fields=MAX_FIELDS)
            return {key: value for key, value in form.items() if isinstance(value, str)}
        return dict(parse_qsl(body.decode("utf-8", errors="replace"), max_num_fields=MAX_FIELDS))
    except (HTTPException, MultiPartException, ValueError):  # ValueError: parse_qsl's too many, a bad charset
        return None
