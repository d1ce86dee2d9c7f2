"""What a run has to do: the input index (``batchrun.input.index``) diffed against the output.

Every input row is **new** (its id is not in the output), **changed** (its id is, answered for
another request: an edited text, a job redone with ``--redo``) or **unchanged** (its id and
request hash are there); ids in the output but no longer in the input are **removed**. New and
changed rows are sent; with ``--retry-failed`` unchanged rows that only failed are sent again.
Rows written before request hashes existed (null hash) count as unchanged for their ids,
until ``--redo``.

It is one query (``output.done``): the index left-joined on the id with each id's winning
row in the output (its request hash and status), the rows to send streamed back in file
order; with ``reuse``, whether the output already answered each one's request (under any id:
a semi-join on the request hash). DuckDB runs it under a memory limit; only the rows left to
do are listed (at most ``limit``), on disk (``input.selection.TodoList``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.input.selection import TodoList
from batchrun.job.shards import Shard
from batchrun.output.catalogue import Catalogue
from batchrun.output.done import Engine, counts
from batchrun.output.query import listing
from batchrun.tasks.hashing import SortedHashes


@dataclass
class Changes:
    """How the input stands against the output, and which rows to send."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int | None = None
    """Output ids no longer in the input (None for a shard: it sees part of the input)."""
    retried: int = 0
    legacy: int = 0
    """Output rows without a request hash (written before batchrun recorded them)."""
    todo: TodoList = field(default_factory=TodoList)
    """The rows to send, listed on disk."""
    reusable: SortedHashes = field(default_factory=SortedHashes)
    """Request hashes of rows to do that the output already answered under another id."""

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.todo.close()

    @property
    def todo_count(self) -> int:
        return self.todo.total

    @property
    def total(self) -> int:
        return self.new + self.changed + self.unchanged

    def summary(self) -> str:
        """``300 rows: 5 new, 10 changed, 285 unchanged, 3 in the output but no longer in the
        input``."""
        text = (
            f"{self.total} rows: {self.new} new, {self.changed} changed, {self.unchanged} unchanged"
        )
        if self.removed:
            text += (
                f", {self.removed} in the output but no longer in the input (--prune removes them)"
            )
        if self.retried:
            text += f"; {self.retried} failed rows sent again"
        return text


def diff(
    index: Path,
    output: Path,
    *,
    retry_failed: bool = False,
    shard: Shard | None = None,
    limit: int | None = None,
    reuse: bool = False,
    redo: bool = False,
) -> Changes:
    """Classify every input row of ``index`` against ``output``; list the rows to do (and
    with ``reuse``, the requests among them the output already answered)."""
    changes = Changes(todo=TodoList(index.parent))
    with Engine(Catalogue.load(output)) as engine:
        inputs = f"SELECT * FROM read_parquet({listing([index])})"
        if shard is not None:
            inputs += f" WHERE {shard.holds_sql('shard_key')}"
        reuse = reuse and bool(engine.catalogue.parts)
        reusable: list[np.ndarray] = []
        for batch in engine.stream(_query(engine, inputs, retry_failed, redo, reuse)):
            _take(batch, changes, limit, reusable if reuse else None)
        rows = engine.fetch(f"SELECT count(*) FROM ({inputs})")[0][0]
        changes.unchanged = int(rows) - changes.new - changes.changed
        changes.legacy = _legacy(engine, inputs)
        if shard is None:
            ok, failed = counts(engine)
            changes.removed = max(ok + failed - changes.changed - changes.unchanged, 0)
    if reusable:
        changes.reusable = SortedHashes(np.concatenate(reusable))
    return changes


def _query(engine: Engine, inputs: str, retry_failed: bool, redo: bool, reuse: bool) -> str:
    """The rows to send, in file order: new, changed (a row without a request hash is not,
    unless ``redo``), and with ``retry_failed`` the unchanged ones that failed."""
    answered = f"SELECT request_hash FROM ({engine.scan()}) WHERE ok"
    reusable = f"request_hash IN ({answered})" if reuse else "false"
    kept = "NOT same AND NOT legacy" if not redo else "NOT same"
    retried = "same AND NOT ok" if retry_failed else "false"
    return f"""
        WITH joined AS (
            SELECT i.file, i."offset", i.line, i.id, i.request_hash, d.id IS NOT NULL AS present,
                coalesce(d.request_hash = i.request_hash, false) AS same,
                d.id IS NOT NULL AND d.request_hash IS NULL AS legacy, coalesce(d.ok, false) AS ok
            FROM ({inputs}) i LEFT JOIN ({engine.done()}) d ON i.id = d.id)
        SELECT file, "offset", line, id, request_hash, present, {retried} AS retried,
            {reusable} AS reusable
        FROM joined WHERE ({kept}) OR ({retried}) ORDER BY file, "offset"
    """


def _take(
    batch: pa.RecordBatch, changes: Changes, limit: int | None, reusable: list[np.ndarray] | None
) -> None:
    """Count a batch of rows to send by kind, list them (up to ``limit``)."""
    present, retried = pc.sum(batch["present"]).as_py() or 0, pc.sum(batch["retried"]).as_py() or 0
    changes.new += batch.num_rows - present
    changes.changed += present - retried
    changes.retried += retried
    if reusable is not None:
        found = pc.filter(batch["request_hash"], batch["reusable"]).to_numpy()
        reusable.append(found)
    room = batch.num_rows if limit is None else max(limit - changes.todo_count, 0)
    todo = batch.slice(0, room)
    for number in pc.unique(todo["file"]).to_pylist():
        rows = todo.filter(pc.equal(todo["file"], number))
        changes.todo.add(int(number), rows["offset"], rows["line"], rows["id"])


def _legacy(engine: Engine, inputs: str) -> int:
    """Input rows whose output row has no request hash (written before batchrun kept it)."""
    legacy = f"SELECT id FROM ({engine.done()}) WHERE request_hash IS NULL"
    if not engine.fetch(f"SELECT count(*) FROM ({legacy})")[0][0]:
        return 0
    sql = f"SELECT count(*) FROM ({inputs}) i WHERE i.id IN ({legacy})"
    return int(engine.fetch(sql)[0][0])
