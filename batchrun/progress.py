"""The progress bar: rows done of total, rows/s, ETA, and failures and 429s so far (tqdm).

Only the writer task updates it, after rows are safely in the journal.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from batchrun.stats import RunStats


class Progress:
    """A tqdm bar over the rows of one run."""

    def __init__(
        self, total: int, stats: RunStats, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self._stats = stats
        self._bar = tqdm(
            total=total,
            unit="row",
            file=stream or sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5,
            smoothing=0.1,
        )
        self._postfix_at = 0.0

    def advance(self, rows: int) -> None:
        self._bar.update(rows)
        now = time.monotonic()
        if now - self._postfix_at >= 1.0:
            self._postfix_at = now
            self.refresh_postfix()

    def refresh_postfix(self) -> None:
        stats = self._stats
        rates = " ".join(f"{m.rate:.2f}rps" for m in stats.models.values() if m.rate)
        self._bar.set_postfix_str(
            f"failed={stats.rows_failed} 429={stats.throttled} {rates}", refresh=False
        )

    def close(self) -> None:
        self.refresh_postfix()
        self._bar.close()
