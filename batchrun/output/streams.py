"""The Arrow IPC streams a run appends to (the journal, the trace), checked when read.

The format checks nothing of its own: each batch is appended with a CRC-32 of its content and
its columns' names and types in its custom metadata (``append_checked``), and read back
validated and checked (``whole_batches``), so that a changed byte is never read as a row.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from batchrun.errors import warn

CRC_KEY = b"batchrun.crc32"
"""The custom metadata key of a batch's checksum."""


def append_checked(stream: pa.ipc.RecordBatchStreamWriter, table: pa.Table) -> None:
    """Append ``table`` to an Arrow IPC stream, each batch with the CRC-32 of its content
    (``whole_batches`` checks it: the format itself checks nothing)."""
    for batch in table.to_batches():
        stream.write_batch(batch, custom_metadata={CRC_KEY: str(_crc(batch)).encode()})


def whole_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The whole batches of an Arrow IPC stream a run appends to (a journal, a trace): a
    batch torn by a kill ends the reading, and so does one that is not valid or does not
    match its checksum (with a warning: what follows is read again from the input, never
    trusted)."""
    try:
        reader = pa.ipc.open_stream(pa.OSFile(str(path)))  # read, not mapped: flat RSS
    except (pa.ArrowException, OSError, ValueError):  # (ValueError: a damaged schema's text)
        return
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except (StopIteration, pa.ArrowException, OSError, ValueError):
            return
        if not _checked(batch, metadata):
            reason = "a batch is not valid or does not match its checksum"
            warn(f"{path}: damaged ({reason}); the rest is not read")
            return
        yield batch


def _checked(batch: pa.RecordBatch, metadata: pa.KeyValueMetadata | None) -> bool:
    """Whether a batch read back is valid and matches its checksum (one written before
    batchrun kept them has none: it is only validated)."""
    try:
        batch.validate(full=True)  # (before serialize: a damaged offset aborts the process)
    except pa.ArrowInvalid:
        return False
    crc = (metadata or {}).get(CRC_KEY)
    return crc is None or crc == str(_crc(batch)).encode()


def _crc(batch: pa.RecordBatch) -> int:
    """The CRC-32 of a batch's columns (names and types too), as the IPC format writes them
    uncompressed."""
    columns = zlib.crc32(batch.schema.remove_metadata().serialize())
    return zlib.crc32(batch.serialize(), columns)
