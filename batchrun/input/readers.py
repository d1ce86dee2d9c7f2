"""Streaming readers of a job's input: JSONL and Parquet files, a directory or a glob of them.

Inputs are never loaded whole. JSONL is read line by line in binary and parsed with orjson, so
memory stays flat on any file size and a bad line is reported with its exact line number.
Parquet is read with ``ParquetFile.iter_batches`` over the needed columns only.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.errors import JobError
from batchrun.input.ids import row_id
from batchrun.input.parquet import open_parquet, parquet_batches
from batchrun.input.selection import Selection
from batchrun.job.spec import BatchId

JSONL_SUFFIXES = (".jsonl", ".ndjson")
UNREADABLE = "_unreadable"
"""The key, among a batch file line's values, of why the line is not a JSON object."""
PARQUET_SUFFIXES = (".parquet", ".pq")
READ_BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its id, the columns the job reads, and where it came from."""

    id: str
    values: dict[str, Any]
    file: Path
    line: int
    offset: int = 0
    """Where the row starts: a JSONL line's byte offset, a Parquet row's index."""

    @property
    def where(self) -> str:
        return location(self.file, self.line)


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
    files: Sequence[Path], id_column: str, columns: Sequence[str], batch_rows: int = READ_BATCH_ROWS
) -> Iterator[list[Record]]:
    """Every row of ``files`` in order, as batches of Records holding ``columns``."""
    return iter(RecordReader(files, id_column, columns, batch_rows=batch_rows))


Wanted = Iterator[tuple[int, int]]
"""(offset, line number) of the rows of one file to read, in file order."""


class RecordReader:
    """The rows of ``files`` in order, in batches; with ``only``, just the rows it names (a
    resumed run reads what is left to do and nothing else: a JSONL line is found by its byte
    offset, a Parquet row by its index)."""

    def __init__(
        self,
        files: Sequence[Path],
        id_column: str,
        columns: Sequence[str],
        only: Selection | None = None,
        batch_rows: int = READ_BATCH_ROWS,
    ) -> None:
        self._files = files
        self._id = id_column
        self._columns = columns
        self._only = only
        self._batch_rows = batch_rows

    def __iter__(self) -> Iterator[list[Record]]:
        for index, file in enumerate(self._files):
            wanted = None
            if self._only is not None:
                if not self._only.count(index):
                    continue
                wanted = self._only.wanted(index)
            if file.suffix in PARQUET_SUFFIXES:
                batches = self._parquet(file, wanted)
            else:
                batches = _batched(self._jsonl(file, wanted), self._batch_rows)
            expected = self._only.expected(index) if self._only is not None else None
            yield from batches if expected is None else checked(batches, expected, file)

    def _jsonl(self, file: Path, wanted: Wanted | None) -> Iterator[Record]:
        with file.open("rb") as lines:
            first = True
            for offset, number, line in _lines(lines, wanted):
                if not line.strip():
                    continue
                row = _parse_line(file, number, line, self._id)
                if first:
                    _check_columns(file, self._columns, row.keys(), self._id)
                    first = False
                row_id, values = _row_values(row, file, number, line, self._id, self._columns)
                yield Record(row_id, values, file, number, offset)

    def _parquet(self, file: Path, wanted: Wanted | None) -> Iterator[list[Record]]:
        parquet = open_parquet(file)
        _check_columns(file, self._columns, parquet.schema_arrow.names)
        rows = wanted
        start, nxt = 0, next(rows, None) if rows is not None else None
        columns = list(self._columns)
        for batch in parquet_batches(parquet, file, self._batch_rows, columns):
            end = start + batch.num_rows
            picked: list[int] = []
            while rows is not None and nxt is not None and nxt[0] < end:
                picked.append(nxt[0] - start)
                nxt = next(rows, None)
            chosen = batch if rows is None else batch.take(picked)
            first = start if rows is None else None
            yield self._parquet_records(file, chosen, picked, start, first)
            start = end
            if rows is not None and nxt is None:
                return

    def _parquet_records(
        self, file: Path, batch: Any, picked: list[int], start: int, first: int | None
    ) -> list[Record]:
        numbers = (
            range(first, first + batch.num_rows)
            if first is not None
            else [start + index for index in picked]
        )
        try:
            rows = batch.to_pylist()
        except UnicodeDecodeError as exc:  # a damaged page of an uncompressed text column
            raise JobError(
                f"{file}: damaged Parquet data after row {start} (text that is not UTF-8: "
                f"{exc}); write the file again from its source"
            ) from None
        records = []
        for index, values in zip(numbers, rows, strict=True):
            number = index + 1
            the_id = row_id(values[self._id], location(file, number))
            records.append(Record(the_id, values, file, number, index))
        return records


class StaleIndex(JobError):
    """A row read at the place the input index gives does not hold the id the index says."""


def checked(
    batches: Iterator[list[Record]], expected: Iterator[str | None], file: Path
) -> Iterator[list[Record]]:
    """``batches`` read at the input index's places, each row's id checked against the
    index's (a row that does not parse there is out of step too)."""
    try:
        for batch in batches:
            for record in batch:
                if (wanted := next(expected, None)) is not None and record.id != wanted:
                    raise StaleIndex(
                        f"{record.where}: the input index puts id {wanted!r} here, but the row "
                        f"holds {record.id!r}"
                    )
            yield batch
    except StaleIndex:
        raise
    except JobError as exc:
        raise StaleIndex(
            f"{file}: the input index points at a place that is not a row ({exc})"
        ) from None


