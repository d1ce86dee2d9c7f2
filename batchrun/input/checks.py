"""The input before a run: its files, the types of its kept columns (from the first batch, so
a missing column or a bad first line fails before any request), and a cheap signature of its
content. The whole-input pass (row count, duplicate ids, rows without text) is the input
index's (``batchrun.input.index``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.input.readers import PARQUET_SUFFIXES, input_files, read_records
from batchrun.job.spec import Job


def open_input(job: Job) -> tuple[list[Path], dict[str, pa.DataType]]:
    """The job's input files and the Arrow types of its kept columns.

    Reads the first batch, so a missing column or a bad first line fails here, before any
    request. Kept columns of JSONL are text (other JSON values are kept as JSON text).
    """
    files = input_files(job.spec.input.path)
    for _ in read_records(files[:1], job.id_column, job.input_columns, batch_rows=16):
        break
    return files, _kept_types(files, job.spec.output.keep)


def _kept_types(files: Sequence[Path], keep: Sequence[str]) -> dict[str, pa.DataType]:
    parquet = [f for f in files if f.suffix in PARQUET_SUFFIXES]
    if not parquet or len(parquet) != len(files):
        return {name: pa.string() for name in keep}
    schema = pa.unify_schemas([pq.read_schema(f) for f in parquet])
    return {name: schema.field(name).type for name in keep}


def input_signature(files: Sequence[Path]) -> list[list[str | int]]:
    """What identifies the input's content cheaply: each file's path, size and mtime."""
    signature: list[list[str | int]] = []
    for file in files:
        stat = file.stat()
        signature.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return signature
