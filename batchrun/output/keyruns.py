"""Sorted runs of keys, and merging them in bounded memory.

A run is an Arrow IPC file of keys (id hash, request hash, ok) sorted by id hash with one
entry per id, in batches. Each part gets its own run when it is sealed
(``_keys-<token>.arrows``, 17 bytes a row); ``output.keys`` merges the runs and the saved keys
into new saved keys a few thousand rows of each run at a time, so a run over ten million rows
ends holding no more than it held at the start.

Compaction's rule picks an id's entry among several: an ok row beats a failed one, then the
newer run (its ``age``) wins.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.hashing import id_hashes
from batchrun.output.rows import OK, REQUEST_HASH

SCHEMA = pa.schema([("id_hash", pa.uint64()), ("request_hash", pa.uint64()), ("ok", pa.bool_())])
EMPTY = pl.Schema({"id_hash": pl.UInt64, "request_hash": pl.UInt64, "ok": pl.Boolean})
NO_IDS = pl.Series("id_hash", [], pl.UInt64)
RUN_BATCH_ROWS = 4_096
"""Rows of a part's run read at once while merging (70 kB: a thousand runs merge in 70 MB)."""


def keys_of(batch: pa.RecordBatch) -> pl.DataFrame:
    """The keys of some output rows (columns id, request_hash, status; a part of an older
    batchrun has no request_hash), in their order. The request hashes are copied: a column
    of a batch read from Arrow IPC shares one buffer with the whole batch, 4 MB of vectors a
    thousand rows."""
    given = REQUEST_HASH.name in batch.schema.names
    requests = batch.column(REQUEST_HASH.name) if given else pa.nulls(batch.num_rows, pa.int64())
    requests = pc.cast(requests, pa.uint64(), safe=False)
    return pl.DataFrame(
        {
            "id_hash": id_hashes(batch.column("id")),
            "request_hash": pl.Series(requests),
            "ok": (pl.Series(batch.column("status")) == OK).fill_null(False),
        }
    )


