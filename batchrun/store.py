"""The output directory: Parquet parts, a crash-safe journal of the rows not yet in a part,
the job's identity, and the lock that keeps two runs from writing one output.

Layout of ``[output].path``::

    part-<token>.parquet        finished parts; each appears whole (written aside, fsynced, renamed)
    .journal-<token>.arrows     rows answered since the last part, appended as Arrow IPC batches
    _job.json                   the job's name, kind and request fingerprint
    _input.json                 the input's row count, for files of this size and mtime
    _summary.json               the last run's summary (``_summary-sIofN.json`` for a shard)
    .lock                       held (flock) by the run writing here; says its pid and host
    .lock-sIofN, part-sIofN-…   the same for shard I of N (``--shard I/N``)

Every answered row is appended to the journal as soon as the writer takes it, so a process
killed at any moment loses only the requests in flight and the few answers queued for the
writer. ``seal()`` turns the journal into a part; a journal left by a
killed run is sealed by the next one (a torn last batch is dropped: those rows are sent again).
A part's name is derived from its journal's, so a journal sealed twice yields one part. After
sealing, ``batchrun.compaction`` makes sure every id has one row.
Readers (pyarrow, polars, DuckDB) skip the dot and underscore files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from batchrun.compaction import compact
from batchrun.errors import OutputError
from batchrun.parts import part_files, write_part
from batchrun.shards import Shard


class Store:
    """One run's handle on the output directory; ``open()`` locks it, ``close()`` seals it."""

    def __init__(self, path: Path, schema: pa.Schema, shard: Shard | None = None) -> None:
        self.path = path
        self.schema = schema
        self._shard = shard
        self._owner = shard.name if shard else "all"
        self._lock_fds: list[int] = []
        self._journal: pa.ipc.RecordBatchStreamWriter | None = None
        self._journal_file: Any = None
        self._journal_path: Path | None = None
        self.rows_in_journal = 0

    def open(self) -> Store:
        """Create the directory, take the lock, seal journals killed runs left behind."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the output directory ({exc})") from None
        self._lock()
        with self._maintenance():
            for stale in self.path.glob(".part-*.tmp"):  # a part a killed run was writing
                if self._orphaned(stale.name.removeprefix(".part-")):
                    stale.unlink(missing_ok=True)
            for journal in sorted(self.path.glob(".journal-*.arrows")):
                if self._orphaned(journal.name.removeprefix(".journal-")):
                    self._seal_journal(journal)
            self._compact()
        return self

    def _orphaned(self, token: str) -> bool:
        """Whether a journal or temporary part named ``<owner>-…`` is ours to finish: our own,
        or left by a run that is gone (a run of the whole job owns them all)."""
        owner = token.split("-", 1)[0]
        return owner == self._owner or self._shard is None or _dead(self.path, owner)

    def close(self) -> None:
        """Seal the journal into a part and release the lock."""
        try:
            self.seal()
            with self._maintenance():
                self._compact()
        finally:
            while self._lock_fds:
                os.close(self._lock_fds.pop())

    def append(self, table: pa.Table) -> None:
        """Add answered rows to the journal; they survive a kill from now on."""
        if not table.num_rows:
            return
        if self._journal is None:
            self._start_journal()
        assert self._journal is not None
        try:
            self._journal.write_table(table)
        except OSError as exc:
            raise OutputError(f"{self._journal_path}: cannot write ({exc})") from None
        self.rows_in_journal += table.num_rows

    def seal(self) -> None:
        """Turn the current journal into a part file."""
        if self._journal is None:
            return
        journal, journal_file = self._journal, self._journal_file
        path, self._journal, self._journal_path = self._journal_path, None, None
        self.rows_in_journal = 0
        try:
            journal.close()
            journal_file.close()
            assert path is not None
            self._seal_journal(path)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write a part ({exc})") from None

    @contextlib.contextmanager
    def _maintenance(self) -> Iterator[None]:
        """Sealing other runs' journals and compacting rewrite files several shards can see:
        one process at a time does it (flock on ``.lock-maintenance``)."""
        fd = _take_lock(self.path, ".lock-maintenance", exclusive=True, wait=True)
        try:
            yield
        finally:
            os.close(fd)

    def _compact(self) -> None:
        try:
            compact(self.path, self._shard.holds if self._shard else None)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot rewrite a part ({exc})") from None

    def _start_journal(self) -> None:
        token = f"{self._owner}-{time.time_ns():x}-{os.getpid()}"
        self._journal_path = self.path / f".journal-{token}.arrows"
        try:
            self._journal_file = pa.OSFile(str(self._journal_path), "wb")
        except OSError as exc:
            raise OutputError(f"{self._journal_path}: cannot write ({exc})") from None
        self._journal = pa.ipc.new_stream(self._journal_file, self.schema)

    def _seal_journal(self, journal: Path) -> None:
        token = journal.name.removeprefix(".journal-").removesuffix(".arrows")
        part = self.path / f"part-{token}.parquet"
        if not part.exists():
            batches = list(_readable_batches(journal))
            if any(batch.num_rows for batch in batches):
                write_part(part, pa.Table.from_batches(batches, schema=batches[0].schema))
        journal.unlink(missing_ok=True)

    def _lock(self) -> None:
        """A run alone holds ``.lock`` exclusively. A shard holds it shared (so shards of one
        job run together, but not beside a run of the whole job) and its own
        ``.lock-sIofN`` exclusively (so two runs of one shard refuse each other). The locks
        are the OS's (flock): they end with the process, so a killed run leaves none behind."""
        if self._shard is None:
            self._lock_fds.append(_take_lock(self.path, ".lock", exclusive=True))
            return
        self._lock_fds.append(_take_lock(self.path, ".lock", exclusive=False))
        self._lock_fds.append(_take_lock(self.path, f".lock-{self._owner}", exclusive=True))


