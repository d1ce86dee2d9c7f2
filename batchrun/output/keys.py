"""The output's keys: for each id, its 64-bit hash, the request hash its row answered and
whether that row is ok, sorted by id hash. The diff, compaction and the counts look ids up in
them instead of reading id strings from the parts.

Each part's keys are written beside it when it is sealed (``output.partkeys``). A run
settles the output (``settle``, at its start and its end) by merging them into the saved
keys, ``_keys.arrows``: Arrow IPC in sorted batches of 262,144 rows, memory-mapped when read,
with the parts they cover (name, size, mtime, inode) and the id hash function, once the
parts' own keys add up to ``RESAVE_ROWS`` (fewer are read beside the saved keys). The merge
holds a few thousand keys of each file at a time (``output.keyruns``): a run's memory does
not grow with the output. Parts not covered are read from their keys files, else from
Parquet; when a covered part changed or went (compaction or ``--prune`` rewrote it), or the
hash function is another, the saved keys are stale and everything is merged again. Ten
million keys are 170 MB mapped, against 2.8 s and 700 MB to read and hash ten million id
strings.

Each id has one entry: when an output holds several rows for an id (compaction not done yet),
the entry is compaction's winner: an ok row beats a failed one, then the newest part.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from batchrun.errors import OutputError
from batchrun.hashing import HASHER, among
from batchrun.output.keyruns import (
    EMPTY,
    NO_IDS,
    SCHEMA,
    RunWriter,
    fewer_runs,
    merge,
    read_run,
    winners,
)
from batchrun.output.layout import OutputLayout, part_time, token_of
from batchrun.output.lookup import Found, MappedKeys, find_in, find_mapped
from batchrun.output.partkeys import (
    KEYS_FORMAT,
    Signature,
    current_label,
    few_keys,
    keys_file_of,
    part_keys,
    repeated_in,
)
from batchrun.output.parts import READ_TRIES

SAVED_BATCH_ROWS = 1 << 18
"""Keys in a batch of the saved keys (4.5 MB): what merging them holds at most."""


class OutputKeys:
    """The keys of every part: the saved ones (``saved``, sorted batches) and those of the
    parts written since (``recent``, sorted, in memory), each with one entry per id."""

    def __init__(
        self,
        saved: list[MappedKeys],
        recent: pl.DataFrame,
        twice: pl.Series | None = None,
        repeating: list[Path] | None = None,
    ) -> None:
        self.saved = saved
        self.recent = recent
        self._twice = twice if twice is not None else NO_IDS
        """Id hashes with rows in several of the recent parts."""
        self._repeating = repeating or []
        """Recent parts that hold some id twice."""

    @classmethod
    def load(cls, path: Path) -> OutputKeys:
        """The keys as they stand (nothing is written: ``settle`` merges them)."""
        layout = OutputLayout(path)
        for attempt in range(READ_TRIES):
            try:
                parts = layout.parts()
                signatures = _signatures(parts)
                saved, covered = _saved(layout, signatures)
                recent = _uncovered(parts, signatures, covered)
                return cls.from_saved_and_recent(layout, saved, recent)
            except FileNotFoundError:  # another shard's compaction replaced a part
                if attempt == READ_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def from_saved_and_recent(
        cls, layout: OutputLayout, saved: list[MappedKeys], recent: list[tuple[Path, Signature]]
    ) -> OutputKeys:
        """The saved keys, and those of the parts they do not cover (from the parts' keys
        files, read in memory)."""
        ordered = _oldest_first(recent)
        read = [part_keys(layout, *entry) for entry in ordered]
        every = pl.concat([keys for keys, _ in read] or [pl.DataFrame(schema=EMPTY)])
        keys, _ = winners(every)
        twice = every["id_hash"].filter(every["id_hash"].is_duplicated()).unique()
        repeating = [part for (part, _), (_, within) in zip(ordered, read, strict=True) if within]
        return cls(saved, keys, twice, repeating)

    def find(self, ids: pl.Series) -> Found:
        """Look sorted ``ids`` up. An id in both the saved and
        the recent keys takes compaction's winner: ok first, then the recent row."""
        if not ids.is_sorted():
            raise ValueError("OutputKeys.find takes sorted ids")
        if self.recent.is_empty() or not self.saved:
            return find_mapped(self.saved, ids) if self.saved else find_in(self.recent, ids)
        old, new = find_mapped(self.saved, ids), find_in(self.recent, ids)
        take_new = new.present & (new.ok | ~old.ok)
        return Found(
            present=old.present | new.present,
            request=pl.select(
                pl.when(take_new).then(new.request).otherwise(old.request)
            ).to_series(),
            ok=old.ok | new.ok,
        )

    @property
    def is_empty(self) -> bool:
        """Whether the output holds no row."""
        return not self.saved and self.recent.is_empty()

    @property
    def has_repeated_ids(self) -> bool:
        """Whether some id has several rows in the parts (compaction has work)."""
        if len(self._twice) or self._repeating:
            return True
        return bool(self._in_saved(self.recent["id_hash"]).present.any())

    def repeated_ids(self) -> pl.Series:
        """The hashes of the ids that have several rows, sorted: in the saved keys' parts
        and a recent one, in several recent ones, or twice in one part (read from it)."""
        recent = self.recent["id_hash"]
        found = [self._twice, recent.filter(self._in_saved(recent).present)]
        found += [repeated_in(part) for part in self._repeating]
        return _ids(found)

    def counts(self) -> tuple[int, int]:
        """Ids with an ok row, and ids with failed rows only."""
        ids = self.recent["id_hash"]
        old = self._in_saved(ids)
        saved_ok = sum(batch.ok_count() for batch in self.saved)
        ok = saved_ok + int((self.recent["ok"] & ~old.ok).sum())
        every = sum(map(len, self.saved)) + len(ids) - int(old.present.sum())
        return ok, every - ok

    def answered(self, requests: np.ndarray) -> np.ndarray:
        """Those of some request hashes (signed, sorted, unique) that rows of the output
        answered ok: each saved batch is read once, a batch at a time."""
        if not len(requests):
            return requests
        recent = self.recent.filter("ok")["request_hash"].drop_nulls()
        found = [among(recent.reinterpret(signed=True).to_numpy(), requests)]
        found += [among(keys.ok_requests(), requests) for keys in self.saved]
        return np.unique(np.concatenate(found))

    def _in_saved(self, ids: pl.Series) -> Found:
        return find_mapped(self.saved, ids.sort().set_sorted())


