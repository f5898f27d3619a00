"""null:// discards every message and reports it sent: for benchmarks and dry plumbing tests.

`?unsubscribe=provider` is refused: nothing is sent, so no provider hosts an unsubscribe page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from newsletter.message import Outgoing
from newsletter.transports.base import Dsn, Outcome, refuse_hosted_unsubscribe


class NullTransport:
    scheme: ClassVar[str] = "null"
    max_batch: ClassVar[int] = 100

    def __init__(self, *, serialize: bool = True):
        self.serialize = serialize  # build each message's bytes, as a real transport would

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> NullTransport:
        refuse_hosted_unsubscribe(dsn, "null:// discards every message, so no provider hosts a page")
        return cls(serialize=dsn.option("serialize", "1", ("0", "1")) == "1")

    def __str__(self) -> str:
        return "null://"

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        if not self.serialize:
            return [Outcome.sent() for _ in messages]
        return [self._built(message) for message in messages]

    @staticmethod
    def _built(message: Outgoing) -> Outcome:
        try:
            message.to_bytes()
        except ValueError as exc:  # as a real transport would: this message fails, not the batch
            return Outcome.failed(f"null: the message cannot be written: {exc}")
        return Outcome.sent()

    async def aclose(self) -> None:
        pass
