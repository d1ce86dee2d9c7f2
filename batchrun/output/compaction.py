"""One row per id in the output: when an id has several rows, the best one stays.

Several rows for one id arise on purpose with ``--retry-failed`` and for edited rows (the new
answer is written before the old row goes) and by accident when a run dies between those two
steps. The engine names the rows that lose (``output.done.WINNER_FIRST``); parts holding one
are rewritten without it (each rewrite is atomic, and keeps the part's sequence number), so a
crash in the middle leaves a state that the next compaction finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from batchrun.output.atomic import fsync_directory
from batchrun.output.catalogue import Catalogue, set_aside
from batchrun.output.done import Engine, losers, outside
from batchrun.output.parts import DamagedPart, open_part, part_batches, sequence_of, write_batches

REWRITE_BATCH_ROWS = 2_048
"""Rows of a part rewritten at once (8 MB of 1024-dimensional vectors)."""


def compact(path: Path, holds: Callable[[str], bool] | None = None) -> None:
    """Drop the losing rows of the ids that have several. A shard passes ``holds`` and
    touches only its own ids. Damaged parts are moved aside."""
    catalogue = Catalogue.load(path, repair=True)
    with Engine(catalogue) as engine:
        found = losers(engine)
    left = 0
    for part, (rows, ids) in found.items():
        mine = [row for row, id_ in zip(rows, ids, strict=True) if holds is None or holds(id_)]
        if mine:
            _rewrite_without(catalogue, part, set(mine))
        left += len(rows) - len(mine)
    if left:  # another shard's ids wait for it
        catalogue.save()
    else:
        catalogue.settle()


def prune(path: Path, index: Path) -> int:
    """``--prune``: drop the rows whose id the input index does not hold; return how many went."""
    catalogue = Catalogue.load(path, repair=True)
    with Engine(catalogue) as engine:
        found = outside(engine, index)
    pruned = sum(_rewrite_without(catalogue, part, set(rows)) for part, rows in found.items())
    catalogue.save()
    return pruned


def _rewrite_without(catalogue: Catalogue, part: Path, dropped: set[int]) -> int:
    """Rewrite ``part`` without the rows numbered ``dropped``, a batch at a time, keeping its
    sequence number (the catalogue records it as written); how many rows went (none when the
    part turns out damaged: it is set aside)."""
    entry = catalogue.entries.pop(part.name, None)
    try:
        schema, sequence = open_part(part).schema_arrow, sequence_of(part)
        if not write_batches(part, schema, _kept(part, dropped), sequence):
            part.unlink()
            fsync_directory(part.parent)
            return len(dropped)
    except DamagedPart as damage:
        set_aside(damage, repair=True)
        return 0
    stat = part.stat()
    settled = entry[3] if entry else 0
    catalogue.entries[part.name] = [stat.st_size, stat.st_mtime_ns, sequence, settled]
    return len(dropped)


def _kept(part: Path, dropped: set[int]) -> Iterator[pa.RecordBatch]:
    """The rows of ``part`` but those numbered ``dropped``, a batch at a time."""
    keep = np.ones(open_part(part).metadata.num_rows, bool)
    keep[sorted(dropped)] = False
    start = 0
    for batch in part_batches(part, REWRITE_BATCH_ROWS):
        kept = batch.filter(pa.array(keep[start : start + batch.num_rows]))
        start += batch.num_rows
        if kept.num_rows:
            yield kept
