"""The output's keys: for each id, its 64-bit hash, the request hash its row answered and
whether that row is ok, sorted by id hash. The diff, compaction and the counts look ids up in
them instead of reading id strings from the parts.

A finished run saves the keys in ``_keys.arrows`` (Arrow IPC, memory-mapped when read), with
the parts they cover (name, size, mtime) and the id hash function. Parts written since are
read from Parquet; when one of the covered parts changed or went (a compaction or ``--prune``
rewrote it), or the hash function is another, every part is read again. Ten million keys are
170 MB mapped, against 2.8 s and 700 MB to read and hash ten million id strings.

Each id has one entry: when an output holds several rows for an id (compaction not done yet),
the entry is compaction's winner: an ok row beats a failed one, then the newest part.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from batchrun.errors import OutputError
from batchrun.hashing import HASHER, id_hashes
from batchrun.output.layout import OutputLayout, part_time
from batchrun.output.parts import READ_TRIES, read_batches
from batchrun.output.rows import OK, REQUEST_HASH

KEYS_FORMAT = 2
"""2: parts are signed with their inode too."""
SCHEMA = pa.schema([("id_hash", pa.uint64()), ("request_hash", pa.uint64()), ("ok", pa.bool_())])
RESAVE_ROWS = 100_000
"""Rows in parts written since the keys were saved that make the next close save them again."""
_PART_COLUMNS = pa.schema([("id", pa.string()), REQUEST_HASH, ("status", pa.string())])
Signature = list[Any]
"""``[name, size, mtime_ns, inode]`` of a part."""
_EMPTY = pl.Schema({"id_hash": pl.UInt64, "request_hash": pl.UInt64, "ok": pl.Boolean})


@dataclass(frozen=True)
class Found:
    """What the output holds for some ids: whether each is there, the request its row
    answered (null for a row written before request hashes; any value where ``present`` is
    false) and whether that row is ok."""

    present: pl.Series
    request: pl.Series
    ok: pl.Series


class OutputKeys:
    """The keys of every part: the saved ones (``saved``) and those of the parts written
    since (``recent``), each sorted by id hash with one entry per id."""

    def __init__(
        self,
        saved: pl.DataFrame,
        recent: pl.DataFrame,
        repeated: bool,
        signatures: list[Signature],
    ) -> None:
        self.saved = saved
        self.recent = recent
        self._repeated = repeated
        self._signatures = signatures
        """The parts these keys were read from, as they were before they were read."""

    @classmethod
    def load(cls, path: Path) -> OutputKeys:
        layout = OutputLayout(path)
        for attempt in range(READ_TRIES):
            parts = layout.parts()
            try:
                signatures = _signatures(parts)  # before reading: a part replaced meanwhile
                # then no longer matches, and its keys are read again next time
                saved, covered = _saved(layout, signatures)
                recent, repeated = _read([part for part in parts if part.name not in covered])
                return cls(saved, recent, repeated, signatures)
            except FileNotFoundError:  # another shard's compaction replaced a part
                if attempt == READ_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def find(self, ids: pl.Series) -> Found:
        """Look sorted ``ids`` up. An id in both the saved and
        the recent keys takes compaction's winner: ok first, then the recent row."""
        if self.recent.is_empty() or self.saved.is_empty():
            return _find(self.recent if self.saved.is_empty() else self.saved, ids)
        old, new = _find(self.saved, ids), _find(self.recent, ids)
        take_new = new.present & (new.ok | ~old.ok)
        return Found(
            present=old.present | new.present,
            request=pl.select(
                pl.when(take_new).then(new.request).otherwise(old.request)
            ).to_series(),
            ok=old.ok | new.ok,
        )

    @property
    def has_repeated_ids(self) -> bool:
        """Whether some id has several rows in the parts (compaction has work)."""
        return self._repeated or bool(_find(self.saved, self.recent["id_hash"]).present.any())

    def counts(self) -> tuple[int, int]:
        """Ids with an ok row, and ids with failed rows only."""
        ids = self.recent["id_hash"]
        old = _find(self.saved, ids)
        ok = int(self.saved["ok"].sum()) + int((self.recent["ok"] & ~old.ok).sum())
        every = len(self.saved) + len(ids) - int(old.present.sum())
        return ok, every - ok

    def answered(self) -> pl.Series:
        """The request hashes answered ok, sorted (for answers reused across ids)."""
        frames = (self.saved, self.recent)
        chunks = [frame.filter("ok")["request_hash"].drop_nulls() for frame in frames]
        return pl.concat(chunks).sort()

    @property
    def resave_due(self) -> bool:
        return self.saved.is_empty() or len(self.recent) >= RESAVE_ROWS

    def save(self, path: Path) -> None:
        """Save these keys for the parts they were read from (a part sealed since is read
        as recent next time); only keys with one row per id are saved."""
        layout = OutputLayout(path)
        merged = pl.concat([self.saved, self.recent]).sort("id_hash")
        metadata = {"format": KEYS_FORMAT, "hasher": HASHER, "parts": self._signatures}
        table = (
            merged.to_arrow()
            .cast(SCHEMA)
            .replace_schema_metadata({"batchrun": orjson.dumps(metadata)})
        )
        temporary = layout.keys.with_name(f".{layout.keys.name}.{os.getpid()}.tmp")
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=max(len(table), 1))
        os.replace(temporary, layout.keys)


