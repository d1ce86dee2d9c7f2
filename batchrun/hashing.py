"""64-bit hashes of ids, and membership in a sorted column of them: how the input index, the
diff and pruning compare ids without holding Python strings (a 10-million-row output is 80 MB
of hashes, not 600 MB of ``str``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

HASHER = f"polars {pl.__version__} hash(seed=0)"
"""The id hash function, named so that an index made by another one is made again."""


def id_hashes(ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> pl.Series:
    """The 64-bit hashes of ids: one function for the input side and the output side."""
    return pl.Series("id_hash", ids, dtype=pl.String).hash(seed=0)


def member(values: pl.Series, ordered: pl.Series) -> pl.Series:
    """Whether each value is in ``ordered`` (sorted): a vectorised binary search. The values
    are searched in sorted order (ten times faster on a big ``ordered``: the searches walk
    it once, cache-friendly) and the answers put back in the values' order."""
    if ordered.is_empty() or values.is_empty():
        return pl.Series([False] * len(values), dtype=pl.Boolean)
    order = values.arg_sort()
    needles = values.gather(order)
    found = ordered.search_sorted(needles).clip(0, len(ordered) - 1)
    hits = ordered.gather(found) == needles
    return hits.gather(order.arg_sort())


SEARCHED_UNSORTED = 65_536
"""The most hashes ``among`` searches for values in their own order (512 kB: in the cache)."""


class SortedHashes:
    """A set of 64-bit request hashes (signed, as rows carry them) held as one sorted array:
    8 bytes each, where a Python ``set`` of ints takes about 60."""

    def __init__(self, values: np.ndarray | None = None) -> None:
        self._values = np.unique(np.asarray(values if values is not None else [], np.int64))

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int) or not len(self._values):
            return False
        at = int(np.searchsorted(self._values, value))
        return at < len(self._values) and int(self._values[at]) == value

    def __len__(self) -> int:
        return len(self._values)


def among(values: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Those of ``values`` that ``ordered`` (sorted) holds. Values searched in a big
    ``ordered`` are sorted first (their searches then walk it once, cache-friendly)."""
    if not len(ordered):
        return values[:0]
    if len(ordered) > SEARCHED_UNSORTED:
        values = np.sort(values)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    found: np.ndarray = values[ordered[at] == values]
    return found
