"""Part files of an output directory: written atomically, listed, read by column.

A part appears whole or not at all: it is written under a dot-prefixed temporary name,
fsynced, renamed into place, and the directory is fsynced. Readers skip dot files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batchrun.output.layout import OutputLayout, temporary_of

READ_TRIES = 3


def write_part(part: Path, table: pa.Table) -> None:
    """Write ``table`` so that ``part`` appears whole or not at all."""
    temporary = temporary_of(part)
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, part)
    fsync_directory(part.parent)


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
    return ds.dataset([str(p) for p in parts], format="parquet").to_table(columns=columns)


def done_ids(path: Path, include_failed: bool = True) -> set[str]:
    """The ids the output already answers (failed ones too, unless ``include_failed`` is off:
    ``--retry-failed`` sends those again)."""
    table = read_columns(path, ["id", "status"])
    if not include_failed:
        table = table.filter(pc.equal(table.column("status"), "ok"))
    return set(table.column("id").to_pylist())


def output_counts(path: Path) -> dict[str, int]:
    """Ids answered ok, and ids only failed, in the whole output (every shard's parts)."""
    table = read_columns(path, ["id", "status"])
    ok = table.filter(pc.equal(table.column("status"), "ok")).column("id")
    ids = pc.count_distinct(table.column("id")).as_py()
    ok_ids = pc.count_distinct(ok).as_py()
    return {"ok": ok_ids, "failed": ids - ok_ids}