def _take_lock(path: Path, name: str, *, exclusive: bool, wait: bool = False) -> int:
    fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "shards of this job"
        os.close(fd)
        raise OutputError(
            f"{path}: another run is writing this output ({holder}); "
            "wait for it to finish or stop it"
        ) from None
    if exclusive and not wait:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return fd


def _dead(path: Path, owner: str) -> bool:
    """True when no live run holds the lock of shard ``owner``: its journal is ours to seal."""
    if owner == "all":
        return True  # a run of the whole job holds .lock alone: none runs beside a shard
    fd = os.open(path / f".lock-{owner}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _readable_batches(journal: Path) -> Iterable[pa.RecordBatch]:
    """The whole batches of a journal; a batch torn by a kill ends the reading."""
    try:
        reader = pa.ipc.open_stream(str(journal))
    except (pa.ArrowInvalid, OSError):
        return
    while True:
        try:
            yield reader.read_next_batch()
        except (StopIteration, pa.ArrowInvalid, OSError):
            return


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


def check_identity(path: Path, name: str, kind: str, fingerprint: str) -> None:
    """Refuse to mix rows of differently shaped requests in one output; record the job's
    identity on first use."""
    identity = path / "_job.json"
    recorded = read_json(identity)
    if recorded and part_files(path) and recorded.get("fingerprint") != fingerprint:
        raise OutputError(
            f"{path}: holds rows of job {recorded.get('name')!r} made with other requests "
            "(its model, prompt, params, text column or kept columns differ from this job's); "
            "run with --fresh to move that output aside, or set a new [output].path"
        )
    if recorded is None or recorded.get("fingerprint") != fingerprint:
        try:
            path.mkdir(parents=True, exist_ok=True)
            write_json(identity, {"name": name, "kind": kind, "fingerprint": fingerprint})
        except OSError as exc:
            raise OutputError(f"{path}: cannot be used as the output directory ({exc})") from None


def move_aside(path: Path) -> Path | None:
    """``--fresh``: rename an existing output to ``<path>.old-<time>``; refuse while a run
    holds its lock. Returns the new name, or None when there was nothing to move."""
    if not path.exists() or not any(path.iterdir()):
        return None
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputError(f"{path}: another run is writing this output; stop it first") from None
    finally:
        os.close(fd)
    aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside
