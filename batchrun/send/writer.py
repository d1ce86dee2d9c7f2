"""The writer: the one task that owns the output and the progress bar.

It takes answered rows off the done queue (everything that is ready at once, for fewer and
larger journal writes), appends them to the store's journal, counts them, advances the bar,
and seals the journal into a Parquet part every ``part_rows`` rows or ``part_seconds`` (in
the store's thread, while the next journal takes rows). A ``None`` on the queue means no
more rows will come.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import pyarrow as pa

from batchrun.output.rows import FAILED, OutputRow, rows_to_table
from batchrun.output.store import Store
from batchrun.send.progress import Progress
from batchrun.send.stats import RunStats


@dataclass
class Writer:
    store: Store
    schema: pa.Schema
    stats: RunStats
    progress: Progress
    part_rows: int
    part_seconds: float

    sealing: concurrent.futures.Future[None] | None = None
    """The journal being sealed into a part, in the store's thread, while rows go on into
    the next."""

    async def run(self, done: asyncio.Queue[list[OutputRow] | None]) -> None:
        try:
            await self._take(done)
        except BaseException:
            await self._seal_finished(quietly=True)  # its error, if any: Store.close's
            raise
        await self._seal_finished()

    async def _take(self, done: asyncio.Queue[list[OutputRow] | None]) -> None:
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
                await self._seal_finished()  # one part at a time
                self.sealing = self.store.seal_later()
                sealed_at = time.monotonic()

    async def _seal_finished(self, quietly: bool = False) -> None:
        """Wait for the part being sealed. The writer goes on taking rows meanwhile: were it
        to wait, every worker would hold its answered rows (a batch of vectors each) until
        the part is written."""
        sealing, self.sealing = self.sealing, None
        if sealing is None:
            return
        try:
            await asyncio.shield(asyncio.wrap_future(sealing))
        except Exception:
            if not quietly:
                raise

    def _write(self, rows: list[OutputRow]) -> None:
        self.store.append(rows_to_table(rows, self.schema))
        failed = sum(row["status"] == FAILED for row in rows)
        self.stats.rows_failed += failed
        self.stats.rows_ok += len(rows) - failed
        self.progress.advance(len(rows))
