"""Parquet input files opened and read with their damage said: a file whose footer cannot be
read, or a page that fails (its checksum, when it was written with one, is verified), is a
``JobError`` naming the file, never rows read wrong or a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.errors import JobError


def open_parquet(file: Path) -> pq.ParquetFile:
    try:
        # Pages written with a checksum (parquet-mr's default) are checked: a damaged page
        # is an error, not rows read wrong.
        return pq.ParquetFile(file, page_checksum_verification=True)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise JobError(f"{file}: not a readable Parquet file ({exc})") from None


def parquet_batches(
    parquet: pq.ParquetFile, file: Path, batch_rows: int, columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """The file's batches; a damaged page (its footer read well) is a JobError naming the
    file and the rows read before it."""
    batches, read = parquet.iter_batches(batch_size=batch_rows, columns=columns), 0
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:  # a bad page: ArrowInvalid, OSError, ...
            raise JobError(
                f"{file}: damaged Parquet data after row {read} ({exc}); "
                "write the file again from its source"
            ) from None
        if batch is None:
            return
        read += batch.num_rows
        yield batch
