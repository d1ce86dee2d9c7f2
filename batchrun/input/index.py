"""The input index: one small entry per input row, made in one pass over the whole input.

Each entry holds the row's id, the hash of the request it makes (from the job's task), its
shard key (CRC-32 of the id, as ``--shard`` uses), where it stands (file, byte offset or row
index, line number), its line's hashes (``input.lines``), why it cannot be sent (the task
says: no text, a malformed conversation) and the model it names (a batch file's line). The
pass writes them as it goes, so a ten-million-row input costs no more memory than a batch;
``input.build`` puts them together with the entries of unchanged lines. What the whole input
holds (rows, rows that cannot be sent, models, duplicate ids) is then asked of the index
(``whole_check``). A later run diffs the index against the output (``batchrun.plan.diff``)
instead of parsing the input again, and reads only the rows left to do, by their offsets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from batchrun.input.readers import InputRow, RecordReader, location, scan_rows
from batchrun.input.selection import Selection
from batchrun.job.shards import shard_key
from batchrun.job.spec import Job
from batchrun.output.query import Queries, listing

INDEX_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("request_hash", pa.int64()),
        ("shard_key", pa.uint32()),
        ("file", pa.int32()),
        ("offset", pa.int64()),
        ("line", pa.int64()),
        ("problem", pa.string()),
        ("model", pa.string()),
    ]
)
SHOWN = 5
"""Duplicate ids and rows without text named in a message."""
NAMED = 1_000
"""Rows that cannot be sent remembered with their place and reason (a batch file's bad lines
are each named, as OpenAI's validation does, up to this many)."""
INDEX_BATCH_ROWS = 8_192


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
    only: Selection | None = None,
) -> Iterator[pa.RecordBatch]:
    """The entries of every row of ``files`` (or of the rows ``only`` names), in batches."""
    if only is None:
        for rows in scan_rows(files, id_column, columns):
            yield _entries(rows, rules)
        return
    numbers = {file: number for number, file in enumerate(files)}
    for records in RecordReader(files, id_column, columns, only=only, batch_rows=INDEX_BATCH_ROWS):
        rows = [(numbers[r.file], r.offset, r.line, r.id, r.values) for r in records]
        yield _entries(rows, rules)


def whole_check(files: list[Path], index: Path) -> InputCheck:
    """What the whole input holds, asked of its index: rows, rows that cannot be sent (the
    first few named), the models rows name, the ids it holds more than once (counted, the
    first few located: a group-by of the index's ids)."""
    source = f"read_parquet({listing([index])})"
    models = "list(DISTINCT model) FILTER (WHERE model IS NOT NULL)"
    first = f"SELECT file, line, problem FROM {source} WHERE problem IS NOT NULL"
    repeated = f"SELECT id, count(*) - 1 AS extra FROM {source} GROUP BY id HAVING count(*) > 1"
    shown = f"SELECT id FROM repeated ORDER BY id LIMIT {SHOWN}"
    places = f"SELECT id, file, line FROM {source} WHERE id IN ({shown}) ORDER BY id, file, line"
    with Queries(index) as queries:
        rows, unsendable, named = queries.fetch(
            f"SELECT count(*), count(problem), {models} FROM {source}"
        )[0]
        bad = queries.fetch(f"{first} ORDER BY file, line LIMIT {NAMED}")
        queries.execute(f"CREATE TEMP TABLE repeated AS {repeated}")
        extra = queries.fetch("SELECT coalesce(sum(extra), 0) FROM repeated")[0][0]
        located = queries.fetch(places)
    duplicates: dict[str, list[str]] = {}
    for id_, file, line in located:
        duplicates.setdefault(id_, []).append(location(files[file], line))
    return InputCheck(
        files,
        rows=int(rows),
        duplicates=duplicates,
        duplicate_count=int(extra),
        unsendable=int(unsendable),
        unsendable_at=[f"{location(files[file], line)} ({reason})" for file, line, reason in bad],
        models=sorted(named or []),
    )


def _entries(rows: list[InputRow], rules: RowRules) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([row[3] for row in rows], pa.string()),
            pa.array([rules.request_hash(row[4]) for row in rows], pa.int64()),
            pa.array([shard_key(row[3]) for row in rows], pa.uint32()),
            pa.array([row[0] for row in rows], pa.int32()),
            pa.array([row[1] for row in rows], pa.int64()),
            pa.array([row[2] for row in rows], pa.int64()),
            pa.array([rules.problem(row[4]) for row in rows], pa.string()),
            pa.array([rules.model_of(row[4]) for row in rows], pa.string()),
        ],
        schema=INDEX_SCHEMA,
    )


def duplicate_lines(check: InputCheck) -> list[str]:
    """What to tell the user about duplicate ids: how many, the first few and where."""
    lines = [f"duplicate ids: {check.duplicate_count} rows repeat an earlier id, e.g.:"]
    lines += [f"  {id_!r} at {', '.join(places)}" for id_, places in check.duplicates.items()]
    lines.append("make every id unique: each row's answer is stored under its id")
    return lines


def bad_lines(job: Job, check: InputCheck) -> list[str]:
    """What to say of a batch file's lines that cannot be sent: each one, with its reason."""
    lines = [f"{job.spec.input.path}: {check.unsendable} lines cannot be sent:"]
    lines += [f"  {where}" for where in check.unsendable_at]
    if check.unsendable > len(check.unsendable_at):
        lines.append(f"  ... and {check.unsendable - len(check.unsendable_at)} more")
    lines.append(
        'fix them and run again, or set [input].bad_lines = "fail-line" to write each as '
        "a failed row with its reason and run the rest"
    )
    return lines
