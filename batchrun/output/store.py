"""The output directory's writer side: a crash-safe journal of the rows not yet in a part,
sealing it into Parquet parts, and the lock that keeps two runs from writing one output.
(Every file's name is in ``batchrun.output.layout``.)

Crash model: every answered row is appended to the journal as soon as the writer takes it, so
a process killed at any moment loses only the requests in flight and the few answers queued
for the writer. ``seal()`` turns the journal into a part; a journal left by a killed run is
sealed by the next one (a torn last batch is dropped: those rows are sent again). A part's name
is derived from its journal's, so a journal sealed twice yields one part; parts are numbered
in the order they are sealed (``output.parts.SEQUENCE_KEY``). After sealing,
``batchrun.output.compaction`` makes sure every id has one row.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrun.errors import OutputError, cannot_write
from batchrun.job.shards import Shard
from batchrun.output.catalogue import Catalogue, sealed
from batchrun.output.compaction import compact, prune
from batchrun.output.identity import Identity, check_identity
from batchrun.output.layout import WHOLE_JOB, OutputLayout, new_token, owner_of, state_of, token_of
from batchrun.output.parts import write_batches
from batchrun.output.rows import REQUEST_HASH
from batchrun.output.streams import append_checked, whole_batches


class Store:
    """One run's handle on the output directory; ``open()`` locks it, ``close()`` seals it."""

    def __init__(self, path: Path, schema: pa.Schema, shard: Shard | None = None) -> None:
        self.path = path
        self.layout = OutputLayout(path)
        self.schema = schema
        self._shard = shard
        self._owner = shard.name if shard else WHOLE_JOB
        self._lock_fds: list[int] = []
        self._journal: pa.ipc.RecordBatchStreamWriter | None = None
        self._journal_file: Any = None
        self._journal_path: Path | None = None
        self.rows_in_journal = 0
        self._sealer: concurrent.futures.ThreadPoolExecutor | None = None
        self._sealing: concurrent.futures.Future[None] | None = None
        self._sequence = 0
        """The number of the last part sealed (``Catalogue.next_sequence`` at open)."""

    def open(self, identity: Identity | None = None) -> Store:
        """Create the directory, take the lock, check (and migrate) the output's identity,
        seal journals killed runs left behind: an output this run may not write is refused
        before anything in it is touched."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.layout.claim_state()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the output directory ({exc})") from None
        self._lock()
        try:
            with self._maintenance():
                if identity is not None:
                    check_identity(self.path, identity)
                self._sequence = Catalogue.load(self.path, repair=True).next_sequence() - 1
                self._finish_what_killed_runs_left()
                self._compact()
        except BaseException:
            self._unlock()
            raise
        return self

    def _finish_what_killed_runs_left(self) -> None:
        for stale in self.layout.temporaries():  # a part a killed run was writing
            if self._orphaned(owner_of(stale)):
                try:
                    stale.unlink(missing_ok=True)
                except OSError as exc:
                    message = f"{stale}: cannot remove this unfinished part ({exc})"
                    raise OutputError(message) from None
        for journal in self.layout.journals():
            if self._orphaned(owner_of(journal)):
                self.seal_journal(journal)  # (a full disk: OutputError, the journal kept)

    def _unlock(self) -> None:
        while self._lock_fds:
            os.close(self._lock_fds.pop())

    def _orphaned(self, owner: str) -> bool:
        """Whether a journal or temporary part of ``owner`` is ours to finish: our own, or
        left by a run that is gone (a run of the whole job owns them all)."""
        if owner in (self._owner, WHOLE_JOB) or self._shard is None:
            return True  # (a run of the whole job holds .lock alone: none runs beside a shard)
        return _free(self.layout.lock(owner))

    def close(self) -> None:
        """Finish the seals under way (the last one's error, if any, is raised), seal the
        journal into a part and release the lock."""
        try:
            if self._sealer is not None:
                self._sealer.shutdown(wait=True)
                self._sealer = None
            sealing, self._sealing = self._sealing, None
            if sealing is not None:
                sealing.result()
            self.seal()
            with self._maintenance():
                self._compact()
        finally:
            self._unlock()

    def prune(self, index: Path) -> int:
        """``--prune`` (``output.compaction.prune``): the rows whose id ``index`` lacks go."""
        with self._maintenance():
            try:
                return prune(self.path, index)
            except OSError as exc:
                raise cannot_write(self.path, exc, "cannot rewrite a part") from None

    def append(self, table: pa.Table) -> None:
        """Add answered rows to the journal; they survive a kill from now on."""
        if not table.num_rows:
            return
        if self._journal is None:
            self._journal_path = self.layout.journal(new_token(self._owner))
            try:
                self._journal_file = pa.OSFile(str(self._journal_path), "wb")
            except OSError as exc:
                raise cannot_write(self._journal_path, exc) from None
            self._journal = pa.ipc.new_stream(self._journal_file, self.schema)
        try:
            append_checked(self._journal, table)
        except OSError as exc:
            raise cannot_write(self._journal_path or self.path, exc) from None
        self.rows_in_journal += table.num_rows

    def seal(self) -> None:
        """Turn the current journal into a part file."""
        if (journal := self.rotate()) is not None:
            self.seal_journal(journal)

    def seal_later(self) -> concurrent.futures.Future[None] | None:
        """``rotate``, then seal the journal in the store's own thread: parts in order, one at
        a time; ``close()`` waits for them. None: the journal held no row."""
        if (journal := self.rotate()) is None:
            return None
        if self._sealer is None:
            self._sealer = concurrent.futures.ThreadPoolExecutor(1, "batchrun-seal")
        self._sealing = self._sealer.submit(self.seal_journal, journal)
        return self._sealing

    def rotate(self) -> Path | None:
        """Close the current journal (rows appended from now on start another); its path,
        for ``seal_journal`` (which may run in another thread meanwhile)."""
        if self._journal is None:
            return None
        journal, journal_file = self._journal, self._journal_file
        path, self._journal, self._journal_path = self._journal_path, None, None
        self.rows_in_journal = 0
        try:
            journal.close()
            journal_file.close()
        except OSError as exc:
            raise cannot_write(path or self.path, exc) from None
        return path

    def seal_journal(self, journal: Path) -> None:
        """Turn a closed journal into a part file."""
        part = self.layout.part(token_of(journal))
        try:
            if not part.exists() and (rows := _with_request_hash(whole_batches(journal))):
                self._sequence += 1
                if write_batches(part, *rows, self._sequence):
                    sealed(self.path, part, self._sequence)
            journal.unlink(missing_ok=True)
        except OSError as exc:
            raise cannot_write(self.path, exc, "cannot write a part") from None

    @contextlib.contextmanager
    def _maintenance(self) -> Iterator[None]:
        """Sealing other runs' journals and compacting rewrite files several shards can see:
        one process at a time does it (flock on ``.lock-maintenance``)."""
        fd = _take_lock(self.layout.maintenance_lock, exclusive=True, wait=True)
        try:
            yield
        finally:
            os.close(fd)

    def _compact(self) -> None:
        """Drop the rows that lose to another row of their id (``output.compaction``)."""
        try:
            compact(self.path, self._shard.holds if self._shard else None)
        except OSError as exc:
            raise cannot_write(self.path, exc, "cannot rewrite a part") from None

    def _lock(self) -> None:
        """A run alone holds ``.lock`` exclusively. A shard holds it shared (so shards of one
        job run together, but not beside a run of the whole job) and its own
        ``.lock-sIofN`` exclusively (so two runs of one shard refuse each other). The locks
        are the OS's (flock): they end with the process, so a killed run leaves none behind."""
        self._lock_fds.append(_take_lock(self.layout.lock(), exclusive=self._shard is None))
        if self._shard is not None:
            self._lock_fds.append(_take_lock(self.layout.lock(self._owner), exclusive=True))


def _take_lock(lock: Path, *, exclusive: bool, wait: bool = False) -> int:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "shards of this job"
        os.close(fd)
        raise OutputError(
            f"{lock.parent}: another run is writing this output ({holder}); "
            "wait for it to finish or stop it"
        ) from None
    if exclusive and not wait:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return fd


def _free(lock: Path) -> bool:
    """True when no live process holds ``lock`` (probed, not kept)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _with_request_hash(
    batches: Iterator[pa.RecordBatch],
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]] | None:
    """A journal's schema and batches, streamed (None: it holds no batch); a journal of
    format 1 (no request hash) gets a null one."""
    if (first := next(batches, None)) is None:
        return None
    batches = itertools.chain([first], batches)
    if REQUEST_HASH.name in first.schema.names:
        return first.schema, batches
    schema = first.schema.append(REQUEST_HASH)
    return schema, (
        pa.record_batch([*b.columns, pa.nulls(b.num_rows, REQUEST_HASH.type)], schema=schema)
        for b in batches
    )


def move_aside(path: Path) -> Path | None:
    """``--fresh``: rename an existing output to ``<path>.old-<time>``; refuse while a run
    holds its lock. Returns the new name, or None when there was nothing to move."""
    layout = OutputLayout(path)
    if not path.exists() or not (any(path.iterdir()) or any(layout.state.iterdir())):
        return None
    if not _free(layout.lock()):
        raise OutputError(f"{path}: another run is writing this output; stop it first")
    aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    os.replace(layout.state, state_of(aside))  # (its state goes with it)
    return aside
