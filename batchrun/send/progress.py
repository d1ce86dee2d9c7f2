"""The progress bar: rows done of total, rows/s, ETA, and failures and 429s so far (tqdm).

Only the writer task advances it, after rows are safely in the journal. It appears when the
run starts sending (``start``), not before, so an early error is the only thing printed.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from batchrun.clock import Clock
from batchrun.send.stats import RunStats

ETA_EVERY_S = 30.0
"""How often the ETA is kept for the run's record (``RunStats.eta_history``)."""
LONG_WAIT_S = 5.0
"""A wait the service asks for (``Retry-After``) that is said: the bar would seem stuck."""


class Progress:
    """A tqdm bar over the rows of one run."""

    def __init__(
        self,
        stats: RunStats,
        stream: TextIO | None = None,
        enabled: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self._stats = stats
        self._clock = clock
        self._waits: dict[str, float] = {}
        """Per model, until when (wall clock) the wait last said lasts."""
        self._wait_notice: str | None = None
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._bar: tqdm[None] | None = None
        self._postfix_at = 0.0
        self.total = 0
        self.done = 0
        self._started = time.monotonic()
        self._history_at = 0.0

    def start(self, total: int) -> None:
        """Show the bar over ``total`` rows."""
        self.total, self.done, self._started = total, 0, time.monotonic()
        self._bar = tqdm(
            total=total,
            unit="row",
            file=self._stream,
            disable=not self._enabled,
            dynamic_ncols=True,
            mininterval=0.5,
            smoothing=0.1,
        )

    def advance(self, rows: int) -> None:
        if self._bar is None:
            return
        self._bar.update(rows)
        self.done += rows
        now = time.monotonic()
        if now - self._history_at >= ETA_EVERY_S:
            self._history_at = now
            self._stats.eta_history.append((round(now - self._started, 1), self.done, self.eta_s()))
        if now - self._postfix_at >= 1.0:
            self._postfix_at = now
            if self._wait_notice and self._clock() >= max(self._waits.values()):
                self._wait_notice = self._stats.notice = None  # the waits are over
            self._refresh_postfix()

    def eta_s(self) -> float | None:
        """Seconds left at the rate of the run so far (None before the first rows)."""
        elapsed = time.monotonic() - self._started
        if not self.done or elapsed <= 0:
            return None
        return round((self.total - self.done) / (self.done / elapsed), 1)

    def notice(self, text: str | None) -> None:
        """Show (or clear) news in the bar at once: "shared limiter unreachable"."""
        self._stats.notice = text
        if self._bar is not None:
            self._refresh_postfix()
            self._bar.refresh()

    def waiting(self, model: str, asked_s: float, wait_s: float) -> None:
        """A request to ``model`` waits ``wait_s`` where the service asked for ``asked_s``
        (``Retry-After``): a long wait is said once, with why and until when, in the bar and
        as a line (its other requests, waiting as long, are not said again)."""
        now = self._clock()
        if wait_s < LONG_WAIT_S or now + wait_s <= self._waits.get(model, 0.0) + LONG_WAIT_S:
            return
        self._waits[model] = now + wait_s
        until = time.strftime("%H:%M:%S", time.localtime(now + wait_s))
        why = f"the service asked for {asked_s:g} s (Retry-After)"
        if wait_s < asked_s:
            why += f"; [run].backoff_max_s = {wait_s:g} caps it"
        self._wait_notice = f"{model} waits until {until}: {why}"
        self.notice(self._wait_notice)
        line = f"{model}: waiting {wait_s:g} s, until {until}: {why}"
        if self._bar is not None and self._enabled:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        """Show the last figures and end the bar (again: nothing)."""
        if self._bar is not None:
            self._refresh_postfix()
            self._bar.close()
            self._bar = None

    def _refresh_postfix(self) -> None:
        assert self._bar is not None
        stats = self._stats
        rates = " ".join(f"{m.rate:.2f}rps" for m in stats.models.values() if m.rate)
        notice = f" {stats.notice}" if stats.notice else ""
        self._bar.set_postfix_str(
            f"failed={stats.rows_failed} 429={stats.throttled} {rates}{notice}", refresh=False
        )
