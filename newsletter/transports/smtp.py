"""smtp://user:pass@host:port?tls=starttls|ssl|none&pool=4&timeout=60 — SMTP through aiosmtplib, connections reused.

A batch goes over one pooled connection, one message after another, each answer reported as it comes
(send_each). What the server says maps to outcomes in
one place (SMTP_OUTCOMES below): 4xx and a dropped connection are "retry", 5xx is "failed", and a 5.1.x
"no such user" is also a hard bounce. Wrong credentials raise TransportError: nothing can work then.
Messages are DKIM-signed here when a signer is configured (message.DkimSigner).
Addresses: an international domain goes in A-labels (xn--…) in MAIL FROM and RCPT TO as in the headers; a local
part that is not ASCII goes with SMTPUTF8 (RFC 6531) when the server offers it, and fails that one message when
it does not. A message that cannot be written fails alone; the others of the batch go.
`?unsubscribe=provider` is refused: an SMTP server hosts no unsubscribe page, so the links are `newsletter serve`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import ClassVar

import aiosmtplib

from newsletter.errors import NewsletterError
from newsletter.message import DkimSigner, Outgoing
from newsletter.transports.base import Dsn, Outcome, Record, TransportError, refuse_hosted_unsubscribe

TLS_MODES = ("starttls", "ssl", "none")
_HARD_BOUNCE = re.compile(r"\b5\.1\.[0-9]+\b")  # 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.10 null MX…


def outcome_for_reply(code: int, message: str) -> Outcome:
    """The outcome of an SMTP reply to one message."""
    text = f"smtp {code}: {' '.join(message.split())}"
    if 200 <= code < 300:
        return Outcome.sent()
    if 400 <= code < 500:
        return Outcome.retry(text)
    hard = code in (550, 551, 553) and bool(_HARD_BOUNCE.search(message)) or code == 551
    return Outcome.failed(text, bounce=hard)


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, with one MAIL-RCPT-DATA exchange for messages already in their wire form.

    aiosmtplib's data() rewrites line endings and doubles leading dots with two regular-expression passes over the
    whole message (about 1.8 ms for one of 76 KB, more than everything else a send costs), and its mail() and
    rcpt() parse each address again. Our messages need none of it: addresses were validated when they were
    stored, every line ends in CRLF and none starts with "." (message.py writes such a line's dot as =2E, so the
    body is safe by construction; the head, where a DKIM signature may have been added, is checked). A message
    whose head fails the check goes through aiosmtplib's own mail(), rcpt() and data().
    """

    async def send_prepared(self, sender: str, recipient: str, data: bytes) -> None:
        if self.is_ehlo_or_helo_needed:
            await self.ehlo()
        options = [f"SIZE={len(data)}".encode()] if self.supports_extension("size") else []
        utf8 = not (sender.isascii() and recipient.isascii())  # a local part: the domains are in A-labels
        if utf8 and not self.supports_extension("smtputf8"):
            # Not the address itself: the reason is logged, and a log says why, never to whom.
            who = "recipient" if sender.isascii() else "sender"
            raise aiosmtplib.SMTPNotSupported(
                f"the {who}'s address has a local part that is not ASCII and the server does not offer SMTPUTF8 "
                "(RFC 6531), which it needs"
            )
        if utf8 or not wire_ready(data):
            encoding = "utf-8" if utf8 else "ascii"
            mail_options = [option.decode() for option in options] + (["SMTPUTF8"] if utf8 else [])
            await self.mail(sender, options=mail_options, encoding=encoding)
            await self.rcpt(recipient, encoding=encoding)
            await self.data(data)
            return
        try:
            # One timer for the whole exchange rather than one per reply (asyncio.wait_for's cost, four times).
            async with asyncio.timeout(self.timeout):
                await self._exchange(sender, recipient, data, options)
        except TimeoutError:
            self.close()  # the replies may be out of step now: never reuse this connection
            raise aiosmtplib.SMTPTimeoutError(f"no reply from the server in {self.timeout:g} s") from None
        except aiosmtplib.SMTPServerDisconnected:
            self.close()
            raise

    async def _exchange(self, sender: str, recipient: str, data: bytes, options: list[bytes]) -> None:
        protocol = self.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        reply = await protocol.execute_command(b"MAIL", b"FROM:<" + sender.encode() + b">", *options, timeout=None)
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        reply = await protocol.execute_command(b"RCPT", b"TO:<" + recipient.encode() + b">", timeout=None)
        if reply.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
        reply = await protocol.execute_command(b"DATA", timeout=None)
        if reply.code != 354:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        # Written and then read with no await between, as aiosmtplib's own data() does.
        protocol.write(data)
        protocol.write(b".\r\n")
        reply = await protocol.read_response(timeout=None)
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)


def wire_ready(data: bytes) -> bool:
    """True when the head of a message (what precedes its first blank line) has CRLF line ends only and no line
    starting with '.': the rest is quoted-printable from message.py, safe by construction."""
    end_of_head = data.find(b"\r\n\r\n")
    head = data[:end_of_head]
    return (
        end_of_head > 0
        and data.endswith(b"\r\n")
        and not head.startswith(b".")
        and b"\n." not in head
        and head.count(b"\n") == head.count(b"\r\n") == head.count(b"\r")
    )


