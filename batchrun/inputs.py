"""Whole-input checks that need one pass over the data: row counts, duplicate ids, and the
types of the kept columns. polars does the duplicate-id pass (fast, compact); the exact line
numbers of the first few duplicates come from the streaming reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.errors import JobError
from batchrun.job import Job
from batchrun.results import reserved_columns
from batchrun.sources import PARQUET_SUFFIXES, input_files, read_records

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
    clash = sorted(set(job.spec.output.keep) & reserved_columns(job.kind))
    if clash:
        raise JobError(
            f"{job.source}: [output].keep: {', '.join(clash)} would clash with an output column "
            "of the same name; drop it from keep"
        )
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
    """Count the rows and find duplicate ids (the first few with where they are)."""
    ids = _id_column(files, job.spec.input.id)
    check = InputCheck(files, rows=len(ids))
    counts = ids.value_counts()
    repeated = counts.filter(pl.col("count") > 1)
    check.duplicate_count = int(repeated["count"].sum() - len(repeated)) if len(repeated) else 0
    if check.duplicate_count:
        shown = set(repeated[ids.name].head(DUPLICATES_SHOWN).to_list())
        check.duplicates = _locate(job, files, shown)
    return check


def _id_column(files: Sequence[Path], column: str) -> pl.Series:
    """Every id of the input as text."""
    frames = []
    for file in files:
        try:
            if file.suffix in PARQUET_SUFFIXES:
                frame = pl.scan_parquet(file).select(pl.col(column).cast(pl.Utf8))
            else:
                frame = pl.scan_ndjson(file, infer_schema_length=None).select(
                    pl.col(column).cast(pl.Utf8)
                )
            frames.append(frame.collect())
        except Exception:  # polars cannot type this file: count it exactly, the slow way
            frames.append(_id_column_streamed(file, column))
    return pl.concat(frames).to_series() if frames else pl.Series(column, [], pl.Utf8)


def _id_column_streamed(file: Path, column: str) -> pl.DataFrame:
    ids = [record.id for batch in read_records([file], column, [column]) for record in batch]
    return pl.DataFrame({column: ids}, schema={column: pl.Utf8})


def _locate(job: Job, files: Sequence[Path], wanted: set[str]) -> dict[str, list[str]]:
    """Where each of ``wanted`` ids stands in the input."""
    found: dict[str, list[str]] = {}
    for batch in read_records(files, job.spec.input.id, [job.spec.input.id]):
        for record in batch:
            if record.id in wanted:
                found.setdefault(record.id, []).append(record.where)
    return found
