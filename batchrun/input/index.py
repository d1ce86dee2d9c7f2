"""The input index: one small entry per input row, made in one pass over the whole input.

Each entry holds the row's id hash, the hash of the request it makes (from the job's task),
its shard key (CRC-32 of the id, as ``--shard`` uses), and where it stands (file, byte offset
or row index, line number): 36 bytes a row, written in Arrow batches as the pass goes, so a
ten-million-row input costs no more memory than a batch. The same pass checks the whole input:
row count and rows that cannot be sent (the task says why: no text, a malformed
conversation). Duplicate ids are found after it (``check_duplicates``): the index's id hashes
sorted two million at a time, one range of hashes in each pass; the few found are then
located exactly.

A later run diffs the index against the output (``batchrun.diff``) instead of parsing the input
again, and reads only the rows left to do, by their offsets.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from batchrun.hashing import id_hashes
from batchrun.input.readers import Row, location, read_records, scan_rows

SCHEMA = pa.schema(
    [
        ("id_hash", pa.uint64()),
        ("request_hash", pa.int64()),
        ("shard_key", pa.uint32()),
        ("file", pa.int32()),
        ("offset", pa.int64()),
        ("line", pa.int64()),
    ]
)
SHOWN = 5
"""Duplicate ids and rows without text named in a message."""
NAMED = 1_000
"""Rows that cannot be sent remembered with their place and reason (a batch file's bad lines
are each named, as OpenAI's validation does, up to this many)."""
DUPLICATE_CHECK_ROWS = 1 << 21
"""Id hashes sorted at once by the duplicate check (16 MB and as much to sort them)."""


class RowRules(Protocol):
    """What the job's task says of a row, from its column values (``tasks.base.Task``)."""

    def request_hash(self, values: Mapping[str, Any]) -> int: ...

    def problem(self, values: Mapping[str, Any]) -> str | None: ...

    def model_of(self, values: Mapping[str, Any]) -> str | None: ...


@dataclass
class InputCheck:
    """What the pass learns of the whole input."""

    files: list[Path]
    rows: int = 0
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    duplicate_count: int = 0
    unsendable: int = 0
    """Rows that cannot be sent (no text, a malformed conversation: ``Task.problem``)."""
    unsendable_at: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    """The models the rows name (lines of a batch file); empty when the job names them."""


def index_input(
    files: list[Path],
    id_column: str,
    columns: Sequence[str],
    rules: RowRules,
    sink: Callable[[pa.RecordBatch], None],
) -> InputCheck:
    """Read every row once: give ``sink`` the index batches, return the whole-input check."""
    check = InputCheck(files)
    models: set[str] = set()
    for rows in scan_rows(files, id_column, columns):
        hashes = id_hashes([row[3] for row in rows])
        sink(_entries(rows, hashes, rules.request_hash))
        _count_unsendable(check, rows, rules.problem)
        models.update(model for row in rows if (model := rules.model_of(row[4])) is not None)
        check.rows += len(rows)
    check.models = sorted(models)
    return check


def check_duplicates(check: InputCheck, index: Path, id_column: str) -> None:
    """Find the ids the input holds more than once (after ``index_input`` wrote ``index``):
    count them, and locate the first few exactly."""
    count, repeated = _repeated_hashes(index, check.rows)
    if count:
        check.duplicates = _locate(check.files, id_column, set(repeated))
        check.duplicate_count = count if check.duplicates else 0


def _repeated_hashes(index: Path, rows: int) -> tuple[int, list[int]]:
    """Rows whose id hash an earlier row has, and a few of those hashes. The hashes are
    sorted ``DUPLICATE_CHECK_ROWS`` at a time: a bigger input takes a pass over its index
    for each range of hashes."""
    passes = max(1, math.ceil(rows / DUPLICATE_CHECK_ROWS))
    bounds = [part * (1 << 64) // passes for part in range(passes)] + [None]
    count, shown = 0, list[int]()
    for low, high in itertools.pairwise(bounds):
        assert low is not None
        ordered = pl.concat([_hashes_within(batch, low, high) for batch in _index_hashes(index)])
        ordered = ordered.sort()
        later = ordered.slice(1)
        repeated = later.filter(later == ordered.slice(0, max(len(ordered) - 1, 0)))
        count += len(repeated)
        shown += repeated.unique().head(max(SHOWN - len(shown), 0)).to_list()
    return count, shown


def _index_hashes(index: Path) -> Iterator[pl.Series]:
    with pa.OSFile(str(index)) as source, pa.ipc.open_file(source) as reader:
        yield pl.Series("id_hash", [], pl.UInt64)
        for number in range(reader.num_record_batches):
            yield pl.Series(reader.get_batch(number).column("id_hash"))


def _hashes_within(hashes: pl.Series, low: int, high: int | None) -> pl.Series:
    """The hashes in [low, high), copied (not a view of the batch they were read with)."""
    inside = hashes >= low if high is None else (hashes >= low) & (hashes < high)
    return hashes.filter(inside)


def _entries(
    rows: list[Row], hashes: pl.Series, request_hash: Callable[[Mapping[str, Any]], int]
) -> pa.RecordBatch:
    return pa.record_batch(
        [
            hashes.to_arrow(),
            pa.array([request_hash(row[4]) for row in rows], pa.int64()),
            pa.array([zlib.crc32(row[3].encode()) for row in rows], pa.uint32()),
            pa.array([row[0] for row in rows], pa.int32()),
            pa.array([row[1] for row in rows], pa.int64()),
            pa.array([row[2] for row in rows], pa.int64()),
        ],
        schema=SCHEMA,
    )


def _count_unsendable(
    check: InputCheck, rows: list[Row], problem: Callable[[Mapping[str, Any]], str | None]
) -> None:
    for number, _, line, _, values in rows:
        if (reason := problem(values)) is not None:
            check.unsendable += 1
            if len(check.unsendable_at) < NAMED:
                check.unsendable_at.append(f"{location(check.files[number], line)} ({reason})")


def _locate(files: Iterable[Path], id_column: str, wanted: set[int]) -> dict[str, list[str]]:
    """Where each id whose hash is in ``wanted`` stands, for the ids seen more than once."""
    found: dict[str, list[str]] = {}
    for batch in read_records(list(files), id_column, [id_column]):
        for record, digest in zip(batch, id_hashes([r.id for r in batch]), strict=True):
            if digest in wanted:
                found.setdefault(record.id, []).append(record.where)
    return {id_: places for id_, places in found.items() if len(places) > 1}


def duplicate_lines(check: InputCheck) -> list[str]:
    """What to tell the user about duplicate ids: how many, the first few and where."""
    lines = [f"duplicate ids: {check.duplicate_count} rows repeat an earlier id, e.g.:"]
    lines += [f"  {id_!r} at {', '.join(places)}" for id_, places in check.duplicates.items()]
    lines.append("make every id unique: each row's answer is stored under its id")
    return lines
