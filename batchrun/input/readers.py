"""Streaming readers of a job's input: JSONL and Parquet files, a directory or a glob of them.

Inputs are never loaded whole. JSONL is read line by line in binary and parsed with orjson, so
memory stays flat on any file size and a bad line is reported with its exact line number.
Parquet is read with ``ParquetFile.iter_batches`` over the needed columns only.
"""

from __future__ import annotations

import glob
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from batchrun.errors import JobError
from batchrun.shards import Shard

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its id, the columns the job reads, and where it came from."""

    id: str
    values: dict[str, Any]
    file: Path
    line: int

    @property
    def where(self) -> str:
        return location(self.file, self.line)

    def missing_text(self, columns: Sequence[str]) -> str | None:
        """The first of ``columns`` that holds no text to send, or None."""
        return next((name for name in columns if not has_text(self.values.get(name))), None)


def has_text(value: object) -> bool:
    """The one rule for what a request can send: a string with more than whitespace."""
    return isinstance(value, str) and bool(value.strip())


def location(file: Path, number: int) -> str:
    """'news.jsonl:12' for a JSONL line, 'corpus.parquet row 12' for a Parquet row."""
    return f"{file}:{number}" if file.suffix in JSONL_SUFFIXES else f"{file} row {number}"


def input_files(pattern: str) -> list[Path]:
    """The files an ``[input].path`` names: a file, a directory of inputs, or a glob."""
    path = Path(pattern)
    if glob.has_magic(pattern):
        files = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        files = [f for f in files if f.is_file()]
        if not files:
            raise JobError(f"[input].path: the pattern '{pattern}' matches no file")
    elif path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix in JSONL_SUFFIXES + PARQUET_SUFFIXES)
        if not files:
            raise JobError(f"[input].path: the directory '{pattern}' holds no .jsonl or .parquet")
    elif path.is_file():
        files = [path]
    else:
        raise JobError(f"[input].path: '{pattern}' does not exist (relative to {Path.cwd()})")
    for file in files:
        if file.suffix not in JSONL_SUFFIXES + PARQUET_SUFFIXES:
            raise JobError(f"[input].path: {file}: not a .jsonl or .parquet file")
    return files


def read_records(
    files: Sequence[Path], id_column: str, columns: Sequence[str], batch_rows: int = BATCH_ROWS
) -> Iterator[list[Record]]:
    """Every row of ``files`` in order, as batches of Records holding ``columns``."""
    return iter(RecordReader(files, id_column, columns, batch_rows=batch_rows))


def read_ids(file: Path, id_column: str) -> Iterator[str]:
    """Every id of one file, in order, parsed exactly as ``RecordReader`` parses it (a JSONL
    line that repeats its id key has the id orjson keeps: the last)."""
    if file.suffix in PARQUET_SUFFIXES:
        parquet, number = _parquet_file(file), 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS * 64, columns=[id_column]):
            for value in batch.column(0).to_pylist():
                number += 1
                yield _row_id(value, file, number)
        return
    with file.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _row_id(_parse_line(file, number, line).get(id_column), file, number)


class RecordReader:
    """The rows of ``files`` in order, in batches, without the ids in ``skip`` and those of
    other shards: a resumed run passes over done rows as soon as their id is known, before
    building anything for them."""

    def __init__(
        self,
        files: Sequence[Path],
        id_column: str,
        columns: Sequence[str],
        skip: Container[str] = frozenset(),
        batch_rows: int = BATCH_ROWS,
        shard: Shard | None = None,
    ) -> None:
        self._files = files
        self._id = id_column
        self._columns = columns
        self._skip = skip
        self._batch_rows = batch_rows
        self._shard = shard
        self.skipped = 0
        """Rows passed over because they are done (not those of other shards)."""

    def __iter__(self) -> Iterator[list[Record]]:
        for file in self._files:
            if file.suffix in PARQUET_SUFFIXES:
                yield from self._parquet(file)
            else:
                yield from self._jsonl(file)

    def _jsonl(self, file: Path) -> Iterator[list[Record]]:
        batch: list[Record] = []
        checked, id_column = False, self._id
        with file.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                row = _parse_line(file, number, line)
                if not checked:
                    _check_columns(file, self._columns, row.keys())
                    checked = True
                row_id = _row_id(row.get(id_column), file, number)
                if self._passes_over(row_id):
                    continue
                values = {name: row.get(name) for name in self._columns}
                batch.append(Record(row_id, values, file, number))
                if len(batch) >= self._batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _parquet(self, file: Path) -> Iterator[list[Record]]:
        parquet = _parquet_file(file)
        _check_columns(file, self._columns, parquet.schema_arrow.names)
        number = 0
        columns = list(self._columns)
        for batch in parquet.iter_batches(batch_size=self._batch_rows, columns=columns):
            records = []
            for values in batch.to_pylist():
                number += 1
                row_id = _row_id(values[self._id], file, number)
                if not self._passes_over(row_id):
                    records.append(Record(row_id, values, file, number))
            yield records

    def _passes_over(self, row_id: str) -> bool:
        if self._shard is not None and not self._shard.holds(row_id):
            return True
        if row_id in self._skip:
            self.skipped += 1
            return True
        return False


def _parse_line(file: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise JobError(f"{file}:{number}: not valid JSON ({exc}); fix or remove the line") from None
    if not isinstance(row, dict):
        raise JobError(f"{file}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def _parquet_file(file: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise JobError(f"{file}: not a readable Parquet file ({exc})") from None


def _check_columns(file: Path, wanted: Sequence[str], present: Any) -> None:
    names = list(present)
    missing = [name for name in wanted if name not in names]
    if missing:
        raise JobError(
            f"{file}: column {', '.join(repr(m) for m in missing)} not in the input "
            f"(columns: {', '.join(names)}); fix the job's [input]/[prompt]/[output].keep"
        )


def _row_id(value: object, file: Path, number: int) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise JobError(
        f"{location(file, number)}: the id is {value!r}; "
        "every row needs a non-empty string or integer id"
    )
