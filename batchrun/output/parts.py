"""Part files of an output directory: written atomically (``output.atomic``, under a
dot-prefixed temporary name that readers skip), numbered, read with checks.

Each part carries its sequence number in its footer (``SEQUENCE_KEY``): parts sealed later
carry higher numbers, and compaction's "newest wins" reads them, never a clock. Pages are
written with checksums and read with verification: a damaged part is an error, never wrong rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.output.atomic import fsync_directory, written
from batchrun.output.layout import OutputLayout, temporary_of

ROW_GROUP_ROWS = 8_192
ROW_GROUP_BYTES = 8 << 20
PART_BATCH_ROWS = 65_536
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
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DamagedPart(part, _reason(exc)) from None


def part_batches(part: Path, batch_rows: int = PART_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Every column of a part, a batch at a time, verified; DamagedPart when it fails."""
    source = open_part(part)
    try:
        yield from source.iter_batches(batch_size=batch_rows)
    except (OSError, pa.ArrowException) as exc:
        raise DamagedPart(part, _reason(exc)) from None


def check_part(part: Path) -> None:
    """Read a part whole (a batch at a time), checking every page: DamagedPart if it fails."""
    for _ in part_batches(part):
        pass


def sequence_of(part: Path) -> int:
    """A part's sequence number, from its footer; DamagedPart when it does not read."""
    metadata = open_part(part).schema_arrow.metadata or {}
    number = metadata.get(SEQUENCE_KEY, b"0")
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
