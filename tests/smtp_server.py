"""A real SMTP server in-process (aiosmtpd) on a free port of 127.0.0.1, scriptable to misbehave."""

from __future__ import annotations

import email
import email.policy
import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SmtpSink:
    """Accepts everything, unless told to refuse addresses, fail at random, or drop connections."""

    refuse: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply, e.g. "550 5.1.1 no such user"
    flaky: float = 0.0  # share of RCPTs answered 451 or 421, or dropped
    seed: int = 7
    delay: float = 0.0  # seconds to wait before accepting each message
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.random = random.Random(self.seed)
        self.arrived = threading.Condition(self.lock)  # notified as each message is received

    def wait_for(self, count: int, timeout: float = 120.0) -> bool:
        """Until `count` messages have arrived (whatever thread or loop sends them); False after `timeout`, a bound
        for a test that would otherwise hang, never a measure of speed."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.received) >= count, timeout)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        if self.flaky and self.random.random() < self.flaky:
            choice = self.random.choice(("451", "421", "drop"))
            if choice == "451":
                return "451 4.7.1 Greylisted, try again later"
            if choice == "421":
                server.transport.close()
                return "421 4.7.0 Too many messages, closing"
            server.transport.close()  # hang up without a word
            return "250 OK"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        with self.arrived:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self.arrived.notify_all()
        return "250 2.0.0 Message accepted"

    def per_recipient(self) -> Counter:
        return Counter(address for r in self.received for address in r.recipients)


class _Authenticator:
    def __init__(self, user: str, password: str):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            self.user,
            self.password,
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


class RunningSmtp:
    """smtputf8: the server offers SMTPUTF8 (RFC 6531), and so takes addresses whose local part is not ASCII."""

    def __init__(self, sink: SmtpSink, *, user: str | None = None, password: str | None = None, smtputf8=False):
        self.sink = sink
        self.port = free_port()
        kwargs: dict = {"enable_SMTPUTF8": smtputf8}
        if user:
            kwargs |= {"authenticator": _Authenticator(user, password or ""), "auth_require_tls": False}
        self.controller = Controller(sink, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> RunningSmtp:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def dsn(self, credentials: str = "", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"tls": "none", **options}.items())
        at = f"{credentials}@" if credentials else ""
        return f"smtp://{at}127.0.0.1:{self.port}?{query}"
