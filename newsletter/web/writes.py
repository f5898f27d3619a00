"""Group commit for what `serve` records (clicks, sign-ups, confirmations): one writer thread, one durable
transaction for every write that arrived while the previous one committed.

A request hands its write (a function of the transaction's connection, made of store methods) to the writer
and awaits the answer, which comes only once the transaction holding it has committed (synced to disk): nothing
answered is lost. Should a group's transaction fail, each of its writes is tried again in a transaction of its
own, so that one bad write fails only its own request (answered 500, nothing recorded for it). Fifty clicks at
once cost one commit instead of fifty, and the event loop never waits on the database. Records that nobody
waits on (what became of a confirmation email) join whichever group comes next, all of a kind in one statement,
with no commit of their own while requests come.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from newsletter.store import AskedSignup, ChangeResult, Connection, SignupRequest, StatusChange, Store

log = logging.getLogger("newsletter.web")
MAX_GROUP = 500  # writes in one transaction at most
LATER_WITHIN = 0.5  # seconds a record written later waits for a group to join before it makes one
# At most one confirmation email per address in this, across every list, then twice as long each time
# (store/signups.py's request_signups)
SIGNUP_EVERY = dt.timedelta(minutes=10)
T = TypeVar("T")


class GroupWriter:
    def __init__(self, store: Store):
        self.store = store
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.deferred: queue.SimpleQueue = queue.SimpleQueue()  # (record, items) for later()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    async def change(self, change: StatusChange) -> ChangeResult:
        """Record one click's change in the next group (batched with the others); return once committed."""
        return await self.run(change)  # type: ignore[arg-type]

    async def signup(self, request: SignupRequest) -> AskedSignup | None:
        """Record one sign-up in the next group (batched); whom to confirm and which request, or None to send
        nothing."""
        return await self.run(request)  # type: ignore[arg-type]

    async def run(self, write: Callable[[Connection], T]) -> T:
        """Run write(connection) in the next group's transaction; return its result once committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.put((write, future, loop))
        self._start()
        return await future

    def later(self, record: Callable[..., None], items: Sequence) -> None:
        """Run record(items, connection=connection) (a store method) in the next group's transaction, with the
        items of every other call for the same record since, in one call: within LATER_WITHIN seconds when no
        request comes. Nobody waits for it, and a process killed first loses it: for what can be lost (what
        became of a confirmation email, whose loss only means it may be sent twice)."""
        self.deferred.put((record, items))
        self._start()

    def _start(self) -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._work, name="newsletter-writer", daemon=True)
                    self.thread.start()

    def _work(self) -> None:
        while True:
            try:  # never blocked for good: what later() left must not wait for a request that may never come
                group = [self.waiting.get(timeout=LATER_WITHIN)]
            except queue.Empty:
                group = []
            while len(group) < MAX_GROUP:
                try:
                    group.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            records: dict[Callable, list] = {}
            while True:
                try:
                    record, items = self.deferred.get_nowait()
                except queue.Empty:
                    break
                records.setdefault(record, []).extend(items)
            if not group and not records:
                continue
            try:
                with self.store.transaction(durable=True) as connection:
                    results = self._apply(connection, [write for write, _, _ in group])
                    for record, items in records.items():
                        record(items, connection=connection)
            except Exception:
                results = [self._alone(write) for write, _, _ in group]
                for record, items in records.items():
                    failed = self._alone(
                        lambda connection, record=record, items=items: record(items, connection=connection)
                    )
                    if isinstance(failed, _Failed):
                        log.warning("%d records not written: %s", len(items), failed.error)
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for (_, future, loop), result in zip(group, results, strict=True):
                by_loop.setdefault(loop, []).append((future, result))
            for loop, answers in by_loop.items():
                loop.call_soon_threadsafe(_answer, answers)

    def _apply(self, connection: Connection, writes: list) -> list:
        """Status changes (the clicks) together, and sign-ups together, each kind as one batch of statements; any
        other write on its own."""
        changes = iter(
            self.store.apply_changes([w for w in writes if isinstance(w, StatusChange)], connection=connection)
        )
        signups = [w for w in writes if isinstance(w, SignupRequest)]
        asked = iter(self.store.request_signups(signups, every=SIGNUP_EVERY, connection=connection) if signups else [])
        results: list[object] = []
        for write in writes:
            if isinstance(write, StatusChange):
                results.append(next(changes))
            elif isinstance(write, SignupRequest):
                results.append(next(asked))
            else:
                results.append(write(connection))
        return results

    def _alone(self, write) -> object:
        try:
            with self.store.transaction(durable=True) as connection:
                return self._apply(connection, [write])[0]
        except Exception as exc:
            return _Failed(exc)


class _Failed:
    def __init__(self, error: Exception):
        self.error = error


def _answer(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in answers:
        if future.cancelled():
            continue
        if isinstance(result, _Failed):
            future.set_exception(result.error)
        else:
            future.set_result(result)
