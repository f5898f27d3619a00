"""Group commit for the clicks `serve` records: one writer thread, one durable transaction for every change
that arrived while the previous one committed.

A request hands its change to the writer and awaits the answer; the answer comes only once the transaction that
holds the change has committed (synced to disk), so nothing answered is lost, and a failed transaction fails
every request in it (each answered 500 and nothing recorded for it). Fifty clicks at once cost one commit
instead of fifty, and the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from newsletter.store import ChangeResult, StatusChange, Store

MAX_GROUP = 500  # changes in one transaction at most


class GroupWriter:
    def __init__(self, store: Store):
        self.store = store
        self.waiting: queue.SimpleQueue[tuple[StatusChange, asyncio.Future, asyncio.AbstractEventLoop]] = (
            queue.SimpleQueue()
        )
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    async def change(self, change: StatusChange) -> ChangeResult:
        """Record one change; return once it is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.put((change, future, loop))
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="newsletter-writer", daemon=True)
                    self.thread.start()
        return await future

    def _run(self) -> None:
        while True:
            group = [self.waiting.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                results: list = self.store.change_statuses([change for change, _, _ in group])
            except Exception as exc:  # the transaction failed: nothing of it was recorded
                results = [exc] * len(group)
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for (_, future, loop), result in zip(group, results, strict=True):
                by_loop.setdefault(loop, []).append((future, result))
            for loop, answers in by_loop.items():
                loop.call_soon_threadsafe(_answer, answers)


def _answer(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in answers:
        if future.cancelled():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
