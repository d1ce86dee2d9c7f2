"""The input index: one small entry per input row, made in one pass over the whole input.

Each entry holds the row's id hash, the hash of the request it makes (from the job's task),
its shard key (CRC-32 of the id, as ``--shard`` uses), and where it stands (file, byte offset
or row index, line number): 36 bytes a row, written in Arrow batches as the pass goes, so a
ten-million-row input costs no more memory than a batch. The same pass checks the whole input:
row count, duplicate ids (their 64-bit hashes sorted; the few found are then located
exactly) and rows that cannot be sent (the task says why: no text, a malformed conversation).

A later run diffs the index against the output (``batchrun.diff``) instead of parsing the input
again, and reads only the rows left to do, by their offsets.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    chunks: list[pl.Series] = []
    models: set[str] = set()
    for rows in scan_rows(files, id_column, columns):
        hashes = id_hashes([row[3] for row in rows])
        chunks.append(hashes)
        sink(_entries(rows, hashes, rules.request_hash))
        _count_unsendable(check, rows, rules.problem)
        models.update(model for row in rows if (model := rules.model_of(row[4])) is not None)
    every = pl.concat(chunks) if chunks else pl.Series("id_hash", [], pl.UInt64)
    check.rows = len(every)
    check.models = sorted(models)
    _find_duplicates(check, every, id_column)
    return check


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
            if len(check.unsendable_at) < SHOWN:
                check.unsendable_at.append(f"{location(check.files[number], line)} ({reason})")


def _find_duplicates(check: InputCheck, hashes: pl.Series, id_column: str) -> None:
    ordered = hashes.sort()
    later = ordered.slice(1)
    repeated = later.filter(later == ordered.slice(0, max(len(ordered) - 1, 0)))
    if len(repeated):
        wanted = set(repeated.unique().head(SHOWN).to_list())
        check.duplicates = _locate(check.files, id_column, wanted)
        check.duplicate_count = len(repeated) if check.duplicates else 0


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
