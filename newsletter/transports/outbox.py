"""outbox://DIR writes each message as DIR/<key>.eml: the embedded default, and what the Quickstart sends to.

Each file is named for its ledger key (campaign-subscriber), written under a temporary name and renamed: an
interrupted send leaves no half file, and sending again overwrites instead of duplicating. With `[bounces] return_path`,
each file starts with the Return-Path a receiving server would write: where its bounces would go.
`?unsubscribe=provider` is refused: the files stay on this machine, where no provider hosts an unsubscribe page.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from newsletter.message import Outgoing
from newsletter.transports.base import Dsn, Outcome, refuse_hosted_unsubscribe


class OutboxTransport:
    scheme: ClassVar[str] = "outbox"
    max_batch: ClassVar[int] = 50

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, root: Path | None = None, **_: object) -> OutboxTransport:
        refuse_hosted_unsubscribe(dsn, "the outbox writes files on this machine, where no provider hosts a page")
        # outbox://build/outbox is relative to the workspace; outbox:///var/mail/out is absolute.
        path = Path(dsn.host + dsn.path) if dsn.host else Path(dsn.path or "build/outbox")
        return cls(path if path.is_absolute() else (root or Path.cwd()) / path)

    def __str__(self) -> str:
        return f"outbox://{self.folder}"

    def _write(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        self.folder.mkdir(parents=True, exist_ok=True)
        outcomes = []
        for message in messages:
            target = self.folder / f"{message.key}.eml"
            temporary = self.folder / f".{message.key}.eml.tmp"
            try:
                data = message.to_bytes()
                if message.envelope_sender:  # as the receiving server writes it: where its bounces would go
                    data = b"Return-Path: <" + message.envelope_sender.encode() + b">\r\n" + data
            except ValueError as exc:  # this message cannot be written (an address with no ASCII form): it alone
                outcomes.append(Outcome.failed(f"outbox: the message cannot be written: {exc}"))
                continue
            try:
                temporary.write_bytes(data)
                os.replace(temporary, target)
            except OSError as exc:
                outcomes.append(Outcome.retry(f"outbox: cannot write {target}: {exc.strerror}"))
            else:
                outcomes.append(Outcome.sent(str(target)))
        return outcomes

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        return await asyncio.to_thread(self._write, messages)

    async def aclose(self) -> None:
        pass
