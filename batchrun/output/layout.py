"""The names of every file of an output, written once, and its small JSON files.

The output directory ``[output].path`` holds the result parts and nothing else, so that every
reader opens it as one table: ``pl.read_parquet(DIR)`` (polars reads every non-empty file under
a directory, subdirectories included, and skips none), pandas and pyarrow, DuckDB's
``read_parquet('DIR/*.parquet')`` and ``read_parquet('DIR')``, HF ``datasets``. Everything
else lives beside it, in the state directory ``.<name>.batchrun``::

    out/news/                       the output directory
        part-<token>.parquet        finished parts; each appears whole (written aside, fsynced,
                                    renamed)
        .part-<token>.tmp           a part being written (a killed run may leave one: removed);
                                    here, so that the rename never crosses a file system
        .batchrun-<token>           empty: marks the directory the state beside it belongs to
    out/.news.batchrun/             the state directory
        _job.json                   the job's name, kind, request fingerprint and format version
        _output.json                the token of the output directory's ``.batchrun-<token>``
                                    mark: state left by an output that was deleted (a new
                                    directory, a new mark) is moved aside, never reused
        .journal-<token>.arrows     rows answered since the last part, as Arrow IPC batches
                                    (each with its CRC-32: ``output.streams``)
        _input.json                 what the input index was built from (files' size and mtime,
                                    the job's requests) and the whole-input check's result
        _input-index.parquet        the input index: one small row per input row (``input.index``)
        _parts.json                 each part's sequence number, verified and compacted or not
                                    (``output.catalogue``; checksummed)
        _summary.json               the last run's summary (``_summary-sIofN.json`` for a shard)
        _run-<token>.json           every run's summary, kept (``batchrun report``)
        _events-<token>.arrows      every run's trace: one record per request attempt
                                    (``output.events``)
        part-<token>.parquet.damaged  a part that failed its checks, moved aside (its rows redone)
        .lock                       held (flock) by the run writing here; says its pid and host
        .lock-sIofN                 the same for shard I of N (``--shard I/N``)
        .lock-maintenance           held while journals are sealed and parts compacted
    out/news.report.html            ``batchrun report``'s page

``<token>`` is ``<owner>-<start time, ns, hex>-<pid>``, where the owner is ``all`` or a shard's
``sIofN``. Outputs of format 2 and before kept the state files in the output directory: they
are moved into the state directory on first use (``move_legacy_state``).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from batchrun.output.atomic import written

PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
JOURNAL_PREFIX, JOURNAL_SUFFIX = ".journal-", ".arrows"
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".part-", ".tmp"
WHOLE_JOB = "all"
MARK_PREFIX = ".batchrun-"
LEGACY_STATE = ("_*.json", "_*.arrows", ".journal-*.arrows", "._keys*.tmp", ".lock*")
"""What format 2 kept in the output directory beside the parts."""


def state_of(root: Path) -> Path:
    """The state directory of the output directory ``root``: ``.<name>.batchrun`` beside it."""
    absolute = Path(os.path.abspath(root))
    return absolute.parent / f".{absolute.name}.batchrun"


class OutputLayout:
    """Where each file of one output lives: parts in ``root``, the rest in ``state``."""

    def __init__(self, root: Path) -> None:
        move_legacy_state(root)
        self.root = root
        self.state = state = state_of(root)
        self.job_file = state / "_job.json"
        self.owner_file = state / "_output.json"
        self.input_file = state / "_input.json"
        self.catalogue = state / "_parts.json"
        self.input_index = state / "_input-index.parquet"
        self.maintenance_lock = state / ".lock-maintenance"
        absolute = Path(os.path.abspath(root))
        self.report = absolute.parent / f"{absolute.name}.report.html"

    def part(self, token: str) -> Path:
        return self.root / f"{PART_PREFIX}{token}{PART_SUFFIX}"

    def journal(self, token: str) -> Path:
        return self.state / f"{JOURNAL_PREFIX}{token}{JOURNAL_SUFFIX}"

    def parts(self) -> list[Path]:
        """The finished parts, by name."""
        return sorted(self.root.glob(f"{PART_PREFIX}*{PART_SUFFIX}")) if self.root.is_dir() else []

    def journals(self) -> list[Path]:
        return sorted(self.state.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"))

    def temporaries(self) -> list[Path]:
        return sorted(self.root.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"))

    def event_log(self, token: str) -> Path:
        return self.state / f"_events-{token}.arrows"

    def event_logs(self) -> list[Path]:
        return sorted(self.state.glob("_events-*.arrows"))

    def run_record(self, token: str) -> Path:
        return self.state / f"_run-{token}.json"

    def run_records(self) -> list[Path]:
        return sorted(self.state.glob("_run-*.json"))

    def damaged(self, part: Path) -> Path:
        """Where a damaged part is moved aside: out of the output directory's readers' way."""
        return self.state / f"{part.name}.damaged"

    def summary(self, shard_name: str | None = None) -> Path:
        return self.state / (f"_summary-{shard_name}.json" if shard_name else "_summary.json")

    def lock(self, owner: str = WHOLE_JOB) -> Path:
        """The whole job's lock, or a shard's."""
        return self.state / (".lock" if owner == WHOLE_JOB else f".lock-{owner}")

    def claim_state(self) -> None:
        """Make the state directory, for this output directory (which must exist). The
        directory carries an empty ``.batchrun-<token>`` (every reader skips it) and the state
        records the token: state left by a deleted output of the same path is moved aside to
        ``.<name>.batchrun.stale-<time>``, never read as this one's."""
        marks = sorted(self.root.glob(f"{MARK_PREFIX}*"))
        if not marks:
            marks = [self.root / f"{MARK_PREFIX}{uuid.uuid4().hex}"]
            marks[0].touch()
        token = {"token": marks[0].name.removeprefix(MARK_PREFIX)}
        recorded = read_json(self.owner_file)
        if recorded is not None and recorded != token:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            with contextlib.suppress(FileNotFoundError):  # another run moved it first
                os.replace(self.state, self.state.with_name(f"{self.state.name}.stale-{stamp}"))
        self.state.mkdir(parents=True, exist_ok=True)
        if recorded != token:
            write_json(self.owner_file, token)


