"""Part files of an output directory: written atomically (``output.atomic``, under a
dot-prefixed temporary name that readers skip), numbered, read with checks.

Each part carries its sequence number in its footer (``SEQUENCE_KEY``): parts sealed later
carry higher numbers, and compaction's "newest wins" reads them, never a clock. Pages are
written with checksums and read with verification; the footer, which no checksum covers, is
checked against the rows and its own copy of the schema (``check_part``: measured by changing
each byte of a part in turn). A damaged part is an error, never wrong rows.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrun.output.atomic import fsync_directory, written
from batchrun.output.layout import OutputLayout, temporary_of
from batchrun.output.query import listing

ROW_GROUP_ROWS = 8_192
ROW_GROUP_BYTES = 8 << 20
PART_BATCH_ROWS = 65_536
QUERIED = {"id": "VARCHAR", "status": "VARCHAR", "request_hash": "BIGINT"}
PARQUET_TYPES = {"VARCHAR": "BYTE_ARRAY", "BIGINT": "INT64"}
ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64()}
"""The columns DuckDB filters and joins on, and their types (DuckDB's, and Parquet's
underneath): what the footer says of them is checked."""
SEQUENCE_KEY = b"batchrun.sequence"
"""The footer key of a part's sequence number (parts of format 2 have none: number 0)."""


class DamagedPart(Exception):
    """A part whose footer or pages do not check; ``part`` names it."""

    def __init__(self, part: Path, reason: str) -> None:
        super().__init__(f"{part}: damaged ({reason})")
        self.part = part


def write_batches(
    part: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch], sequence: int
) -> int:
    """Write ``batches`` as ``part`` numbered ``sequence`` (nothing when they hold no row) a
    row group at a time, holding no more than one in memory; the part appears whole or not at
    all. The rows written."""
    count, group = 0, []
    flat = [field.name for field in schema if not pa.types.is_nested(field.type)]
    metadata = {**(schema.metadata or {}), SEQUENCE_KEY: str(sequence).encode()}
    with written(part, temporary_of(part)) as temporary:
        with pq.ParquetWriter(
            temporary, schema.with_metadata(metadata), compression="zstd", use_dictionary=flat,
            write_statistics=flat, write_page_checksum=True,
        ) as writer:  # fmt: skip
            # (vectors: no dictionary or min/max: each is a buffer the size of the group)
            for batch in batches:
                group.append(batch)
                count += batch.num_rows
                if sum(b.num_rows for b in group) >= _group_rows(group[0]):
                    writer.write_table(pa.Table.from_batches(group, schema=schema))
                    group = []
            if group:
                writer.write_table(pa.Table.from_batches(group, schema=schema))
        pa.default_memory_pool().release_unused()  # the row groups' buffers, back to the system
        if not count:
            temporary.unlink()
    return count


def _group_rows(batch: pa.RecordBatch) -> int:
    """Rows in a row group: about ``ROW_GROUP_BYTES`` of them (a row of a 1024-dimensional
    vector is 4 kB), between ``ROW_GROUP_ROWS / 8`` and ``ROW_GROUP_ROWS``."""
    size = batch.nbytes / max(batch.num_rows, 1)
    return int(min(max(ROW_GROUP_BYTES / max(size, 1), ROW_GROUP_ROWS / 8), ROW_GROUP_ROWS))


def open_part(part: Path) -> pq.ParquetFile:
    """A part for reading, its pages verified against their checksums; DamagedPart when its
    footer does not read."""
    try:
        return pq.ParquetFile(part, page_checksum_verification=True)
    except (OSError, pa.ArrowException, ValueError) as exc:  # (ValueError: a name's bytes)
        if isinstance(exc, FileNotFoundError):
            raise
        raise DamagedPart(part, _reason(exc)) from None


