"""The writer: the one task that owns the output and the progress bar.

It takes answered rows off the done queue (everything that is ready at once, for fewer and
larger journal writes), appends them to the store's journal, counts them, advances the bar,
and seals the journal into a Parquet part every ``part_rows`` rows or ``part_seconds`` (in a
thread, while the next journal takes rows). A
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

    sealing: asyncio.Future[None] | None = None
    """The journal being sealed into a part, in a thread, while rows go on into the next."""

    async def run(self, done: asyncio.Queue[list[Row] | None]) -> None:
        sealed_at = time.monotonic()
        finished = False
        try:
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
                    await self._seal()
                    sealed_at = time.monotonic()
        finally:
            if self.sealing is not None:
                await asyncio.shield(self.sealing)

    async def _seal(self) -> None:
        """Seal the journal in a thread, one at a time. The writer goes on taking rows
        meanwhile: were it to wait, every worker would hold its answered rows (a batch of
        vectors each) until the part is written."""
        if self.sealing is not None:
            await self.sealing
        journal = self.store.rotate()
        if journal is not None:
            self.sealing = asyncio.ensure_future(
                asyncio.to_thread(self.store.seal_journal, journal)
            )

    def _write(self, rows: list[Row]) -> None:
        self.store.append(rows_to_table(rows, self.schema))
        failed = sum(row["status"] == FAILED for row in rows)
        self.stats.rows_failed += failed
        self.stats.rows_ok += len(rows) - failed
        self.progress.advance(len(rows))