def move_legacy_state(root: Path) -> None:
    """Give an existing output directory its state directory, and move into it what an
    output of format 2 or before kept beside its parts (idempotent: a file already moved is
    not there any more; ``_job.json``, which marks such an output, goes last)."""
    if not root.is_dir():
        return
    state = state_of(root)
    try:
        state.mkdir(exist_ok=True)
    except OSError:  # a read-only place: the parts can still be read
        return
    if not (root / "_job.json").is_file():
        return
    legacy = [path for pattern in LEGACY_STATE for path in root.glob(pattern)]
    for path in sorted(legacy, key=lambda path: path.name == "_job.json"):
        try:
            if path.name.startswith(".lock"):
                path.unlink()  # (a lock is a name for flock: the run's own is in the state)
            else:
                os.replace(path, state / path.name)
        except FileNotFoundError:  # another process moved it first
            continue


def new_token(owner: str) -> str:
    """A run's or journal's token: ``<owner>-<now, ns, hex>-<pid>``."""
    return f"{owner}-{time.time_ns():x}-{os.getpid()}"


def token_of(path: Path) -> str:
    """The ``<owner>-<time>-<pid>`` token of a part, journal or temporary part."""
    name = path.name
    for prefix, suffix in (
        (PART_PREFIX, PART_SUFFIX),
        (JOURNAL_PREFIX, JOURNAL_SUFFIX),
        (TEMPORARY_PREFIX, TEMPORARY_SUFFIX),
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
    """When a part's journal was started (ns), from its token; 0 when the name has none (the
    time a part says of itself: never its order, which is its sequence number)."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with written(path) as temporary:
        temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
