"""Which rows of the input files a run reads: a ``Selection`` names them by file, as their
offsets (a JSONL line's byte offset, a Parquet row's index) and line numbers, in file order.

The diff lists the rows left to do in a ``TodoList``: an unnamed temporary file beside the
input index (16 bytes a row on disk), read back a batch at a time, so that the listing of ten
million rows costs the run no memory. ``Picked`` holds a few rows in memory (a sample).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa

TODO_SCHEMA = pa.schema([("offset", pa.int64()), ("line", pa.int64()), ("id", pa.string())])
READ_ROWS = 8_192
"""Rows of a listing turned into Python numbers at once."""


class Selection(Protocol):
    def count(self, file: int) -> int:
        """Rows to read in file ``file`` (its index in the job's input files)."""
        ...

    def wanted(self, file: int) -> Iterator[tuple[int, int]]:
        """(offset, line number) of each row to read in file ``file``, in file order."""
        ...

    def expected(self, file: int) -> Iterator[str | None] | None:
        """The id each of those rows must hold (from the input index; None: not known)."""
        ...


@dataclass(frozen=True)
class Picked:
    """A few rows, in memory."""

    rows: Mapping[int, Sequence[tuple[int, int]]]

    def count(self, file: int) -> int:
        return len(self.rows.get(file, ()))

    def wanted(self, file: int) -> Iterator[tuple[int, int]]:
        return iter(self.rows.get(file, ()))

    def expected(self, file: int) -> Iterator[str | None] | None:
        return None


class TodoList:
    """Rows to read, added in file order (``add``), then read back (``wanted``); the file
    goes when the list is closed, or with the process, whatever ends it."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._file: IO[bytes] | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._reader: pa.ipc.RecordBatchFileReader | None = None
        self._batches: dict[int, list[int]] = {}
        self._counts: dict[int, int] = {}
        self._written = 0
        self.total = 0

    def add(
        self, file: int, offsets: pa.Array, lines: pa.Array, ids: pa.Array | None = None
    ) -> None:
        """Rows of ``file`` after every row added so far (with the ids they must hold)."""
        if not len(offsets):
            return
        assert self._reader is None, "a TodoList takes no row once read"
        if self._writer is None:
            self._file = _unnamed_file(self._directory)
            self._writer = pa.ipc.new_file(pa.PythonFile(self._file, mode="w"), TODO_SCHEMA)
        ids = pa.nulls(len(offsets), pa.string()) if ids is None else ids
        columns = [offsets.cast(pa.int64()), lines.cast(pa.int64()), ids.cast(pa.string())]
        self._writer.write_batch(pa.record_batch(columns, schema=TODO_SCHEMA))
        self._batches.setdefault(file, []).append(self._written)
        self._written += 1
        self._counts[file] = self._counts.get(file, 0) + len(offsets)
        self.total += len(offsets)

    def count(self, file: int) -> int:
        return self._counts.get(file, 0)

    def wanted(self, file: int) -> Iterator[tuple[int, int]]:
        if not self.count(file):
            return
        reader = self._read()
        for number in self._batches[file]:
            batch = reader.get_batch(number)
            for start in range(0, batch.num_rows, READ_ROWS):
                chunk = batch.slice(start, READ_ROWS)
                yield from zip(chunk["offset"].to_pylist(), chunk["line"].to_pylist(), strict=True)

    def expected(self, file: int) -> Iterator[str | None] | None:
        if not self.count(file):
            return None
        reader = self._read()
        return (
            id_
            for number in self._batches[file]
            for id_ in reader.get_batch(number).column("id").to_pylist()
        )

    def first(self, count: int) -> Picked:
        """The first ``count`` rows, in memory."""
        taken: dict[int, list[tuple[int, int]]] = {}
        rows = ((file, row) for file in sorted(self._counts) for row in self.wanted(file))
        for file, row in itertools.islice(rows, count):
            taken.setdefault(file, []).append(row)
        return Picked(taken)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> TodoList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> pa.ipc.RecordBatchFileReader:
        if self._reader is None:
            assert self._writer is not None and self._file is not None
            self._writer.close()
            self._file.flush()
            self._file.seek(0)
            self._reader = pa.ipc.open_file(pa.PythonFile(self._file, mode="r"))
        return self._reader


def _unnamed_file(directory: Path | None) -> IO[bytes]:
    """A temporary file in ``directory``, else (read-only, say) in the system's."""
    try:
        return tempfile.TemporaryFile(dir=directory, prefix=".batchrun-todo-")
    except OSError:
        return tempfile.TemporaryFile(prefix="batchrun-todo-")