def part_batches(part: Path, batch_rows: int = PART_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Every column of a part, a batch at a time, verified; DamagedPart when it fails."""
    source = open_part(part)
    try:
        yield from source.iter_batches(batch_size=batch_rows)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DamagedPart(part, _reason(exc)) from None


def read_part(part: Path, **options: Any) -> pa.Table:
    """A part's rows (``columns``, ``filters``: as ``pq.read_table`` takes them), every page
    verified; DamagedPart when one fails."""
    try:
        return pq.read_table(part, page_checksum_verification=True, **options)
    except (OSError, pa.ArrowException, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DamagedPart(part, _reason(exc)) from None


def check_part(part: Path) -> None:
    """Read a part whole (a row group at a time), checking every page against its checksum
    and the footer, which no checksum covers, against its own copy of the schema and the
    rows: DamagedPart if anything disagrees."""
    source = open_part(part)
    try:
        _check_schema(source)
        footer = _as_duckdb_reads(part, [n for n in QUERIED if n in source.schema_arrow.names])
        for group in range(source.metadata.num_row_groups):
            _check_group(source.read_row_group(group), footer.get(group, []))
    except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
        raise DamagedPart(part, _reason(exc)) from None


def _check_schema(source: pq.ParquetFile) -> None:
    """The columns as the footer describes them, and the sequence number, against the copy
    of the Arrow schema the footer keeps (the types of ``_exact`` columns only)."""
    said = source.metadata.metadata or {}
    if b"ARROW:schema" not in said:  # (pyarrow has written it into every part batchrun wrote)
        raise ValueError("its footer has lost its copy of the schema")
    stored = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(said[b"ARROW:schema"])))
    if (stored.metadata or {}).get(SEQUENCE_KEY) != said.get(SEQUENCE_KEY):
        raise ValueError("its sequence number disagrees with its copy of the schema")
    for kept, read in zip(stored, source.schema_arrow, strict=True):
        if kept.name != read.name or (_exact(kept.type) and kept.type != read.type):
            raise ValueError(f"its footer says {read} where its copy of the schema says {kept}")


def _exact(kind: pa.DataType) -> bool:
    """Whether a column of this type reads back as exactly this type (nested, time and
    dictionary columns may come back in another unit or encoding: their names are checked)."""
    plain = (pa.types.is_string, pa.types.is_binary, pa.types.is_integer, pa.types.is_floating)
    return any(is_kind(kind) for is_kind in (*plain, pa.types.is_boolean, pa.types.is_decimal))


def _as_duckdb_reads(part: Path, queried: list[str]) -> dict[int, list[tuple[Any, ...]]]:
    """What the footer says of the ``QUERIED`` columns, by row group: (name, type, rows,
    nulls, min, max), as DuckDB reads it; and every value of those columns read by DuckDB
    (its reader is not pyarrow's: a page header one takes, the other may refuse). (pyarrow
    aborts the process on some damaged footers: a column chunk's metadata that does not
    parse throws where Python cannot catch it.)"""
    import duckdb

    footer_sql = (
        "SELECT row_group_id, path_in_schema, type, row_group_num_rows, stats_null_count, "
        "stats_min_value, stats_max_value FROM parquet_metadata($part) "
        "WHERE path_in_schema IN $queried"
    )
    columns = ", ".join(f'"{name}"' for name in queried)
    try:
        with _duckdb().cursor() as con:
            found = con.execute(footer_sql, {"part": str(part), "queried": queried}).fetchall()
            types = f"DESCRIBE SELECT {columns} FROM read_parquet({listing([part])})"
            seen = {row[0]: row[1] for row in con.execute(types).fetchall()}  # (top level only)
            every = f"SELECT sum(hash({columns})) FROM read_parquet($part)"
            con.execute(every, {"part": str(part)}).fetchall()
    except duckdb.Error as exc:
        raise ValueError(str(exc)) from None
    if wrong := [
        f"{name} as {seen.get(name)}" for name in queried if seen.get(name) != QUERIED[name]
    ]:
        raise ValueError(f"DuckDB reads its {', '.join(wrong)}")
    footer: dict[int, list[tuple[Any, ...]]] = {}
    for group, *chunk in found:
        footer.setdefault(group, []).append(tuple(chunk))
    return footer


@functools.cache
def _duckdb() -> Any:
    """One DuckDB connection for the checks of this process (each takes a cursor of its own:
    a connection takes 15 ms to open, more than checking a small part)."""
    import duckdb

    return duckdb.connect(config={"memory_limit": "64MB", "threads": 1})  # (a scan, no join)


def _check_group(rows: pa.Table, footer: list[tuple[Any, ...]]) -> None:
    """A row group's rows and the values of the ``QUERIED`` columns (DuckDB filters by their
    statistics) against what the footer says of them."""
    for name, kind, count, nulls, low, high in footer:
        if kind != PARQUET_TYPES[QUERIED[name]] or count != rows.num_rows:
            raise ValueError(f"the footer says {count} rows of {kind} in {name}")
        values = rows.column(name).cast(ARROW_TYPES[QUERIED[name]])
        least, most = (str(v) if v.is_valid else None for v in pc.min_max(values).values())
        # (a figure the footer lacks is not compared: pyarrow writes no min or max over 4 kB)
        said = [(nulls, values.null_count), (low, least), (high, most)]
        if any(footer not in (None, value) for footer, value in said):
            raise ValueError(f"the statistics of {name} disagree with its values")


def sequence_of(part: Path) -> int:
    """A part's sequence number, from its footer; DamagedPart when it does not read."""
    said = open_part(part).metadata.metadata or {}  # (the footer's own, not its schema's copy)
    number = said.get(SEQUENCE_KEY, b"0")
    return int(number) if number.isdigit() else 0


def move_aside(part: Path) -> Path:
    """Move a damaged part aside (``OutputLayout.damaged``): readers no longer see it."""
    aside = OutputLayout(part.parent).damaged(part)
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, aside)
    fsync_directory(part.parent)
    return aside


def _reason(exc: BaseException) -> str:
    """The first line of an Arrow error, without its C++ source location."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^/\S+:\d+\s*", "", text)
