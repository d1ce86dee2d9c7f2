"""What a run has to do: the input index (``batchrun.input.index``) diffed against the output.

Every input row is **new** (its id is not in the output), **changed** (its id is, answered for
another request: an edited text, a job redone with ``--redo``) or **unchanged** (its id and
request hash are there); ids in the output but no longer in the input are **removed**. New and
changed rows are sent; with ``--retry-failed`` unchanged rows that only failed are sent again.
Rows written before request hashes existed (null hash) count as unchanged for their ids,
until ``--redo``.

Memory stays flat: the output is read as its keys (``batchrun.output.keys``: 64-bit id hashes
sorted, with their request hashes), each frame of the index is sorted by id hash and looked up
in them with one binary search; only the rows left to do are listed (at most ``limit``), on
disk (``input.selection.TodoList``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from batchrun.hashing import SortedHashes, member
from batchrun.input.selection import TodoList
from batchrun.output.keys import OutputKeys
from batchrun.output.lookup import Found
from batchrun.shards import Shard

INDEX_FRAME_ROWS = 131_072
"""Index rows looked up at once (4.7 MB of index): fewer, bigger frames are faster (each
costs a few polars calls) and hold more (over ten million done rows: 2.6 s and 366 MB with
65,536; 2.0 s and 405 MB with 262,144)."""

REUSE_CHECK_HASHES = 2_097_152
"""Request hashes of rows to do checked against the output's answers at once (16 MB): each
check reads the saved keys' ok request hashes once, a batch at a time."""


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
    keys = OutputKeys.load(output)
    reusable = ReusableAnswers(keys) if reuse and not keys.is_empty else None
    changes = Changes(todo=TodoList(index.parent))
    for batch in _index_batches(index):
        if shard is not None:
            batch = batch.filter(shard.holds_keys(batch["shard_key"]))
        order = batch["id_hash"].arg_sort()
        found = keys.find(batch["id_hash"].gather(order).set_sorted())
        send = _classify(batch["request_hash"].gather(order), found, changes, retry_failed, redo)
        todo = batch[order.filter(send).sort()]  # in file order
        if limit is not None:
            todo = todo.head(max(limit - changes.todo_count, 0))
        for (number,), rows in todo.group_by(["file"], maintain_order=True):
            changes.todo.add(int(number), rows["offset"].to_arrow(), rows["line"].to_arrow())
        if reusable is not None:
            reusable.add(todo["request_hash"].to_numpy())
    if reusable is not None:
        changes.reusable = reusable.found()
    if shard is None:
        ok, failed = keys.counts()
        changes.removed = max(ok + failed - changes.changed - changes.unchanged, 0)
    return changes


class ReusableAnswers:
    """Which rows to do make requests the output already answered (under other ids): their
    request hashes checked against the output's answers a few million at a time."""

    def __init__(self, keys: OutputKeys) -> None:
        self._keys = keys
        self._waiting: list[np.ndarray] = []
        self._found: list[np.ndarray] = []

    def add(self, requests: np.ndarray) -> None:
        self._waiting.append(requests)
        if sum(map(len, self._waiting)) >= REUSE_CHECK_HASHES:
            self._check()

    def found(self) -> SortedHashes:
        self._check()
        return SortedHashes(np.concatenate(self._found) if self._found else None)

    def _check(self) -> None:
        if self._waiting:
            requests = np.unique(np.concatenate(self._waiting))
            self._found.append(self._keys.answered(requests))
            self._waiting = []


def _classify(
    requests: pl.Series, found: Found, changes: Changes, retry_failed: bool, redo: bool
) -> pl.Series:
    """Count rows by kind; the mask of the rows to send. Rows without a request hash are
    unchanged for their ids, unless ``redo``."""
    same = found.present & (found.request == requests.reinterpret(signed=False)).fill_null(False)
    legacy = found.present & found.request.is_null()
    unchanged = same if redo else same | legacy
    changes.new += int((~found.present).sum())
    changes.changed += int((found.present & ~unchanged).sum())
    changes.unchanged += int(unchanged.sum())
    changes.legacy += int(legacy.sum())
    retried = same & ~found.ok if retry_failed else pl.repeat(False, len(requests), eager=True)
    changes.retried += int(retried.sum())
    return ~unchanged | retried


def _index_batches(index: Path) -> Iterator[pl.DataFrame]:
    """The index in frames of about ``INDEX_FRAME_ROWS`` rows (few, cheap lookups); Arrow's
    buffers of a frame are given back before the next is read."""
    with pa.OSFile(str(index)) as source, pa.ipc.open_file(source) as reader:
        batches: list[pa.RecordBatch] = []
        for number in range(reader.num_record_batches):
            batches.append(reader.get_batch(number))
            if sum(batch.num_rows for batch in batches) >= INDEX_FRAME_ROWS:
                yield _frame(batches)
                batches = []
                pa.default_memory_pool().release_unused()
        if batches:
            yield _frame(batches)


def _frame(batches: list[pa.RecordBatch]) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_batches(batches).combine_chunks())
    assert isinstance(frame, pl.DataFrame)
    return frame


def index_ids(index: Path) -> Callable[[pl.Series], pl.Series]:
    """Which of some ids' hashes the input holds (for ``--prune``)."""
    ordered = pl.concat([batch["id_hash"] for batch in _index_batches(index)]).sort()
    return lambda hashes: member(hashes, ordered)
