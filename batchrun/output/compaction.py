"""One row per id in the output: when an id has several rows, the best one stays.

Several rows for one id arise on purpose with ``--retry-failed`` (the new answer is written
before the old failed row goes) and by accident when a run dies between those two steps. The
rule: an ``ok`` row beats a ``failed`` one; among equals the newest part wins. Parts holding a
losing row are rewritten without it (each rewrite is atomic), so a crash in the middle leaves a
state that the next compaction finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from batchrun.hashing import id_hashes
from batchrun.output.layout import part_time
from batchrun.output.parts import fsync_directory, part_files, write_part
from batchrun.output.rows import OK


def compact(path: Path, holds: Callable[[str], bool] | None = None) -> int:
    """Drop the losing rows of ids that have several; return how many rows were dropped.
    A shard passes ``holds`` and touches only its own ids. (Whether any id has several rows
    is known cheaply from the output's keys: ``OutputKeys.has_repeated_ids``.)"""
    parts = sorted(part_files(path), key=part_time)
    if not parts:
        return 0
    rows = pl.concat(
        [
            pl.read_parquet(part, columns=["id", "status"]).with_columns(
                part=pl.lit(number, pl.Int32), row=pl.int_range(pl.len(), dtype=pl.Int64)
            )
            for number, part in enumerate(parts)
        ]
    )
    repeated = rows.filter(pl.col("id").is_duplicated())
    if repeated.is_empty():
        return 0
    ranked = repeated.sort([pl.col("status") == OK, "part", "row"], descending=[True, True, True])
    losers = ranked.filter(pl.int_range(pl.len()).over("id") > 0)
    if holds is not None:
        losers = losers.filter(pl.Series([holds(id_) for id_ in losers["id"].to_list()]))
    for (number,), dropped in losers.group_by(["part"]):
        _rewrite_without(parts[number], set(dropped["row"].to_list()))
    return len(losers)


def _rewrite_without(part: Path, rows: set[int]) -> None:
    table = pq.read_table(part)
    keep = [i for i in range(table.num_rows) if i not in rows]
    if keep:
        write_part(part, table.take(keep))
    else:
        part.unlink()
        fsync_directory(part.parent)


def prune(path: Path, keeps: Callable[[pl.Series], pl.Series]) -> int:
    """``--prune``: drop the rows whose id ``keeps`` refuses (given the ids' 64-bit hashes, it
    says which stay: those the input still holds); return how many went. Each part is
    rewritten atomically, so a crash midway leaves a state the next ``--prune`` finishes."""
    dropped = 0
    for part in part_files(path):
        keep = keeps(id_hashes(pq.read_table(part, columns=["id"]).column("id")))
        if keep.all():
            continue
        table = pq.read_table(part)
        kept = table.filter(keep.to_arrow())
        dropped += table.num_rows - kept.num_rows
        if kept.num_rows:
            write_part(part, kept)
        else:
            part.unlink()
            fsync_directory(part.parent)
    return dropped