InputRow = tuple[int, int, int, str, dict[str, Any]]
"""(file number, offset, line number, id, the row's values) of ``scan_rows``."""


def scan_rows(
    files: Sequence[Path], id_column: str, columns: Sequence[str], batch_rows: int = 8192
) -> Iterator[list[InputRow]]:
    """Every row of ``files`` in batches, lean: no ``Record`` objects (the input index's pass
    reads ten million rows this way). The ids, the parsing and the values (``columns``, a
    missing key None) are ``RecordReader``'s own."""
    for number, file in enumerate(files):
        if file.suffix in PARQUET_SUFFIXES:
            for records in RecordReader([file], id_column, columns, batch_rows=batch_rows):
                yield [(number, r.offset, r.line, r.id, r.values) for r in records]
            continue
        batch: list[InputRow] = []
        for offset, line_number, line in _lines_of(file, id_column, columns):
            row = _parse_line(file, line_number, line, id_column)
            row_id, values = _row_values(row, file, line_number, line, id_column, columns)
            batch.append((number, offset, line_number, row_id, values))
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch


def _lines_of(
    file: Path, id_column: str, columns: Sequence[str]
) -> Iterator[tuple[int, int, bytes]]:
    """The non-blank lines of a JSONL file; the first one's columns are checked."""
    with file.open("rb") as lines:
        first = True
        for offset, number, line in _lines(lines, None):
            if not line.strip():
                continue
            if first:
                row = _parse_line(file, number, line, id_column)
                _check_columns(file, columns, row.keys(), id_column)
                first = False
            yield offset, number, line


def _lines(lines: Any, wanted: Wanted | None) -> Iterator[tuple[int, int, bytes]]:
    """(offset, line number, line): every line, or only the ``wanted`` ones, found by seeking
    (consecutive ones are read on without a seek)."""
    if wanted is None:
        offset = 0
        for number, line in enumerate(lines, start=1):
            yield offset, number, line
            offset += len(line)
        return
    position = 0
    for offset, number in wanted:
        if offset != position:
            lines.seek(offset)
        line = lines.readline()
        position = offset + len(line)
        yield offset, number, line


def _batched(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _parse_line(file: Path, number: int, line: bytes, id_column: str) -> dict[str, Any]:
    """A JSONL line's object; a line that is none is an input error, or in a batch file
    (``BatchId``) a bad line that says why."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc})"
    else:
        if isinstance(row, dict):
            return row
        problem = f"expected a JSON object, got {type(row).__name__}"
    if isinstance(id_column, BatchId):
        return {UNREADABLE: problem}
    raise JobError(f"{file}:{number}: {problem}; fix or remove the line")


def _row_values(
    row: dict[str, Any],
    file: Path,
    number: int,
    line: bytes,
    id_column: str,
    columns: Sequence[str],
) -> tuple[str, dict[str, Any]]:
    """A row's id and the values of ``columns`` (a missing key is None)."""
    values = {name: row.get(name) for name in columns}
    if not isinstance(id_column, BatchId):
        return row_id(row.get(id_column), location(file, number), line, id_column), values
    if UNREADABLE in row:
        values[UNREADABLE] = row[UNREADABLE]
    custom_id = row.get(id_column)
    if isinstance(custom_id, str) and custom_id:
        return custom_id, values
    return f"{file.name}:{number}", values


def _check_columns(file: Path, wanted: Sequence[str], present: Any, id_column: str = "") -> None:
    if isinstance(id_column, BatchId):  # each line's fields are checked as the line's own
        return
    names = list(present)
    missing = [name for name in wanted if name not in names]
    if missing:
        raise JobError(
            f"{file}: column {', '.join(repr(m) for m in missing)} not in the input "
            f"(columns: {', '.join(names)}); fix the job's [input]/[prompt]/[output].keep"
        )
