"""The run's trace: one small record per request attempt, for ``batchrun report``.

Each run appends its attempts to ``_events-<token>.arrows`` beside the parts (Arrow IPC stream
batches, zstd-compressed: 11.5 bytes an attempt on disk, measured over 200,000 attempts with
varied latencies and token counts, so a ten-million-request run stays near 120 MB). Records
are buffered and written every ``FLUSH_RECORDS`` attempts or ``FLUSH_S`` seconds; a kill
loses at most that buffer and a torn last batch, which readers drop, like the journal's.
Times are wall-clock seconds (runs on several machines line up).

Beside the attempts, the pacing: each answered attempt keeps the quota its headers stated
(``quota_limit``, ``quota_remaining``, ``quota_reset_s``) and the window end the pacer
estimated from it (``window_left_s``; null: unknown); each hold a pacer decides is a record of
its own (outcome ``hold``: ``hold_s`` and its ``reason``). ``read_events`` gives the attempts,
``read_holds`` the holds; traces written before these columns read with them null.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from batchrun.output.layout import OutputLayout
from batchrun.output.streams import append_checked, whole_batches

if TYPE_CHECKING:
    import polars as pl

EVENT_SCHEMA = pa.schema(
    [
        ("sent_at", pa.float64()),
        ("latency_ms", pa.int32()),
        ("model", pa.string()),
        ("outcome", pa.string()),
        ("attempt", pa.int16()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("rows", pa.int32()),
        ("quota_limit", pa.int32()),
        ("quota_remaining", pa.int32()),
        ("quota_reset_s", pa.float32()),
        ("window_left_s", pa.float32()),
        ("hold_s", pa.float32()),
        ("reason", pa.string()),
    ]
)
ANSWERED, INVALID = "ok", "invalid"
"""Outcomes of an answered attempt (``invalid``: it broke the job's schema); the others are an
HTTP status ("429", "503") or "no answer" (a timeout, a dropped connection)."""
HOLD = "hold"  # the outcome of a pacer's hold record
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
    quota_limit: int | None = None
    quota_remaining: int | None = None
    quota_reset_s: float | None = None
    window_left_s: float | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold a model's pacer decided: when, how long, why (``batchrun.send.pacing``)."""

    at: float
    model: str
    seconds: float
    reason: str


class EventLog:
    """The trace of one run: ``record`` each attempt, ``close`` at the end. Disabled
    (``[run].event_log = false``), it keeps nothing."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self._enabled = enabled
        self._pending: list[Attempt | Hold] = []
        self._flushed_at = time.monotonic()
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def record(self, record: Attempt | Hold) -> None:
        if not self._enabled:
            return
        self._pending.append(record)
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
            self._writer = pa.ipc.new_stream(self._sink, EVENT_SCHEMA, options=options)
        rows = [_row(record) for record in pending]
        append_checked(self._writer, pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))

    def close(self) -> None:
        self.flush()
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


def _row(record: Attempt | Hold) -> dict[str, object]:
    if isinstance(record, Hold):
        return {
            "sent_at": record.at, "latency_ms": 0, "model": record.model, "outcome": HOLD,
            "attempt": 0, "rows": 0, "hold_s": record.seconds, "reason": record.reason,
        }  # fmt: skip
    row = asdict(record)  # the columns of EVENT_SCHEMA, the latency in seconds
    row["latency_ms"] = round(row.pop("latency_s") * 1000)
    return row


def read_events(output: Path) -> pl.DataFrame:
    """Every run's attempts in the output directory (each shard's too), oldest first; the
    ``run`` column names the run."""
    trace = _read_trace(output)
    return trace.filter(trace["outcome"] != HOLD).drop("hold_s", "reason")


def read_holds(output: Path) -> pl.DataFrame:
    """Every hold the runs' pacers decided: ``sent_at`` (when), ``model``, ``hold_s``,
    ``reason`` and ``run``, oldest first."""
    trace = _read_trace(output)
    return trace.filter(trace["outcome"] == HOLD).select(
        "sent_at", "model", "hold_s", "reason", "run"
    )


def _read_trace(output: Path) -> pl.DataFrame:
    """Every record of every trace, in ``EVENT_SCHEMA`` (columns an older trace lacks are null)."""
    import polars as pl  # a report's, not a run's: a run does not load it

    empty = pl.from_arrow(EVENT_SCHEMA.empty_table())
    assert isinstance(empty, pl.DataFrame)
    frames = [empty.with_columns(run=pl.lit("", pl.String))]
    for path in OutputLayout(output).event_logs():
        batches = list(whole_batches(path))
        if not batches:
            continue
        frame = pl.from_arrow(pa.Table.from_batches(batches))
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame.with_columns(run=pl.lit(path.stem.removeprefix("_events-"))))
    return pl.concat(frames, how="diagonal_relaxed").sort("sent_at")