def _saved(layout: OutputLayout, signatures: list[Signature]) -> tuple[pl.DataFrame, set[str]]:
    """The saved keys and the names of the parts they cover; none when they are stale (a
    covered part changed or went, another hash function) or unreadable."""
    empty = pl.DataFrame(schema=_EMPTY)
    try:
        source = pa.memory_map(str(layout.keys))
        table = pa.ipc.open_file(source).read_all()
        metadata = orjson.loads((table.schema.metadata or {})[b"batchrun"])
        listed = [list(entry) for entry in metadata["parts"]]
        now = {signature[0]: signature for signature in signatures}
        current = all(now.get(entry[0]) == entry for entry in listed)
        known = metadata.get("hasher") == HASHER and metadata.get("format") == KEYS_FORMAT
    except (OSError, LookupError, TypeError, ValueError, pa.ArrowInvalid):
        return empty, set()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if not (current and known and frame.schema == _EMPTY and frame["id_hash"].is_sorted()):
        return empty, set()
    return frame.with_columns(pl.col("id_hash").set_sorted()), {entry[0] for entry in listed}


def _signatures(parts: list[Path]) -> list[Signature]:
    """What identifies each part's content: name, size, mtime and inode (every rewrite is a
    new file renamed into place)."""
    signatures: list[Signature] = []
    for part in parts:
        stat = part.stat()
        signatures.append([part.name, stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return signatures


def _read(parts: list[Path]) -> tuple[pl.DataFrame, bool]:
    """The keys of ``parts`` read from their rows, one entry per id; and whether some id
    had several rows."""
    ordered = sorted(parts, key=lambda part: (part_time(part), part.name))
    frames = list(_part_frames(ordered))
    if not frames:
        return pl.DataFrame(schema=_EMPTY), False
    keys = pl.concat(frames, rechunk=True)
    frames.clear()
    keys = keys.sort("id_hash", maintain_order=True)  # an id's rows stay oldest first (and
    # the column is flagged sorted: lookups are merge joins)
    ids = keys["id_hash"]
    repeated = bool((ids == ids.shift(1)).any())
    if repeated:  # compaction's winner, last of its id: the newest ok row, else the newest
        keys = keys.sort(["id_hash", "ok"], maintain_order=True)
        keys = keys.unique("id_hash", keep="last", maintain_order=True)
        keys = keys.with_columns(pl.col("id_hash").set_sorted())
    return keys, repeated


def _part_frames(parts: list[Path]) -> Iterator[pl.DataFrame]:
    """The keys of each row group of ``parts``, in order."""
    for batch in read_batches(parts, _PART_COLUMNS):
        yield pl.DataFrame(
            {
                "id_hash": id_hashes(batch.column("id")),
                "request_hash": pl.Series(batch.column(REQUEST_HASH.name)).reinterpret(
                    signed=False
                ),
                "ok": (pl.Series(batch.column("status")) == OK).fill_null(False),
            }
        )


def _find(keys: pl.DataFrame, ids: pl.Series) -> Found:
    """A merge join of sorted ``ids`` with ``keys`` (30 ms for half a million ids in ten
    million keys; a binary search per id takes twice that)."""
    if not ids.is_sorted():
        raise ValueError("OutputKeys.find takes sorted ids")
    needles = pl.DataFrame({"id_hash": ids}).with_columns(pl.col("id_hash").set_sorted())
    rows = needles.join(keys, on="id_hash", how="left")
    present = rows["ok"].is_not_null()
    return Found(present, rows["request_hash"], rows["ok"].fill_null(False))


def output_counts(path: Path) -> dict[str, int]:
    """Ids answered ok, and ids only failed, in the whole output (every shard's parts)."""
    ok, failed = OutputKeys.load(path).counts()
    return {"ok": ok, "failed": failed}


def settled_parts(path: Path) -> list[Path]:
    """The parts of an output whose ids each have one row, for reading it whole (export,
    ``batchrun.read``); OutputError while a run is writing it or one was killed before its
    last compaction."""
    layout = OutputLayout(path)
    parts = layout.parts()
    if not parts:
        raise OutputError(f"{path}: no output yet: run the job first")
    if layout.journals() or OutputKeys.load(path).has_repeated_ids:
        raise OutputError(
            f"{path}: a run is writing this output, or one was stopped before it settled "
            "(an id has rows in two parts); wait for it, or run the job again, then read it"
        )
    return parts
