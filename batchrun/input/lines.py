"""The lines of JSONL files, found and hashed a block at a time with numpy and polars (no
Python loop over the lines): where each line starts, its number, and two 64-bit hashes of its
bytes (128 bits together: two different lines are never taken for one).

The hashes let ``input.build`` reuse an earlier index's entries for the lines it holds (a
corpus grew overnight): ten million lines are found and hashed in a few seconds, where
parsing them and hashing their requests took about 100.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa

BLOCK_BYTES = 1 << 22
"""Bytes of a file read at once (4 MB: larger blocks are no faster and stay resident)."""
LINES_SCHEMA = pa.schema(
    [
        ("file", pa.int32()),
        ("offset", pa.int64()),
        ("line", pa.int64()),
        ("line_hash", pa.uint64()),
        ("line_check", pa.uint64()),
    ]
)
HASHER = f"polars {version('polars')} hash(seed=0, 1)"
"""The line hash function, named: an index made by another is not reused."""
NEWLINE = 10


def file_lines(number: int, file: Path) -> Iterator[pa.RecordBatch]:
    """The non-empty lines of JSONL file ``number``, a block at a time."""
    with file.open("rb") as source:
        start, counted, tail = 0, 0, b""
        while True:
            block = source.read(BLOCK_BYTES)
            data = tail + block
            if not data:
                return
            ends = np.flatnonzero(np.frombuffer(data, np.uint8) == NEWLINE)
            if not block:  # the last line, without a newline
                ends = np.append(ends, len(data))
            if len(ends):
                yield _lines(number, data, ends, start, counted)
                used = int(ends[-1]) + 1
                start, counted, tail = start + used, counted + len(ends), data[used:]
            else:
                tail = data
            if not block:
                return


def _lines(number: int, data: bytes, ends: np.ndarray, start: int, counted: int) -> pa.RecordBatch:
    """The lines of a block that end at ``ends`` (a line's bytes include its newline: the
    block's buffer is hashed in place); blank ones (a newline alone) left out."""
    import polars as pl  # loaded when lines are hashed: a resume does not load it

    bounds = np.minimum(np.concatenate([[0], ends + 1]), len(data)).astype(np.int64)
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(bounds), pa.py_buffer(data)]
    )
    series = pl.Series(lines)
    lengths = np.diff(bounds)
    first = np.frombuffer(data, np.uint8)[np.minimum(bounds[:-1], len(data) - 1)]
    keep = (lengths > 1) | ((lengths == 1) & (first != NEWLINE))
    batch = pa.record_batch(
        [
            pa.array(np.full(len(ends), number, np.int32)),
            pa.array(bounds[:-1] + start),
            pa.array(np.arange(counted + 1, counted + len(ends) + 1, dtype=np.int64)),
            series.hash(seed=0).to_arrow(),
            series.hash(seed=1).to_arrow(),
        ],
        schema=LINES_SCHEMA,
    )
    return batch.filter(pa.array(keep))
