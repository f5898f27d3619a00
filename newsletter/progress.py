"""A one-line progress display for a terminal: sent of total, rate, and time left."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = time.monotonic()
        self.first_done: int | None = None
        self.last_drawn = 0.0

    def __call__(self, counts: dict[str, int]) -> None:
        moment = time.monotonic()
        if moment - self.last_drawn < 0.2 and counts.get("pending"):
            return
        self.last_drawn = moment
        done = counts.get("sent", 0) + counts.get("failed", 0) + counts.get("skipped", 0)
        total = done + counts.get("pending", 0)
        if self.first_done is None:
            self.first_done, self.started = done, moment
        elapsed = moment - self.started
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        left = counts.get("pending", 0) / rate if rate > 0 else None
        eta = f", {left:.0f} s left" if left is not None else ""
        self.stream.write(f"\r{done}/{total} done ({counts.get('failed', 0)} failed), {rate:.0f} msg/s{eta}   ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
