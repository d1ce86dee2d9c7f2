"""The run's trace: one small record per request attempt, for ``batchrun report``.

Each run appends its attempts to ``_events-<token>.arrows`` beside the parts (Arrow IPC stream
batches, zstd-compressed: 11.5 bytes an attempt on disk, measured over 200,000 attempts with
varied latencies and token counts, so a ten-million-request run stays near 120 MB). Records
are buffered and written every ``FLUSH_RECORDS`` attempts or ``FLUSH_S`` seconds; a kill
loses at most that buffer and a torn last batch, which readers drop, like the journal's.
Times are wall-clock seconds (runs on several machines line up).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from batchrun.output.layout import OutputLayout
from batchrun.output.parts import whole_batches

SCHEMA = pa.schema(
    [
        ("sent_at", pa.float64()),
        ("latency_ms", pa.int32()),
        ("model", pa.string()),
        ("outcome", pa.string()),
        ("attempt", pa.int16()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("rows", pa.int32()),
    ]
)
ANSWERED, INVALID = "ok", "invalid"
"""Outcomes of an answered attempt (``invalid``: it broke the job's schema); the others are an
HTTP status ("429", "503") or "no answer" (a timeout, a dropped connection)."""
FLUSH_RECORDS = 4_096
FLUSH_S = 5.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request attempt as the trace keeps it."""

    sent_at: float
    latency_s: float
    model: str
    outcome: str
    attempt: int
    prompt_tokens: int | None
    completion_tokens: int | None
    rows: int


class EventLog:
    """The trace of one run: ``record`` each attempt, ``close`` at the end. Disabled
    (``[run].event_log = false``), it keeps nothing."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self._enabled = enabled
        self._pending: list[Attempt] = []
        self._flushed_at = time.monotonic()
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def record(self, attempt: Attempt) -> None:
        if not self._enabled:
            return
        self._pending.append(attempt)
        full = len(self._pending) >= FLUSH_RECORDS
        if full or time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._writer is None:
            self._sink = pa.OSFile(str(self.path), "wb")
            options = pa.ipc.IpcWriteOptions(compression="zstd")
            self._writer = pa.ipc.new_stream(self._sink, SCHEMA, options=options)
        self._writer.write_batch(_batch(pending))

    def close(self) -> None:
        self.flush()
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


def _batch(attempts: list[Attempt]) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([a.sent_at for a in attempts], pa.float64()),
            pa.array([round(a.latency_s * 1000) for a in attempts], pa.int32()),
            pa.array([a.model for a in attempts], pa.string()),
            pa.array([a.outcome for a in attempts], pa.string()),
            pa.array([a.attempt for a in attempts], pa.int16()),
            pa.array([a.prompt_tokens for a in attempts], pa.int32()),
            pa.array([a.completion_tokens for a in attempts], pa.int32()),
            pa.array([a.rows for a in attempts], pa.int32()),
        ],
        schema=SCHEMA,
    )


def read_events(output: Path) -> pl.DataFrame:
    """Every run's attempts in the output directory (each shard's too), oldest first; the
    ``run`` column names the run."""
    frames = []
    for path in OutputLayout(output).event_logs():
        table = pa.Table.from_batches(list(whole_batches(path)), schema=SCHEMA)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame.with_columns(run=pl.lit(path.stem.removeprefix("_events-"))))
    if not frames:
        empty = pl.from_arrow(SCHEMA.empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.with_columns(run=pl.lit("", pl.String))
    return pl.concat(frames).sort("sent_at")