def settle(path: Path) -> pl.Series:
    """Merge every part's keys into the saved keys (the caller holds the maintenance lock),
    writing the runs of parts that have none; the hashes of the ids that have several rows
    (then nothing is saved: compaction comes first)."""
    layout = OutputLayout(path)
    for attempt in range(READ_TRIES):
        try:
            return _settle(layout)
        except FileNotFoundError:  # a part went while it was read
            if attempt == READ_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _settle(layout: OutputLayout) -> pl.Series:
    parts = layout.parts()
    signatures = _signatures(parts)  # before reading: a part replaced meanwhile then no
    # longer matches, and its keys are merged again next time
    saved, covered = _saved(layout, signatures)
    recent = _uncovered(parts, signatures, covered)
    if not recent and (saved or not parts):
        _remove_runs(layout, parts)
        return NO_IDS
    if saved and few_keys([current_label(layout.part_keys(part), sign) for part, sign in recent]):
        keys = OutputKeys.from_saved_and_recent(layout, saved, recent)
        return keys.repeated_ids()  # not worth a rewrite yet
    ordered = _oldest_first(recent)
    runs = [keys_file_of(layout, *entry) for entry in ordered]
    sources = [read_run(path, age) for age, (path, _) in enumerate(runs, 1)]
    sources[:0] = [read_run(layout.keys, 0)] if saved else []
    metadata = {"format": KEYS_FORMAT, "hasher": HASHER, "parts": signatures}
    schema = SCHEMA.with_metadata({"batchrun": orjson.dumps(metadata)})
    with RunWriter(layout.keys, schema, SAVED_BATCH_ROWS) as writer:
        sources, spilled = fewer_runs(sources)
        within = [
            repeated_in(part) for (part, _), (_, twice) in zip(ordered, runs, strict=True) if twice
        ]
        repeated = _ids([spilled, merge(sources, writer.add), *within])
        writer.keep = repeated.is_empty()
    if repeated.is_empty():
        _remove_runs(layout, parts)
    return repeated


def _ids(hashes: list[pl.Series]) -> pl.Series:
    """Id hashes, each once, sorted."""
    return pl.concat([NO_IDS, *hashes]).unique().sort()


def _remove_runs(layout: OutputLayout, parts: list[Path]) -> None:
    """Runs merged into the saved keys, and runs of parts that went."""
    merged = {layout.part_keys(part) for part in parts}
    for run in layout.part_keys_files():
        if run in merged or not layout.part(token_of(run)).exists():
            run.unlink(missing_ok=True)


def _uncovered(
    parts: list[Path], signatures: list[Signature], covered: set[str]
) -> list[tuple[Path, Signature]]:
    return [(p, s) for p, s in zip(parts, signatures, strict=True) if p.name not in covered]


def _oldest_first(entries: list[tuple[Path, Signature]]) -> list[tuple[Path, Signature]]:
    return sorted(entries, key=lambda entry: (part_time(entry[0]), entry[0].name))


def _saved(layout: OutputLayout, signatures: list[Signature]) -> tuple[list[MappedKeys], set[str]]:
    """The saved keys' batches (mapped) and the names of the parts they cover; none when they
    are stale (a covered part changed or went, another hash function) or unreadable."""
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(layout.keys)))
        metadata = orjson.loads((reader.schema.metadata or {})[b"batchrun"])
        listed = [list(entry) for entry in metadata["parts"]]
        now = {signature[0]: signature for signature in signatures}
        current = all(now.get(entry[0]) == entry for entry in listed)
        known = metadata.get("hasher") == HASHER and metadata.get("format") == KEYS_FORMAT
        fits = reader.schema.remove_metadata().equals(SCHEMA)
        batches = [reader.get_batch(number) for number in range(reader.num_record_batches)]
    except (OSError, LookupError, TypeError, ValueError, pa.ArrowInvalid):
        return [], set()
    if not (current and known and fits):
        return [], set()
    saved = [MappedKeys(batch) for batch in batches if batch.num_rows]
    if not _in_order(saved):
        return [], set()
    return saved, {entry[0] for entry in listed}


def _in_order(saved: list[MappedKeys]) -> bool:
    """Whether saved batches hold each id hash once, ascending, across batches too."""
    if any(keys.batch.column("id_hash").null_count for keys in saved):
        return False
    if not all(bool(np.all(keys.ids[1:] > keys.ids[:-1])) for keys in saved):
        return False
    return all(a.ids[-1] < b.ids[0] for a, b in itertools.pairwise(saved))


def _signatures(parts: list[Path]) -> list[Signature]:
    """What identifies each part's content: name, size, mtime and inode (every rewrite is a
    new file renamed into place)."""
    signatures: list[Signature] = []
    for part in parts:
        stat = part.stat()
        signatures.append([part.name, stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return signatures


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
