"""The names of every file in an output directory, written once, and its small JSON files.

Layout of ``[output].path``::

    part-<token>.parquet        finished parts; each appears whole (written aside, fsynced, renamed)
    .part-<token>.tmp           a part being written (a killed run may leave one: removed)
    .journal-<token>.arrows     rows answered since the last part, appended as Arrow IPC batches
    _job.json                   the job's name, kind, request fingerprint and format version
    _input.json                 what the input index was built from (files' size and mtime, the
                                job's requests) and the whole-input check's result
    _input-index.arrows         the input index: 36 bytes per input row (``input.index``)
    _summary.json               the last run's summary (``_summary-sIofN.json`` for a shard)
    _run-<token>.json           every run's summary, kept (``batchrun report``)
    _events-<token>.arrows      every run's trace: one record per request attempt
                                (``output.events``)
    _keys.arrows                every id's hash, request hash and status, sorted, for the
                                parts it names (``output.keys``)
    _keys-<token>.arrows        the same for one part, until merged into ``_keys.arrows``
    ._keys*.<pid>.tmp           keys being written (a killed run may leave one: removed)
    .lock                       held (flock) by the run writing here; says its pid and host
    .lock-sIofN                 the same for shard I of N (``--shard I/N``)
    .lock-maintenance           held while journals are sealed and parts compacted

``<token>`` is ``<owner>-<start time, ns, hex>-<pid>``, where the owner is ``all`` or a shard's
``sIofN``. Readers (pyarrow, polars, DuckDB) skip the dot and underscore files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
JOURNAL_PREFIX, JOURNAL_SUFFIX = ".journal-", ".arrows"
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".part-", ".tmp"
PART_KEYS_PREFIX, PART_KEYS_SUFFIX = "_keys-", ".arrows"
WHOLE_JOB = "all"


@dataclass(frozen=True)
class OutputLayout:
    """Where each file of one output directory lives."""

    root: Path

    def part(self, token: str) -> Path:
        return self.root / f"{PART_PREFIX}{token}{PART_SUFFIX}"

    def journal(self, token: str) -> Path:
        return self.root / f"{JOURNAL_PREFIX}{token}{JOURNAL_SUFFIX}"

    def parts(self) -> list[Path]:
        """The finished parts, by name."""
        return sorted(self.root.glob(f"{PART_PREFIX}*{PART_SUFFIX}")) if self.root.is_dir() else []

    def event_log(self, token: str) -> Path:
        return self.root / f"_events-{token}.arrows"

    def event_logs(self) -> list[Path]:
        return sorted(self.root.glob("_events-*.arrows")) if self.root.is_dir() else []

    def run_record(self, token: str) -> Path:
        return self.root / f"_run-{token}.json"

    def run_records(self) -> list[Path]:
        return sorted(self.root.glob("_run-*.json")) if self.root.is_dir() else []

    def journals(self) -> list[Path]:
        return sorted(self.root.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"))

    def temporaries(self) -> list[Path]:
        return sorted(self.root.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"))

    def keys_temporaries(self) -> list[tuple[Path, str | None]]:
        """Keys being written (``.<name>.<pid>.tmp``), each with the owner of its part (None:
        the output's keys); a name of another shape is not listed."""
        found: list[tuple[Path, str | None]] = []
        for path in sorted(self.root.glob("._keys*.tmp")):
            name = path.name.removeprefix(".").rsplit(".", 2)[0]
            if name == self.keys.name:
                found.append((path, None))
            elif name.startswith(PART_KEYS_PREFIX) and name.endswith(PART_KEYS_SUFFIX):
                found.append((path, owner_of(Path(name))))
        return found

    @property
    def job_file(self) -> Path:
        return self.root / "_job.json"

    @property
    def input_file(self) -> Path:
        return self.root / "_input.json"

    @property
    def keys(self) -> Path:
        return self.root / "_keys.arrows"

    def part_keys(self, part: Path) -> Path:
        return self.root / f"{PART_KEYS_PREFIX}{token_of(part)}{PART_KEYS_SUFFIX}"

    def part_keys_files(self) -> list[Path]:
        pattern = f"{PART_KEYS_PREFIX}*{PART_KEYS_SUFFIX}"
        return sorted(self.root.glob(pattern)) if self.root.is_dir() else []

    @property
    def input_index(self) -> Path:
        return self.root / "_input-index.arrows"

    def summary(self, shard_name: str | None = None) -> Path:
        return self.root / (f"_summary-{shard_name}.json" if shard_name else "_summary.json")

    def lock(self, owner: str = WHOLE_JOB) -> Path:
        """The whole job's lock, or a shard's."""
        return self.root / (".lock" if owner == WHOLE_JOB else f".lock-{owner}")

    @property
    def maintenance_lock(self) -> Path:
        return self.root / ".lock-maintenance"


def token_of(path: Path) -> str:
    """The ``<owner>-<time>-<pid>`` token of a part, journal, temporary part or part's keys
    name."""
    name = path.name
    for prefix, suffix in (
        (PART_PREFIX, PART_SUFFIX),
        (JOURNAL_PREFIX, JOURNAL_SUFFIX),
        (TEMPORARY_PREFIX, TEMPORARY_SUFFIX),
        (PART_KEYS_PREFIX, PART_KEYS_SUFFIX),
    ):
        if name.startswith(prefix) and name.endswith(suffix):
            return name[len(prefix) : -len(suffix)]
    raise ValueError(f"{path}: not a part, journal or temporary part")


def owner_of(path: Path) -> str:
    """Who wrote a part or journal: ``all`` or a shard's ``sIofN``."""
    return token_of(path).split("-", 1)[0]


def temporary_of(part: Path) -> Path:
    """Where ``part`` is written before it is renamed into place."""
    return part.with_name(f"{TEMPORARY_PREFIX}{token_of(part)}{TEMPORARY_SUFFIX}")


def part_time(part: Path) -> int:
    """When a part's journal was started (ns), from its token; 0 when the name has none."""
    try:
        return int(token_of(part).split("-")[-2], 16)
    except (IndexError, ValueError):
        return 0


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON file beside the parts, or None when it is missing or unreadable (it is
    then written anew)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, ValueError):  # missing, not a directory, damaged JSON
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically (shards may write the same one at once)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)
