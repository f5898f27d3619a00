"""smtp://user:pass@host:port?tls=starttls|ssl|none&pool=4 — SMTP through aiosmtplib, connections reused.

A batch goes over one pooled connection, one message after another. What the server says maps to outcomes in
one place (SMTP_OUTCOMES below): 4xx and a dropped connection are "retry", 5xx is "failed", and a 5.1.x
"no such user" is also a hard bounce. Wrong credentials raise TransportError: nothing can work then.
Messages are DKIM-signed here when a signer is configured (message.DkimSigner).
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
from newsletter.transports.base import Dsn, Outcome, TransportError

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
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(pool_size)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, dkim: DkimSigner | None = None, **_: object) -> SmtpTransport:
        if not dsn.host:
            raise NewsletterError("smtp:// needs a host, e.g. smtp://user:pass@smtp.example.org:587")
        default_tls = "ssl" if dsn.port == 465 else "starttls"
        tls = dsn.option("tls", default_tls, TLS_MODES)
        try:
            pool = int(dsn.option("pool", "4"))
        except ValueError:
            raise NewsletterError("smtp://…?pool= takes a number of connections, e.g. pool=4") from None
        return cls(dsn, tls=tls, pool_size=max(1, pool), dkim=dkim)

    def __str__(self) -> str:
        return str(self.dsn)

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
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
        outcomes: list[Outcome] = []
        async with self._slots:
            try:
                client = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                client = None
            for index, message in enumerate(messages):
                try:
                    if client is None or not client.is_connected:
                        client = await self._connect()
                    outcomes.append(await self._send_one(client, message))
                except (
                    ConnectionError,
                    OSError,
                    aiosmtplib.SMTPServerDisconnected,
                    aiosmtplib.SMTPTimeoutError,
                ) as exc:
                    # The connection is gone: this message and the rest of the batch wait for the next round.
                    reason = f"smtp: connection lost ({exc})"
                    outcomes.extend(Outcome.retry(reason) for _ in messages[index:])
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()
                    client = None
                    break
            if client is not None and client.is_connected:
                self._idle.put_nowait(client)
        return outcomes

    async def _send_one(self, client: aiosmtplib.SMTP, message: Outgoing) -> Outcome:
        data = message.to_bytes()
        if self.dkim is not None:
            data = self.dkim.sign(data)
        try:
            errors, _response = await client.sendmail(message.sender.address, [message.recipient.address], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return outcome_for_reply(refused.code, refused.message)
        except aiosmtplib.SMTPResponseException as exc:  # sender refused, data refused, …
            with contextlib.suppress(Exception):
                await client.rset()
            return outcome_for_reply(exc.code, exc.message)
        if errors:
            code, text = next(iter(errors.values()))
            return outcome_for_reply(code, text)
        return Outcome.sent(message.message_id)

    async def aclose(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await client.quit()
