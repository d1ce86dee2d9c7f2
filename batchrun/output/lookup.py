"""Looking keys up: sorted ids against sorted keys, in memory (a polars join) or in place
in the saved keys' memory-mapped batches (numpy binary searches, nothing copied)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.output.keyruns import EMPTY


@dataclass(frozen=True)
class Found:
    """What the output holds for some ids: whether each is there, the request its row
    answered (null for a row written before request hashes; any value where ``present`` is
    false) and whether that row is ok."""

    present: pl.Series
    request: pl.Series
    ok: pl.Series


SAMPLE_STRIDE = 64
"""Every this many id hashes of a saved batch is kept in memory (1/64 of them: 32 kB a
batch); a search walks that sample, then 6 steps within 64 mapped hashes (half the time of
a search over the mapped batch: fewer cache misses)."""


class MappedKeys:
    """One batch of sorted keys looked up in place (a memory-mapped file's pages, never
    copied): binary searches on the id hash column as a numpy view."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch
        self.ids = _values(batch.column("id_hash"), np.uint64)
        self._requests = batch.column("request_hash")
        self._ok = batch.column("ok")

    def __len__(self) -> int:
        return int(self.batch.num_rows)

    def look_up(self, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For sorted ``needles``: present, request hash, whether it is known (not null),
        ok; the last three are false or zero where absent."""
        if not len(self):
            none = np.zeros(len(needles), bool)
            return none, np.zeros(len(needles), np.uint64), none, none
        at = self._last_not_above(needles)
        present = self.ids[at] == needles
        requests = np.where(present, _values(self._requests, np.uint64)[at], 0)
        known = present & _bits(self._requests.buffers()[0], self._requests.offset, at)
        ok = present & _bits(self._ok.buffers()[1], self._ok.offset, at)
        return present, requests, known, ok

    @functools.cached_property
    def _sample(self) -> np.ndarray:
        return self.ids[::SAMPLE_STRIDE].copy()

    def _last_not_above(self, needles: np.ndarray) -> np.ndarray:
        """For each needle, the last position whose id hash is not above it (0 if none):
        its block from the sample, then a binary search within the block."""
        block = np.maximum(np.searchsorted(self._sample, needles, side="right") - 1, 0)
        at = block * SAMPLE_STRIDE
        step = SAMPLE_STRIDE // 2
        while step:
            probe = np.minimum(at + step, len(self) - 1)
            at = np.where(self.ids[probe] <= needles, probe, at)
            step //= 2
        return at

    def ok_count(self) -> int:
        total: int | None = pc.sum(self._ok).as_py()
        return total or 0

    def ok_requests(self) -> np.ndarray:
        """The request hashes of the rows answered ok (signed, as the index holds them)."""
        answered = pc.filter(self._requests, self._ok).drop_null()
        return _values(answered, np.uint64).view(np.int64)


def _values(array: pa.Array, kind: type[np.generic]) -> np.ndarray:
    """The values buffer of a fixed-width Arrow array, as a numpy view."""
    width = np.dtype(kind).itemsize
    view = np.frombuffer(array.buffers()[1], dtype=kind, count=array.offset + len(array))
    assert view.itemsize == width
    return view[array.offset :]


def _bits(bitmap: pa.Buffer | None, offset: int, at: np.ndarray) -> np.ndarray:
    """Bits ``at`` of an Arrow bitmap (a missing validity bitmap: all set)."""
    if bitmap is None:
        return np.ones(len(at), bool)
    bits = np.frombuffer(bitmap, dtype=np.uint8)
    where = at + offset
    values: np.ndarray = ((bits[where >> 3] >> (where & 7).astype(np.uint8)) & 1).astype(bool)
    return values


def find_mapped(saved: list[MappedKeys], ids: pl.Series) -> Found:
    """Look sorted ``ids`` up in the saved batches: each batch is searched for the ids in its
    range, on the mapped pages."""
    if not saved:
        return find_in(pl.DataFrame(schema=EMPTY), ids)
    needles = ids.to_numpy()
    size = len(needles)
    present, ok, known = (np.zeros(size, bool) for _ in range(3))
    requests = np.zeros(size, np.uint64)
    starts = [int(np.searchsorted(needles, keys.ids[0])) for keys in saved[1:]]
    for keys, start, end in zip(saved, [0, *starts], [*starts, size], strict=True):
        if end > start:
            found = keys.look_up(needles[start:end])
            present[start:end], requests[start:end], known[start:end], ok[start:end] = found
    request = pl.select(pl.when(pl.Series(known)).then(pl.Series("request_hash", requests)))
    return Found(pl.Series(present), request.to_series(), pl.Series(ok))


def find_in(keys: pl.DataFrame, ids: pl.Series) -> Found:
    """Look sorted ``ids`` up in sorted ``keys``: a merge join."""
    if not ids.is_sorted():
        raise ValueError("OutputKeys.find takes sorted ids")
    needles = pl.DataFrame({"id_hash": ids}).with_columns(pl.col("id_hash").set_sorted())
    rows = needles.join(keys, on="id_hash", how="left")
    present = rows["ok"].is_not_null()
    return Found(present, rows["request_hash"], rows["ok"].fill_null(False))
