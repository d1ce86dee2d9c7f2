"""``Scheduler.run()``: the pipeline, read → build requests → send → write, with bounded queues.

::

    feed ──todo (bounded)──▶ workers ──done (bounded)──▶ writer ──▶ Store
     │ reads rows not done     │ Sender: in-flight gate, pacing     │ journal, parts,
     └ the task builds         └ slot, call, retry, split           └ progress bar
       requests

The queues give back-pressure, so memory stays flat on any input size. Only the writer
(``batchrun.send.writer``) touches the store and the progress bar. A fatal answer
(401/403/404) cancels the feed and the workers at once; the writer still writes every row
already answered, then the error is raised. ``request_stop()`` (first Ctrl-C) stops the feed,
drops every request not yet sent (queued, or waiting for a place, a slot or a retry) and gives
requests in flight ``grace_s``; a second call cancels them at once. Rows cancelled in
flight are simply not written: the next run sends them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun.errors import fatal_first
from batchrun.input.readers import RecordReader
from batchrun.input.selection import Selection
from batchrun.job.spec import Job
from batchrun.output.rows import OutputRow
from batchrun.send.sender import NotSent, Sender
from batchrun.send.stats import RunStats
from batchrun.send.writer import Writer
from batchrun.tasks.base import Built, Request, Task

DONE_QUEUE = 16
"""Answered requests waiting for the writer; each may hold a packed batch of vectors."""


@dataclass(frozen=True)
class Plan:
    """Which rows one run reads: the job's input files, and of them only ``rows`` (the rows
    left to do, as ``batchrun.plan.diff`` lists them; None: every row), up to ``limit``."""

    job: Job
    files: list[Path]
    rows: Selection | None = None
    limit: int | None = None


class Scheduler:
    """Runs one Plan: the task builds requests, the sender sends them, the writer writes."""

    def __init__(
        self,
        plan: Plan,
        task: Task[Any],
        sender: Sender[Any],
        writer: Writer,
        stats: RunStats,
    ) -> None:
        self._plan, self._task, self._sender = plan, task, sender
        self._writer, self._stats = writer, stats
        self._grace_s = plan.job.spec.run.grace_s
        self._workers_wanted = plan.job.spec.run.most_in_flight
        self._todo: asyncio.Queue[Request | None] = asyncio.Queue(2 * self._workers_wanted)
        self._done: asyncio.Queue[list[OutputRow] | None] = asyncio.Queue(DONE_QUEUE)
        self._feeder: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._feeding = False
        self._unqueued: list[OutputRow] = []

    async def run(self) -> None:
        """Do every row of the plan; after writing what is done, raise the first error."""
        errors: list[Exception] = []
        try:
            async with asyncio.TaskGroup() as group:
                self._writing = group.create_task(self._writer.run(self._done))
                group.create_task(self._produce(errors))
        except* Exception as writer_errors:  # the output cannot be written: stop, say where
            errors[:0] = fatal_first(writer_errors)
        for name, rate in self._sender.settled_rates().items():
            if name in self._stats.models:
                self._stats.models[name].rate = rate
        self._stats.saved_by_dedup = self._task.saved
        if errors:
            raise errors[0]

    def request_stop(self) -> None:
        """First call: take no new rows, let requests in flight finish within ``grace_s``.
        Second call: cancel requests in flight now. Answered rows are written either way."""
        if self._stopping:
            self._cancel_workers()
            return
        self._stopping = True
        self._sender.stop()
        if self._feeder is not None and self._feeding:
            self._feeder.cancel()
        self._drop_queued_requests()
        asyncio.get_running_loop().call_later(self._grace_s, self._cancel_workers)

    @property
    def stopped(self) -> bool:
        return self._stopping

    def _cancel_workers(self) -> None:
        for worker in self._workers:
            worker.cancel()

    async def _produce(self, errors: list[Exception]) -> None:
        """Feed and workers; their errors are kept for ``run()`` to raise after the writer
        has written every row already answered."""
        try:
            async with asyncio.TaskGroup() as group:
                self._feeder = group.create_task(self._feed())
                self._workers = [
                    group.create_task(self._work()) for _ in range(self._workers_wanted)
                ]
        except* Exception as group_error:
            errors.extend(fatal_first(group_error))
        finally:
            # Shielded: on Python 3.11 a failed TaskGroup may leave a cancellation pending on
            # this task, which must not keep the writer from its end-of-rows marker.
            if self._writing is not None and not self._writing.done():
                await asyncio.shield(self._hand_over_last_rows())

    async def _feed(self) -> None:
        self._feeding = True
        try:
            await self._feed_requests()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        self._feeding = False
        for _ in range(self._workers_wanted):
            await self._todo.put(None)

    async def _feed_requests(self) -> None:
        for built in self._built():
            if built.rows:
                await self._done.put(built.rows)
            for request in built.requests:
                if self._stopping:  # a stop that came before the feed could be cancelled
                    return
                await self._todo.put(request)

    def _built(self) -> Iterator[Built]:
        """Requests for the rows not yet done, up to the plan's limit."""
        plan, job = self._plan, self._plan.job
        left = plan.limit if plan.limit is not None else -1
        reader = RecordReader(plan.files, job.id_column, job.input_columns, only=plan.rows)
        for todo in reader:
            if left >= 0:
                todo, left = todo[:left], left - min(left, len(todo))
            if todo:
                yield self._task.build(todo)
            if left == 0:
                break
        yield self._task.finish()

    async def _work(self) -> None:
        while (request := await self._todo.get()) is not None:
            try:
                rows = await self._sender.send(request)
            except NotSent:
                continue
            try:
                await self._done.put(rows)
            except asyncio.CancelledError:  # stopped while the writer was busy: keep the rows
                self._unqueued += rows
                raise

    async def _hand_over_last_rows(self) -> None:
        """Give the writer the rows of workers stopped before they could, then the end."""
        if self._unqueued:
            await self._done.put(self._unqueued)
        await self._done.put(None)

    def _drop_queued_requests(self) -> None:
        """On a stop, requests no worker has taken are not sent (the next run does them)."""
        markers = 0
        while not self._todo.empty():
            markers += self._todo.get_nowait() is None
        for _ in range(markers):
            self._todo.put_nowait(None)