class SmtpTransport:
    scheme: ClassVar[str] = "smtp"
    max_batch: ClassVar[int] = 20  # messages sent in a row over one connection

    def __init__(
        self,
        dsn: Dsn,
        *,
        tls: str,
        pool_size: int = 4,
        timeout: float = 60.0,
        dkim: DkimSigner | None = None,
    ):
        self.dsn = dsn
        self.tls = tls
        self.timeout = timeout
        self.dkim = dkim
        self._idle: asyncio.Queue[_Client] = asyncio.Queue()
        self._slots = asyncio.Semaphore(pool_size)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, dkim: DkimSigner | None = None, **_: object) -> SmtpTransport:
        if not dsn.host:
            raise NewsletterError("smtp:// needs a host, e.g. smtp://user:pass@smtp.example.org:587")
        refuse_hosted_unsubscribe(
            dsn, "an SMTP server hosts no unsubscribe page (only an API transport's provider can)"
        )
        default_tls = "ssl" if dsn.port == 465 else "starttls"
        tls = dsn.option("tls", default_tls, TLS_MODES)
        try:
            pool = int(dsn.option("pool", "4"))
        except ValueError:
            raise NewsletterError("smtp://…?pool= takes a number of connections, e.g. pool=4") from None
        try:
            timeout = float(dsn.option("timeout", "60"))
        except ValueError:
            raise NewsletterError("smtp://…?timeout= takes seconds, e.g. timeout=60") from None
        return cls(dsn, tls=tls, pool_size=max(1, pool), timeout=timeout, dkim=dkim)

    def __str__(self) -> str:
        return str(self.dsn)

    async def _connect(self) -> _Client:
        client = _Client(
            hostname=self.dsn.host,
            port=self.dsn.port or (465 if self.tls == "ssl" else 587 if self.tls == "starttls" else 25),
            use_tls=self.tls == "ssl",
            start_tls=self.tls == "starttls",
            timeout=self.timeout,
        )
        try:
            await client.connect()
            if self.dsn.user:
                await client.login(self.dsn.user, self.dsn.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TransportError(
                f"{self.dsn.host} refused the SMTP credentials ({exc.code}: {exc.message}); check the user and "
                "password in NEWSLETTER_TRANSPORT"
            ) from None
        except aiosmtplib.SMTPException as exc:
            with contextlib.suppress(Exception):
                client.close()
            raise ConnectionError(f"cannot connect to {self.dsn.host}: {exc}") from None
        return client

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        outcomes: list[Outcome] = [Outcome.retry("not sent")] * len(messages)

        async def keep(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome

        await self.send_each(messages, keep)
        return outcomes

    async def send_each(self, messages: Sequence[Outgoing], record: Record) -> None:
        """Send the messages over one pooled connection, reporting each answer as it comes.

        The connection is never handed a message while more than one earlier answer is unrecorded: each answer's
        recording runs while the next message goes, and is awaited before the one after. After a crash at any
        instant, at most two messages of this connection were sent without their outcome in the ledger.
        """
        recording: asyncio.Task | None = None
        async with self._slots:
            try:
                client = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                client = None
            try:
                for index, message in enumerate(messages):
                    try:
                        if client is None or not client.is_connected:
                            client = await self._connect()
                        outcome = await self._send_one(client, message)
                    except (
                        ConnectionError,
                        OSError,
                        aiosmtplib.SMTPServerDisconnected,
                        aiosmtplib.SMTPTimeoutError,
                    ) as exc:
                        # The connection is gone: this message and the rest of the batch wait for the next round.
                        reason = f"smtp: connection lost ({exc})"
                        if client is not None:
                            with contextlib.suppress(Exception):
                                client.close()
                        client = None
                        if recording is not None:
                            await recording
                        recording = None
                        for rest in range(index, len(messages)):
                            await record(rest, Outcome.retry(reason))
                        break
                    if recording is not None:
                        try:
                            await recording  # the answer before this one is in the ledger
                        except Exception:  # told to stop (a pause, a lease running out): this one went, record it
                            recording = None
                            with contextlib.suppress(Exception):
                                await record(index, outcome)
                            raise
                    recording = asyncio.ensure_future(record(index, outcome))
                if recording is not None:
                    await recording
            finally:
                if recording is not None and not recording.done():
                    recording.cancel()
                if client is not None and client.is_connected:
                    self._idle.put_nowait(client)

    async def _send_one(self, client: _Client, message: Outgoing) -> Outcome:
        try:
            sender, recipient, data = message.return_path, message.recipient.addr_spec, message.to_bytes()
        except ValueError as exc:  # an address with no ASCII form: this message fails, the batch goes on
            return Outcome.failed(f"smtp: the message cannot be written: {exc}")
        if self.dkim is not None:
            data = self.dkim.sign(data)
        try:
            await client.send_prepared(sender, recipient, data)
        except aiosmtplib.SMTPNotSupported as exc:
            return Outcome.failed(f"smtp: {exc}")
        except aiosmtplib.SMTPResponseException as exc:  # sender, recipient or data refused
            with contextlib.suppress(Exception):
                await client.rset()
            return outcome_for_reply(exc.code, exc.message)
        return Outcome.sent(message.message_id)

    async def aclose(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await client.quit()
