"""DuckDB as every query over the output's parts and the input index runs it: under a memory
limit, spilling its joins and sorts to a temporary directory rather than grow; a query that
still runs out is run again on one thread, then under twice the limit, and so on up to sixteen
times (each step said on stderr), so that a night whose data outgrew the limit is slower, never
stopped; DuckDB's errors become an ``OutputError`` naming the file asked about (over an
output's parts, its record of verified parts is dropped: a part damaged after it was verified is
then found by the next run).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import pyarrow as pa

from batchrun.errors import OutputError
from batchrun.output.layout import OutputLayout

MEMORY_ENV = "BATCHRUN_QUERY_MEMORY"
MEMORY_LIMIT = os.environ.get(MEMORY_ENV) or "100MB"
"""What DuckDB may hold (``BATCHRUN_QUERY_MEMORY`` sets another); the rest spills to disk.
Over ten million done rows the diff took 3.4-4.0 s and peaked at 420 MB with 200 MB, 3.7 s
and 327 MB with 100 MB; with 60 MB it ran out (a join's blocks cannot all spill)."""
MOST = 16
"""The highest multiple of the limit a query that ran out is run again under (doubling)."""
THREADS = 2
STREAM_ROWS = 65_536
"""Rows of a streamed result taken at once."""
T = TypeVar("T")


def listing(files: list[Path]) -> str:
    """A SQL list of file names."""
    quoted = ["'" + str(file).replace("'", "''") + "'" for file in files]
    return "[" + ", ".join(quoted) + "]"


class Queries:
    """A DuckDB connection for the queries about ``path`` (``with Queries(path) as q``)."""

    multiple = 1
    """The multiple of the limit this process found it needs: later queries start there."""

    def __init__(self, path: Path) -> None:
        import duckdb  # loaded when asked: a run's start does not wait for it

        self.path = path
        self.threads = THREADS
        self._spill = tempfile.TemporaryDirectory(prefix="batchrun-")
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": limit(Queries.multiple),
            "threads": self.threads,
            "temp_directory": self._spill.name,
            "preserve_insertion_order": False,
        }
        self.con = duckdb.connect(config=config)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()
        self._spill.cleanup()

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Every row of a query's result."""
        return self._retried(lambda: self.con.sql(sql).fetchall())

    def execute(self, sql: str, values: dict[str, object] | None = None) -> None:
        """Run a statement (``COPY``, ``CREATE TEMP TABLE``), with ``$name`` values."""
        self._retried(lambda: self.con.execute(sql, values))

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        """A query's result in batches: run again (``_room_made``) only when it runs out
        before its first batch (one given out cannot be taken back)."""
        reader = self._retried(lambda: _started(self.con.sql(sql).to_arrow_reader(STREAM_ROWS)))
        with said(self.path):
            yield from reader

    def _retried(self, query: Callable[[], T]) -> T:
        import duckdb

        with said(self.path):
            while True:
                try:
                    return query()
                except duckdb.OutOfMemoryException:
                    if not self._room_made():
                        raise

    def _room_made(self) -> bool:
        """After a query ran out: the same limit on one thread (each thread holds its own
        share of a join's buffers; slower, no more memory), then twice the limit, up to
        ``MOST`` times; False past that."""
        import duckdb

        ran_out = limit(Queries.multiple)
        if self.threads > 1:
            self.threads = 1
            try:
                self.con.execute("SET threads = 1")
            except duckdb.OutOfMemoryException:  # (under a tiny limit, even this)
                return self._room_made()
            _note(f"a query ran out of memory under {ran_out}; running it again on one thread")
            return True
        if Queries.multiple >= MOST:
            return False
        Queries.multiple *= 2
        raised = limit(Queries.multiple)
        _note(
            f"a query ran out of memory under {ran_out}; running it again under {raised} "
            f"(set {MEMORY_ENV}={raised} to start there)"
        )
        self.con.execute(f"SET memory_limit = '{raised}'")
        return True


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def limit(multiple: int) -> str:
    """``MEMORY_LIMIT`` times ``multiple``, in its own unit (``100MB`` times 2 is ``200MB``)."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", MEMORY_LIMIT)
    if found is None:
        raise OutputError(f"{MEMORY_ENV}={MEMORY_LIMIT}: give a size such as 100MB or 1GB")
    return f"{float(found[1]) * multiple:g}{found[2]}"


def _started(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The batches of ``reader``, its first one read now (where DuckDB runs out, if ever)."""
    try:
        first = reader.read_next_batch()
    except StopIteration:
        return iter(())
    return itertools.chain([first], reader)


@contextlib.contextmanager
def said(path: Path) -> Iterator[None]:
    """DuckDB's errors over the files of ``path`` as an OutputError naming it; running out
    of memory where it is not run again (past ``MOST``, or in the middle of a stream) says the
    limit it had and how to raise it."""
    import duckdb

    try:
        yield
    except duckdb.OutOfMemoryException:
        raise OutputError(
            f"{path}: the query engine ran out of memory under {limit(Queries.multiple)} "
            f"({Queries.multiple} times {MEMORY_ENV}={MEMORY_LIMIT}); set it higher "
            f"(for example {MEMORY_ENV}=2GB) and run again"
        ) from None
    except duckdb.Error as exc:
        checks = OutputLayout(path).catalogue  # (DuckDB does not verify pages: pyarrow will)
        if checks.exists():
            checks.unlink()
            raise OutputError(
                f"{path}: cannot be read ({exc}); run the job again: it checks every part "
                "anew and sets a damaged one aside, to be done again"
            ) from None
        raise OutputError(f"{path}: cannot be read ({exc})") from None
