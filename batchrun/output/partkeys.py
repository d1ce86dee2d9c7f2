"""Each part's own keys, in a file beside it (``_keys-<token>.arrows``: ``output.keyruns``
format), labelled with the part as it was written, whether an id had several rows in it,
and how many keys it holds. ``output.keys`` merges them into the saved keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from batchrun.hashing import HASHER, id_hashes
from batchrun.output.keyruns import (
    EMPTY,
    MERGE_FAN_IN,
    NO_IDS,
    KeysCollector,
    keys_of,
    read_run,
    run_metadata,
    winners,
    write_run,
)
from batchrun.output.layout import OutputLayout
from batchrun.output.parts import read_batches
from batchrun.output.rows import REQUEST_HASH

KEYS_FORMAT = 3
"""2: parts are signed with their inode too; 3: the saved keys in sorted batches, merged from
the parts' own keys files."""
RESAVE_ROWS = 100_000
"""Keys in parts' own files that make a run rewrite the saved keys (fewer are read beside
them: a run that adds a few rows does not rewrite ten million keys)."""
Signature = list[Any]
"""``[name, size, mtime_ns, inode]`` of a part."""
_PART_COLUMNS = pa.schema([("id", pa.string()), REQUEST_HASH, ("status", pa.string())])
_IDS = pa.schema([("id", pa.string())])


def save_part_keys(
    layout: OutputLayout, part: Path, written: os.stat_result, keys: KeysCollector
) -> None:
    """Write a freshly sealed part's keys beside it, signed with the part as written (a
    rewrite by another shard's compaction meanwhile then makes them stale, never wrong)."""
    signature = [part.name, written.st_size, written.st_mtime_ns, written.st_ino]
    found, repeated = keys.keys()
    write_run(layout.part_keys(part), found, run_label(signature, repeated, len(found)))


def run_label(signature: Signature, repeated: bool, rows: int) -> dict[str, Any]:
    """A part's keys are for this part as it is, by this hash function; ``repeated``: some
    id had several rows in the part (its keys hold the winner)."""
    return {
        "format": KEYS_FORMAT,
        "hasher": HASHER,
        "part": signature,
        "repeated": repeated,
        "rows": rows,
    }


def current_label(run: Path, signature: Signature) -> dict[str, Any] | None:
    """A part's keys file's label; None when it is stale or unreadable."""
    found = run_metadata(run)
    if found is None:
        return None
    repeated, rows = found.get("repeated"), found.get("rows")
    if not isinstance(repeated, bool) or not isinstance(rows, int):
        return None
    return found if found == run_label(signature, repeated, rows) else None


def few_keys(labels: list[dict[str, Any] | None]) -> bool:
    """Whether parts' keys files (all current) hold too few keys to rewrite the saved keys
    for them: they are read beside the saved keys until they add up to ``RESAVE_ROWS``."""
    if len(labels) > MERGE_FAN_IN or any(label is None for label in labels):
        return False
    rows: int = sum(label["rows"] for label in labels if label is not None)
    return rows < RESAVE_ROWS


def keys_file_of(layout: OutputLayout, part: Path, signature: Signature) -> tuple[Path, bool]:
    """A part's keys file and whether the part repeats an id; the file is written now from
    the part's rows when it has none (a part of an older batchrun, one a compaction
    rewrote, one sealed by a run killed meanwhile)."""
    run = layout.part_keys(part)
    if (label := current_label(run, signature)) is None:
        keys, repeated = read_part_keys(part)
        write_run(run, keys, run_label(signature, repeated, len(keys)))
        return run, repeated
    return run, bool(label["repeated"])


def part_keys(layout: OutputLayout, part: Path, signature: Signature) -> tuple[pl.DataFrame, bool]:
    """A part's keys and whether it repeats an id: from its keys file when it is current,
    else from its rows (nothing is written)."""
    run = layout.part_keys(part)
    if (label := current_label(run, signature)) is not None:
        frames = [frame.drop("age") for frame in read_run(run, 0)]
        return pl.concat([pl.DataFrame(schema=EMPTY), *frames]), bool(label["repeated"])
    return read_part_keys(part)


def read_part_keys(part: Path) -> tuple[pl.DataFrame, bool]:
    """A part's keys read from its rows, sorted, one entry per id; whether an id had
    several rows."""
    frames = [keys_of(batch) for batch in read_batches([part], _PART_COLUMNS)]
    return winners(pl.concat(frames) if frames else pl.DataFrame(schema=EMPTY))


def repeated_in(part: Path) -> pl.Series:
    """The hashes of the ids a part holds more than once."""
    hashes = [id_hashes(batch.column("id")) for batch in read_batches([part], _IDS)]
    every = pl.concat([NO_IDS, *hashes])
    return every.filter(every.is_duplicated()).unique()
