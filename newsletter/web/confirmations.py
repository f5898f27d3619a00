"""The confirmation emails `serve` sends itself: built by the message code (Notice), sent in the background in
batches through the server's transport, and never lost.

The form's answer does not wait for the mail server: a few senders take what waits in batches as large as the
transport takes, so that a hundred sign-ups at once cost a few of its calls. What became of each email is an
event (confirmation-sent, or confirmation-refused when the mail server refused the address for good), written
with the writer's next group. One that never went (the server killed first, the mail server unreachable) is
found by resend_unsent, which a running server calls now and then: it claims such requests (store.py's
unsent_confirmations, so that two servers never both send one) and sends them. The log says why an email did
not go, never to whom.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.message import Notice, Outgoing
from newsletter.store import now
from newsletter.transports import Outcome
from newsletter.web.site import Site

log = logging.getLogger("newsletter.web")
CONFIRMING_AT_ONCE = 4  # background senders of confirmation emails, each a batch at a time
RESEND_EVERY = 300.0  # seconds between two looks for confirmations that never went
RESEND_AFTER = dt.timedelta(minutes=1)  # a younger request is still its own server's to send
RESEND_WITHIN = dt.timedelta(days=1)  # an older one is left: the person has had time to sign up again
RETRY = "retry"  # a confirmation that did not go this time
RECORDED_WITHIN = 5.0  # seconds after which what became of a confirmation is in the store (LATER_WITHIN and more)


@dataclass(frozen=True)
class Confirmation:
    """A confirmation email to send: to whom, for which list (its link is on base_url)."""

    slug: str
    list_id: int
    subscriber_id: int
    request_id: int  # the sign-up request its link confirms
    email: str
    name: str
    lang: str | None = None  # chosen on the form (else the one held): the email's language, once the list's


class ConfirmationMail:
    def __init__(self, site: Site, notice: Callable[[str, str | None], Notice]):
        # notice(slug, lang): the list's email in a reader's language, unsent
        self.site, self.store, self.notice = site, site.store, notice
        self.waiting: list[Confirmation] = []
        self.sending: set[tuple[int, int]] = set()  # (subscriber, list) waiting or being sent by this server
        self.senders: set[asyncio.Task] = set()

    def later(self, confirmation: Confirmation) -> None:
        """Send it in the background, with whatever else waits."""
        self.waiting.append(confirmation)
        self.sending.add((confirmation.subscriber_id, confirmation.list_id))
        if len(self.senders) < CONFIRMING_AT_ONCE:
            task = self.site.in_background(self._send_waiting())
            self.senders.add(task)
            task.add_done_callback(self.senders.discard)

    async def _send_waiting(self) -> None:
        """Send confirmations until none waits, then record what became of them: sent, or refused for good."""
        while self.waiting:
            batch = self.waiting[: self._max_batch()]
            del self.waiting[: len(batch)]
            pairs = [(c.subscriber_id, c.list_id) for c in batch]
            try:
                results = await self._send(batch)
            finally:  # once what became of them is recorded (with the next group) or, for those to try again, not
                asyncio.get_running_loop().call_later(RECORDED_WITHIN, self.sending.difference_update, pairs)
            if done := [(c.subscriber_id, c.list_id, refused) for c, refused in results if refused != RETRY]:
                self.site.writer.later(self.store.confirmations_done, done)  # killed first: sent again

    def _max_batch(self) -> int:
        try:
            return max(1, self.site.transport().max_batch)
        except Exception:
            return 500  # all in one: _send() says why, once

    async def _send(self, batch: list[Confirmation]) -> list[tuple[Confirmation, str | None]]:
        """Send a batch of confirmations; for each, None once the mail server took it, RETRY if it did not this
        time, or why it was refused for good."""
        try:
            transport = self.site.transport()
        except Exception as exc:
            log.warning("%d confirmations not sent: %s", len(batch), exc)
            return [(c, RETRY) for c in batch]
        at, base = now(), self.site.config.base_url  # never a request's Host: anyone can write one
        built: list[tuple[Confirmation, Outgoing]] = []
        results: dict[int, str | None] = {}
        for c in batch:
            token = self.site.signer.sign_confirmation(c.subscriber_id, c.slug, c.request_id, at)
            try:
                message = self.notice(c.slug, c.lang).build(
                    c.email,
                    c.name or None,
                    f"{c.subscriber_id}-{c.slug}-{int(at.timestamp())}",
                    {"confirm_url": f"{base}/confirm/{token}"},
                )
            except Exception as exc:
                log.warning("confirmation for %s not sent: %s", c.slug, exc)
                results[id(c)] = str(exc)
                continue
            built.append((c, message))
        try:
            outcomes = await transport.send_batch([message for _, message in built]) if built else []
        except Exception as exc:
            log.warning("%d confirmations not sent: %s", len(built), exc)
            outcomes = [Outcome.retry(str(exc))] * len(built)
        for (c, _), outcome in zip(built, outcomes, strict=True):
            if outcome.status != "sent":
                log.warning("a confirmation not sent: %s", outcome.reason)
            sent, retry = outcome.status == "sent", outcome.status == "retry"
            results[id(c)] = None if sent else RETRY if retry else outcome.reason or "refused"
        return [(c, results[id(c)]) for c in batch]

    async def resend_unsent(self) -> None:
        """Send the confirmations of the last day that never went: a server killed before it sent them, a mail
        server that could not be reached. A request younger than RESEND_AFTER is still its server's own."""
        if not self.site.config.base_url:  # no list open to sign-up (create_app), and nothing to make links with
            return
        at = now()
        claimed_at, unsent = await asyncio.to_thread(
            self.store.unsent_confirmations, at - RESEND_WITHIN, at - RESEND_AFTER, set(self.sending)
        )
        if not unsent:
            return
        log.info("sending %d confirmations that had not gone", len(unsent))
        batch = [
            Confirmation(u.list_slug, u.list_id, u.subscriber_id, u.request_id, u.email, u.name or "", u.lang)
            for u in unsent
        ]
        results, size = [], self._max_batch()
        for start in range(0, len(batch), size):
            results += await self._send(batch[start : start + size])
        done = [(c.subscriber_id, c.list_id, refused) for c, refused in results if refused != RETRY]
        await asyncio.to_thread(self.store.finish_claims, claimed_at, [c.subscriber_id for c in batch], done)
