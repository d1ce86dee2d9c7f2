"""One row per id in the output: when an id has several rows, the best one stays.

Several rows for one id arise on purpose with ``--retry-failed`` and for edited rows (the new
answer is written before the old row goes) and by accident when a run dies between those two
steps. The
rule: an ``ok`` row beats a ``failed`` one; among equals the newest part wins. Parts holding a
losing row are rewritten without it (each rewrite is atomic), so a crash in the middle leaves a
state that the next compaction finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.hashing import id_hashes, member
from batchrun.output.keyruns import KeysCollector
from batchrun.output.layout import OutputLayout, part_time
from batchrun.output.partkeys import save_part_keys
from batchrun.output.parts import fsync_directory, part_files, write_batches
from batchrun.output.rows import OK

REWRITE_BATCH_ROWS = 2_048
"""Rows of a part rewritten at once (8 MB of 1024-dimensional vectors)."""


def compact(path: Path, repeated: pl.Series, holds: Callable[[str], bool] | None = None) -> int:
    """Drop the losing rows of the ids that have several (``repeated``: their hashes, as
    ``output.keys.settle`` names them); return how many rows were dropped. A shard passes
    ``holds`` and touches only its own ids. Each part is read for the rows of those ids
    only, a part at a time."""
    parts = sorted(part_files(path), key=part_time)
    if not parts or repeated.is_empty():
        return 0
    rows = pl.concat([_rows_among(part, number, repeated) for number, part in enumerate(parts)])
    ranked = rows.filter(pl.col("id").is_duplicated())  # not two ids of one hash
    ranked = ranked.sort([pl.col("status") == OK, "part", "row"], descending=[True, True, True])
    losers = ranked.filter(pl.int_range(pl.len()).over("id") > 0)
    if holds is not None:
        losers = losers.filter(pl.Series([holds(id_) for id_ in losers["id"].to_list()]))
    for (number,), dropped in losers.group_by(["part"]):
        _rewrite_without(OutputLayout(path), parts[number], set(dropped["row"].to_list()))
    return len(losers)


def _rows_among(part: Path, number: int, repeated: pl.Series) -> pl.DataFrame:
    """The rows of a part whose id hash is ``repeated``: id, status, part number, row."""
    rows = pl.read_parquet(part, columns=["id", "status"]).with_columns(
        part=pl.lit(number, pl.Int32), row=pl.int_range(pl.len(), dtype=pl.Int64)
    )
    return rows.filter(member(id_hashes(rows["id"].to_arrow()), repeated))


def _rewrite_without(layout: OutputLayout, part: Path, dropped: set[int]) -> None:
    """Rewrite ``part`` without the rows numbered ``dropped``, a batch at a time, with its
    keys beside it (the next merge of the keys then reads no Parquet)."""
    schema = pq.ParquetFile(part).schema_arrow
    keys = KeysCollector()
    written = write_batches(part, schema, keys.watch(_kept(part, dropped)))
    if written is None:
        part.unlink()
        fsync_directory(part.parent)
    else:
        save_part_keys(layout, part, written, keys)


def _kept(part: Path, dropped: set[int]) -> Iterator[pa.RecordBatch]:
    """The rows of ``part`` but those numbered ``dropped``, a batch at a time."""
    source = pq.ParquetFile(part)
    keep = np.ones(source.metadata.num_rows, bool)
    keep[sorted(dropped)] = False
    start = 0
    for batch in source.iter_batches(batch_size=REWRITE_BATCH_ROWS):
        kept = batch.filter(pa.array(keep[start : start + batch.num_rows]))
        start += batch.num_rows
        if kept.num_rows:
            yield kept


def prune(path: Path, keeps: Callable[[pl.Series], pl.Series]) -> int:
    """``--prune``: drop the rows whose id ``keeps`` refuses (given the ids' 64-bit hashes, it
    says which stay: those the input still holds); return how many went. Each part is
    rewritten atomically, so a crash midway leaves a state the next ``--prune`` finishes."""
    layout, pruned = OutputLayout(path), 0
    for part in part_files(path):
        keep = keeps(id_hashes(pq.read_table(part, columns=["id"]).column("id")))
        if not keep.all():
            dropped = set((~keep).arg_true().to_list())
            _rewrite_without(layout, part, dropped)
            pruned += len(dropped)
    return pruned
