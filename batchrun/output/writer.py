"""The writer: the one task that owns the output and the progress bar.

It takes answered rows off the done queue (everything that is ready at once, for fewer and
larger journal writes), appends them to the store's journal, counts them, advances the bar,
and seals the journal into a Parquet part every ``part_rows`` rows or ``part_seconds``. A
``None`` on the queue means no more rows will come.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pyarrow as pa

from batchrun.output.rows import FAILED, Row, rows_to_table
from batchrun.output.store import Store
from batchrun.progress import Progress
from batchrun.stats import RunStats


@dataclass
class Writer:
    store: Store
    schema: pa.Schema
    stats: RunStats
    progress: Progress
    part_rows: int
    part_seconds: float

    async def run(self, done: asyncio.Queue[list[Row] | None]) -> None:
        sealed_at = time.monotonic()
        finished = False
        while not finished and (rows := await done.get()) is not None:
            while not done.empty():
                more = done.get_nowait()
                if more is None:
                    finished = True
                    break
                rows += more
            self._write(rows)
            full = self.store.rows_in_journal >= self.part_rows
            if full or time.monotonic() - sealed_at >= self.part_seconds:
                await asyncio.to_thread(self.store.seal)  # writes a part: keep the loop free
                sealed_at = time.monotonic()

    def _write(self, rows: list[Row]) -> None:
        self.store.append(rows_to_table(rows, self.schema))
        failed = sum(row["status"] == FAILED for row in rows)
        self.stats.rows_failed += failed
        self.stats.rows_ok += len(rows) - failed
        self.progress.advance(len(rows))
