"""A one-line progress display for a terminal: sent of total, rate, and time left."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.first_done: int | None = None
        self.last_drawn = 0.0
        self.held_until = 0

    def __call__(self, counts: dict[str, int]) -> None:
        if counts.get("held"):
            self.held(counts["held"], counts.get("held_until", 0))
            return
        if not self.stream.isatty():  # a log, not a terminal: only the lines that say why it waits
            return
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

    def held(self, count: int, until: int) -> None:
        """Once per wait: the messages another sender holds, and when they are given up should it have stopped."""
        if until == self.held_until:
            return
        self.held_until = until
        end = dt.datetime.fromtimestamp(until, dt.UTC).strftime("%H:%M:%S UTC")
        start = "\r" if self.stream.isatty() else ""  # over the counts' line, on a terminal
        self.stream.write(
            f"{start}waiting for {count} messages another sender holds; should it have stopped (a "
            f"crash), they are sent once its lease ends at {end}\n"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()


class ProgressBar:
    """A bar for work of a known size (an import's bytes, an export's rows), with the rate and the time left:

        [#########···············]  38 %  380,112 rows  31,240 rows/s  20 s left

    Drawn only once the work has lasted `delay` seconds, so that a short one prints nothing, and at most five
    times a second. Call it with (done, total, count): done and total measure the work, count is what the rate
    counts (rows), done when omitted.
    """

    WIDTH = 24

    def __init__(self, unit: str = "rows", stream: TextIO = sys.stderr, delay: float = 1.0) -> None:
        self.unit, self.stream, self.delay = unit, stream, delay
        self.started = time.monotonic()
        self.last_drawn = 0.0
        self.drawn = False
        self.last: tuple[float, float, int] = (0, 0, 0)

    def __call__(self, done: float, total: float, count: int | None = None) -> None:
        self.last = (done, total, int(done if count is None else count))
        moment = time.monotonic()
        if moment - self.started < self.delay or moment - self.last_drawn < 0.2:
            return
        self.last_drawn = moment
        self._draw(moment)

    def _draw(self, moment: float) -> None:
        done, total, count = self.last
        elapsed = moment - self.started
        share = min(done / total, 1.0) if total else 1.0
        filled = round(share * self.WIDTH)
        rate = count / elapsed if elapsed > 0 else 0.0
        left = elapsed * (1 - share) / share if share > 0 else None
        eta = f"  {left:.0f} s left" if left is not None and share < 1 else ""
        bar = "#" * filled + "·" * (self.WIDTH - filled)
        self.stream.write(f"\r[{bar}] {share:4.0%}  {count:,} {self.unit}  {rate:,.0f} {self.unit}/s{eta}   ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """Draw the final state and end the line, if the bar was ever drawn."""
        if self.drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
