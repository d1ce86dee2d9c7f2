"""Whole-input checks that need one pass over the data: row counts, duplicate ids, rows with
no text, and the types of the kept columns. Ids are read by ``readers.read_ids``, with the
run's own parsing, so the check and the run never disagree on what a row's id is.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.input.readers import PARQUET_SUFFIXES, input_files, read_ids, read_records
from batchrun.job import Job

DUPLICATES_SHOWN = 5


@dataclass
class InputCheck:
    """What ``validate`` learns of the input."""

    files: list[Path]
    rows: int = 0
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    duplicate_count: int = 0


def open_input(job: Job) -> tuple[list[Path], dict[str, pa.DataType]]:
    """The job's input files and the Arrow types of its kept columns.

    Reads the first batch, so a missing column or a bad first line fails here, before any
    request. Kept columns of JSONL are text (other JSON values are kept as JSON text).
    """
    files = input_files(job.spec.input.path)
    for _ in read_records(files[:1], job.spec.input.id, job.input_columns, batch_rows=16):
        break
    return files, _kept_types(files, job.spec.output.keep)


def _kept_types(files: Sequence[Path], keep: Sequence[str]) -> dict[str, pa.DataType]:
    parquet = [f for f in files if f.suffix in PARQUET_SUFFIXES]
    if not parquet or len(parquet) != len(files):
        return {name: pa.string() for name in keep}
    schema = pa.unify_schemas([pq.read_schema(f) for f in parquet])
    return {name: schema.field(name).type for name in keep}


def check_input(job: Job, files: list[Path]) -> InputCheck:
    """Count the rows and find duplicate ids (the first few with where they are).

    Ids are hashed to 64 bits as they are read and sorted, so a 10-million-row input costs
    about 200 MB for a moment (a hash table would cost three times that); the duplicates found
    are then looked up exactly (a hash collision reports nothing).
    """
    column = job.spec.input.id
    ordered = pl.concat([_hashes(read_ids(file, column)) for file in files]).sort()
    check = InputCheck(files, rows=len(ordered))
    later = ordered.slice(1)
    repeated = later.filter(later == ordered.slice(0, max(len(ordered) - 1, 0)))
    if len(repeated):
        check.duplicates = _locate(job, files, set(repeated.unique().head(DUPLICATES_SHOWN)))
        check.duplicate_count = len(repeated) if check.duplicates else 0
    return check


def _hashes(ids: Iterable[str]) -> pl.Series:
    """The 64-bit hashes of ``ids`` (Python's, stable within this process), compactly."""
    hashes = array("q", map(hash, ids))
    buffer = pa.py_buffer(hashes)
    values = pa.Array.from_buffers(pa.int64(), len(hashes), [None, buffer])
    series = pl.from_arrow(values)
    assert isinstance(series, pl.Series)
    return series


def _locate(job: Job, files: Sequence[Path], hashes: set[int]) -> dict[str, list[str]]:
    """Where each id whose hash is in ``hashes`` stands, for the ids seen more than once."""
    found: dict[str, list[str]] = {}
    for batch in read_records(files, job.spec.input.id, [job.spec.input.id]):
        for record in batch:
            if hash(record.id) in hashes:
                found.setdefault(record.id, []).append(record.where)
    return {id_: places for id_, places in found.items() if len(places) > 1}


def duplicate_lines(check: InputCheck) -> list[str]:
    """What to tell the user about duplicate ids: how many, the first few and where."""
    lines = [f"duplicate ids: {check.duplicate_count} rows repeat an earlier id, e.g.:"]
    lines += [f"  {id_!r} at {', '.join(places)}" for id_, places in check.duplicates.items()]
    lines.append("make every id unique: each row's answer is stored under its id")
    return lines


def input_signature(files: Sequence[Path]) -> list[list[str | int]]:
    """What identifies the input's content cheaply: each file's path, size and mtime."""
    signature: list[list[str | int]] = []
    for file in files:
        stat = file.stat()
        signature.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return signature


def rows_without_text(job: Job, files: Sequence[Path]) -> tuple[int, list[str]]:
    """How many rows have a null, empty or non-text value where the request needs text, and
    where the first few are."""
    count, places = 0, list[str]()
    columns = job.text_columns
    for batch in read_records(files, job.spec.input.id, job.input_columns):
        for record in batch:
            if record.missing_text(columns) is not None:
                count += 1
                if len(places) < DUPLICATES_SHOWN:
                    places.append(record.where)
    return count, places
