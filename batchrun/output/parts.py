"""Part files of an output directory: written atomically, listed, read by column.

A part appears whole or not at all: it is written under a dot-prefixed temporary name,
fsynced, renamed into place, and the directory is fsynced. Readers skip dot files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.output.layout import OutputLayout, temporary_of

READ_TRIES = 3
ROW_GROUP_ROWS = 8_192
ROW_GROUP_BYTES = 8 << 20
BATCH_ROWS = 65_536


def write_part(part: Path, table: pa.Table) -> None:
    """Write ``table`` so that ``part`` appears whole or not at all."""
    write_batches(part, table.schema, table.to_batches())


def write_batches(
    part: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> os.stat_result | None:
    """Write ``batches`` as ``part`` (nothing when they hold no row) a row group at a time,
    holding no more than one in memory; the part appears whole or not at all. Its stat, as
    written (None: no row)."""
    temporary, written, group = temporary_of(part), 0, []
    flat = [field.name for field in schema if not pa.types.is_nested(field.type)]
    with pq.ParquetWriter(
        temporary, schema, compression="zstd", use_dictionary=flat, write_statistics=flat
    ) as writer:  # vectors: no dictionary or min/max (each is a buffer the size of the group)
        for batch in batches:
            group.append(batch)
            if sum(b.num_rows for b in group) >= _group_rows(group[0]):
                writer.write_table(pa.Table.from_batches(group, schema=schema))
                written, group = written + sum(b.num_rows for b in group), []
        if group:
            writer.write_table(pa.Table.from_batches(group, schema=schema))
            written += sum(b.num_rows for b in group)
    pa.default_memory_pool().release_unused()  # the row groups' buffers, back to the system
    if not written:
        temporary.unlink()
        return None
    with open(temporary, "rb") as sink:
        os.fsync(sink.fileno())
        stat = os.fstat(sink.fileno())
    os.replace(temporary, part)
    fsync_directory(part.parent)
    return stat


def _group_rows(batch: pa.RecordBatch) -> int:
    """Rows in a row group: about ``ROW_GROUP_BYTES`` of them (a row of a 1024-dimensional
    vector is 4 kB), between ``ROW_GROUP_ROWS / 8`` and ``ROW_GROUP_ROWS``."""
    size = batch.nbytes / max(batch.num_rows, 1)
    return int(min(max(ROW_GROUP_BYTES / max(size, 1), ROW_GROUP_ROWS / 8), ROW_GROUP_ROWS))


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_files(path: Path) -> list[Path]:
    """The finished parts of an output directory."""
    return OutputLayout(path).parts()


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    """``columns`` of every finished part (an empty table when there is none). A part that
    another shard's compaction replaced while we listed them is read again from a new list."""
    for _ in range(READ_TRIES - 1):
        try:
            return _read_parts(part_files(path), columns)
        except FileNotFoundError:
            continue
    return _read_parts(part_files(path), columns)


def _read_parts(parts: list[Path], columns: list[str]) -> pa.Table:
    if not parts:
        return pa.table({name: pa.array([], pa.string()) for name in columns})
    import pyarrow.dataset as ds  # loaded when used: 17 MB that a run does without

    return ds.dataset([str(p) for p in parts], format="parquet").to_table(columns=columns)


def read_batches(parts: list[Path], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``schema``'s columns of ``parts``, a row group at a time (memory bounded by a row
    group, not by the output); a column a part lacks (written by an older batchrun) is null."""
    for part in parts:
        reader = pq.ParquetFile(part)
        present = [name for name in schema.names if name in reader.schema_arrow.names]
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=present):
            columns = [
                batch.column(name) if name in present else pa.nulls(batch.num_rows, kind)
                for name, kind in zip(schema.names, schema.types, strict=True)
            ]
            yield pa.record_batch(columns, schema=schema)


def whole_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The whole batches of an Arrow IPC stream a run appends to (a journal, a trace); a
    batch torn by a kill ends the reading."""
    try:
        reader = pa.ipc.open_stream(pa.OSFile(str(path)))  # read, not mapped: flat RSS
    except (pa.ArrowInvalid, OSError):
        return
    while True:
        try:
            yield reader.read_next_batch()
        except (StopIteration, pa.ArrowInvalid, OSError):
            return
