"""A set of 64-bit request hashes held as one sorted array: how a run knows which answers it
may copy rather than pay for again, in 8 bytes a hash."""

from __future__ import annotations

import numpy as np


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