def winners(keys: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """``keys`` sorted by id hash, one entry per id (the last of its rows that is ok, else
    the last); and whether some id had several."""
    keys = keys.sort("id_hash", maintain_order=True)
    ids = keys["id_hash"]
    repeated = bool((ids == ids.shift(1)).any())
    if repeated:
        keys = keys.sort(["id_hash", "ok"], maintain_order=True)
        keys = keys.unique("id_hash", keep="last", maintain_order=True)
    return keys.with_columns(pl.col("id_hash").set_sorted()), repeated


class KeysCollector:
    """Gathers the keys of the batches written into one part (``watch``)."""

    def __init__(self) -> None:
        self._frames: list[pl.DataFrame] = []

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            self._frames.append(keys_of(batch))
            yield batch

    def keys(self) -> tuple[pl.DataFrame, bool]:
        """The part's keys, one entry per id, and whether some id had several rows."""
        frames, self._frames = self._frames, []
        return winners(pl.concat(frames) if frames else pl.DataFrame(schema=EMPTY))


def write_run(path: Path, keys: pl.DataFrame, metadata: dict[str, Any]) -> None:
    """Write sorted ``keys`` as a run, whole or not at all."""
    schema = SCHEMA.with_metadata({"batchrun": orjson.dumps(metadata)})
    with RunWriter(path, schema, RUN_BATCH_ROWS) as writer:
        writer.add(keys)


def run_metadata(path: Path) -> dict[str, Any] | None:
    """A run's metadata; None when it is unreadable."""
    try:
        with pa.OSFile(str(path)) as source, pa.ipc.open_file(source) as reader:
            found = orjson.loads((reader.schema.metadata or {})[b"batchrun"])
    except (OSError, LookupError, ValueError, pa.ArrowInvalid):
        return None
    return found if isinstance(found, dict) else None


def read_run(path: Path, age: int) -> Iterator[pl.DataFrame]:
    """A run's keys, a batch at a time (read, not mapped: memory stays a batch), with their
    ``age``."""
    with pa.OSFile(str(path)) as source, pa.ipc.open_file(source) as reader:
        for number in range(reader.num_record_batches):
            frame = pl.from_arrow(reader.get_batch(number))
            assert isinstance(frame, pl.DataFrame)
            if len(frame):
                yield frame.with_columns(age=pl.lit(age, pl.Int32))


class RunWriter:
    """Writes sorted keys in batches of ``batch_rows`` to a temporary file, renamed into
    place on a clean exit; counts the rows, ok or not."""

    def __init__(self, path: Path, schema: pa.Schema, batch_rows: int) -> None:
        self.path, self._schema, self._batch_rows = path, schema, batch_rows
        self._temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._pending: list[pl.DataFrame] = []
        self.rows = self.ok = 0
        self.keep = True
        """False: the file is not put in place."""

    def __enter__(self) -> RunWriter:
        self._sink = pa.OSFile(str(self._temporary), "wb")
        self._writer = pa.ipc.new_file(self._sink, self._schema)
        return self

    def add(self, keys: pl.DataFrame) -> None:
        self._pending.append(keys.select(SCHEMA.names))
        self.rows += len(keys)
        self.ok += int(keys["ok"].sum())
        while sum(map(len, self._pending)) >= self._batch_rows:
            self._flush(self._batch_rows)

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            if kind is None:
                self._flush(None)
            self._writer.close()
        finally:
            self._sink.close()
        if kind is not None or not self.keep:
            self._temporary.unlink(missing_ok=True)
            return
        with open(self._temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(self._temporary, self.path)

    def _flush(self, rows: int | None) -> None:
        if not self._pending:
            return
        keys = pl.concat(self._pending)
        cut = len(keys) if rows is None else rows
        table = keys.head(cut).to_arrow().cast(SCHEMA)
        for batch in table.combine_chunks().to_batches():
            self._writer.write_batch(batch)
        rest = keys.slice(cut)
        self._pending = [rest] if len(rest) else []


def merge(runs: list[Iterator[pl.DataFrame]], emit: Callable[[pl.DataFrame], None]) -> pl.Series:
    """Merge sorted ``runs`` (frames with an ``age``) into sorted keys with one entry per id,
    given to ``emit`` in order, holding a batch of each run at a time; the hashes of the ids
    found in several runs."""
    heads: dict[int, pl.DataFrame] = {}
    for number, run in enumerate(runs):
        if (first := next(run, None)) is not None:
            heads[number] = first
    repeated = [NO_IDS]
    while heads:
        bound = np.uint64(min(head["id_hash"][-1] for head in heads.values()))  # a Python
        taken = []  # int would be compared as a float: wrong for hashes 1,000 apart
        for number, head in list(heads.items()):  # numpy: a polars search costs 0.2 ms
            cut = int(np.searchsorted(head["id_hash"].to_numpy(), bound, side="right"))
            taken.append(head.head(cut))
            rest: pl.DataFrame | None = head.slice(cut)
            while rest is not None and rest.is_empty():
                rest = next(runs[number], None)
            if rest is None:
                del heads[number]
            else:
                heads[number] = rest
        keys = pl.concat(taken).sort(["id_hash", "ok", "age"])
        if (twice := keys["id_hash"].is_duplicated()).any():
            repeated.append(keys["id_hash"].filter(twice).unique())
            keys = keys.unique("id_hash", keep="last", maintain_order=True)
        emit(keys)
    return pl.concat(repeated)


MERGE_FAN_IN = 64
"""Keys files merged at once (open files, and a batch of each in memory)."""


def fewer_runs(
    runs: list[Iterator[pl.DataFrame]],
) -> tuple[list[Iterator[pl.DataFrame]], pl.Series]:
    """Runs (oldest first) merged ``MERGE_FAN_IN`` at a time into unnamed temporary files
    until no more than that many are left; the hashes of the ids found in several runs."""
    repeated = [NO_IDS]
    while len(runs) > MERGE_FAN_IN:
        merged = []
        for age, start in enumerate(range(0, len(runs), MERGE_FAN_IN)):
            spill = tempfile.TemporaryFile(prefix=".batchrun-keys-")  # noqa: SIM115
            with pa.ipc.new_file(pa.PythonFile(spill, mode="w"), SCHEMA) as writer:

                def spilled(keys: pl.DataFrame) -> None:
                    table = keys.select(SCHEMA.names).to_arrow().cast(SCHEMA)
                    writer.write_table(table, max_chunksize=RUN_BATCH_ROWS)

                repeated.append(merge(runs[start : start + MERGE_FAN_IN], spilled))
            merged.append(_read_spill(spill, age))
        runs = merged
    return runs, pl.concat(repeated)


def _read_spill(spill: IO[bytes], age: int) -> Iterator[pl.DataFrame]:
    with spill:
        spill.seek(0)
        reader = pa.ipc.open_file(pa.PythonFile(spill, mode="r"))
        for number in range(reader.num_record_batches):
            frame = pl.from_arrow(reader.get_batch(number))
            assert isinstance(frame, pl.DataFrame)
            if len(frame):
                yield frame.with_columns(age=pl.lit(age, pl.Int32))
