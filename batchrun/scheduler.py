"""``Scheduler.run()``: read → build requests → pace → call → write, with bounded queues.

::

    feed ──todo (bounded)──▶ workers ──done (bounded)──▶ writer ──▶ Store
     │ skips done ids          │ in-flight gate, then a pacer slot    │ journal, parts,
     └ packs, dedups           └ per attempt; retry with backoff      └ progress bar

The queues give back-pressure, so memory stays flat on any input size. Only the writer
(``batchrun.writer``) touches the store and the progress bar. A model pool sends each attempt
to the model whose next slot is nearest; a row that its model keeps failing with 5xx/429 moves
to ``[run].fallback_model``. A fatal answer (401/403/404) cancels the feed and the workers at
once; the writer still writes every row already answered, then the error is raised.
``request_stop()`` (first Ctrl-C) stops the feed and gives requests in flight ``grace_s``; a
second call cancels them at once. Rows cancelled in flight are simply not written: the next run
sends them again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from batchrun.answers import ChatAnswer, EmbeddingAnswer
from batchrun.errors import FatalError, RetryableError, RowError
from batchrun.job import Job
from batchrun.pacing import InFlight, Pacer
from batchrun.payloads import Built, Duplicates, PayloadBuilder, Request
from batchrun.progress import Progress
from batchrun.results import Row, RowMaker
from batchrun.retry import SERVER_ERRORS, RetryPolicy, backoff_delay
from batchrun.shards import Shard
from batchrun.sources import RecordReader
from batchrun.stats import RunStats
from batchrun.store import Store
from batchrun.writer import Writer

Sleep = Callable[[float], Awaitable[None]]
Answer = ChatAnswer | EmbeddingAnswer
FALLBACK_STATUSES = SERVER_ERRORS | {429, 504}
DONE_QUEUE = 64
"""Answered requests waiting for the writer; each may hold a packed batch of vectors."""


class Service(Protocol):
    """What the scheduler needs of the API client (``batchrun.client.Api`` or a test fake)."""

    async def chat(
        self, model: str, body: dict[str, Any], *, stream: bool = False
    ) -> ChatAnswer: ...

    async def embed(self, model: str, body: dict[str, Any]) -> EmbeddingAnswer: ...


@dataclass
class Plan:
    """What one run does: which job, which files, which rows are already done."""

    job: Job
    files: list[Path]
    schema: pa.Schema
    done_ids: set[str] = field(default_factory=set)
    limit: int | None = None
    part_rows: int = 20_000
    part_seconds: float = 300.0
    shard: Shard | None = None


class Scheduler:
    """Runs one Plan against a Service into a Store."""

    def __init__(
        self,
        plan: Plan,
        service: Service,
        store: Store,
        stats: RunStats,
        progress: Progress,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        make_pacer: Callable[[str, float], Pacer] = lambda model, rps: Pacer(rps),
    ) -> None:
        self._plan, self._job, self._service = plan, plan.job, service
        self._make_pacer = make_pacer
        self._store, self._stats, self._progress = store, stats, progress
        self._sleep = sleep
        self._rng = rng or random.Random()
        run = plan.job.spec.run
        self._policy = RetryPolicy(
            run.max_attempts, run.backoff_base_s, run.backoff_max_s, run.server_error_wait_s
        )
        self._workers_wanted = plan.job.concurrency or run.max_in_flight
        self._todo: asyncio.Queue[Request | None] = asyncio.Queue(2 * self._workers_wanted)
        self._done: asyncio.Queue[list[Row] | None] = asyncio.Queue(DONE_QUEUE)
        self._duplicates = Duplicates()
        self._rows = RowMaker(plan.schema, self._duplicates)
        self._pacers: dict[str, Pacer] = {}
        self._gate: InFlight | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._feeding = False
        self._unqueued: list[Row] = []

    async def run(self) -> None:
        """Do every row of the plan; after writing what is done, raise the first error."""
        self._pacers = {name: self._make_pacer(name, rps) for name, rps in self._job.rps.items()}
        pool = [self._pacers[name] for name in self._job.models]
        self._gate = InFlight(pool, self._job.spec.run.max_in_flight, self._job.concurrency)
        errors: list[Exception] = []
        plan = self._plan
        writer = Writer(
            self._store, plan.schema, self._stats, self._progress, plan.part_rows, plan.part_seconds
        )
        try:
            async with asyncio.TaskGroup() as group:
                self._writer = group.create_task(writer.run(self._done))
                group.create_task(self._produce(errors))
        except* Exception as writer_errors:  # the output cannot be written: stop, say where
            errors[:0] = _flatten(writer_errors)
        for name, pacer in self._pacers.items():
            if name in self._stats.models:
                self._stats.models[name].rate = pacer.rate
        self._stats.saved_by_dedup = self._duplicates.saved
        if errors:
            raise errors[0]

    def request_stop(self) -> None:
        """First call: take no new rows, let requests in flight finish within ``grace_s``.
        Second call: cancel requests in flight now. Answered rows are written either way."""
        if not self._stopping:
            self._stopping = True
            if self._feeder is not None and self._feeding:
                self._feeder.cancel()
            self._drop_queued_requests()
            grace = self._job.spec.run.grace_s
            asyncio.get_running_loop().call_later(grace, self._cancel_workers)
        else:
            self._cancel_workers()

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
            errors.extend(_flatten(group_error))
        finally:
            # Shielded: on Python 3.11 a failed TaskGroup may leave a cancellation pending on
            # this task, which must not keep the writer from its end-of-rows marker.
            if self._writer is not None and not self._writer.done():
                await asyncio.shield(self._hand_over_last_rows())

    async def _feed(self) -> None:
        self._feeding = True
        try:
            for built in self._built():
                ready = [self._rows.unsendable(item, why) for item, why in built.unsendable]
                ready += [self._rows.reused(*reuse) for reuse in built.reused]
                if ready:
                    await self._done.put(ready)
                for request in built.requests:
                    await self._todo.put(request)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        self._feeding = False
        for _ in range(self._workers_wanted):
            await self._todo.put(None)

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

    def _built(self) -> Iterator[Built]:
        """Requests for the rows not yet done, up to the plan's limit."""
        plan, builder = self._plan, PayloadBuilder(self._job, self._duplicates)
        left = plan.limit if plan.limit is not None else -1
        reader = RecordReader(
            plan.files,
            self._job.spec.input.id,
            self._job.input_columns,
            skip=plan.done_ids,
            shard=plan.shard,
        )
        for todo in reader:
            self._stats.rows_skipped = reader.skipped
            if left >= 0:
                todo, left = todo[:left], left - min(left, len(todo))
            if todo:
                yield builder.build(todo)
            if left == 0:
                break
        self._stats.rows_skipped = reader.skipped
        yield builder.finish()

    async def _work(self) -> None:
        while (request := await self._todo.get()) is not None:
            rows = await self._send(request)
            try:
                await self._done.put(rows)
            except asyncio.CancelledError:  # stopped while the writer was busy: keep the rows
                self._unqueued += rows
                raise

    async def _send(self, request: Request) -> list[Row]:
        """Try ``request`` until it is answered, fails for good, or its attempts run out."""
        streak, fallback = 0, False
        while True:
            pinned = self._job.fallback if fallback else None
            try:
                model, answer, latency = await self._attempt(request, pinned)
            except _Failed as failure:
                model, exc = failure.model, failure.error
                if isinstance(exc, RowError):
                    return await self._row_error(request, model, exc)
                if request.attempts >= self._policy.max_attempts:
                    error = f"gave up after {request.attempts} attempts: {exc}"
                    return self._rows.failed(request, model, error)
                streak = streak + 1 if exc.status in FALLBACK_STATUSES else 0
                fallback = fallback or streak >= self._job.spec.run.fallback_after
                self._stats.model(model).retries += 1
                await self._sleep(backoff_delay(request.attempts, self._policy, self._rng, exc))
                continue
            return self._rows.answered(request, model, answer, latency)

    async def _attempt(self, request: Request, pinned: str | None) -> tuple[str, Answer, float]:
        """One try: an in-flight place, then the pool's model with the nearest slot (or the
        pinned one), its pacing slot, the call; counted and fed back into the pacer (429s slow
        it) and the in-flight controller (latency). Raises _Failed naming the model."""
        assert self._gate is not None
        async with self._gate.permit() as sent:
            model = pinned or self._choose()
            pacer, stats = self._pacers[model], self._stats.model(model)
            await pacer.slot()
            sent()
            request.attempts += 1
            stats.requests += 1
            started = time.monotonic()
            try:
                answer = await self._call(model, request.body)
            except RetryableError as exc:
                self._stats.retryable(model, exc)
                if exc.throttled:
                    pacer.throttled()
                raise _Failed(model, exc) from None
            except RowError as exc:
                stats.errors[str(exc.status)] += 1
                raise _Failed(model, exc) from None
            latency = time.monotonic() - started
        pacer.answered()
        self._gate.observe(latency)
        stats.answered += 1
        stats.rate = pacer.rate
        stats.prompt_tokens += answer.prompt_tokens or 0
        if isinstance(answer, ChatAnswer):
            stats.completion_tokens += answer.completion_tokens or 0
        return model, answer, latency

    def _choose(self) -> str:
        """The pool's model whose next send slot is nearest."""
        models = self._job.models
        if len(models) == 1:
            return models[0]
        return min(models, key=lambda name: self._pacers[name].expected_wait())

    async def _row_error(self, request: Request, model: str, error: RowError) -> list[Row]:
        """A 400 fails a single row; a packed embeddings request is split in halves to find
        the inputs the service rejects, so the others still get their vectors."""
        if len(request.items) == 1 or self._job.kind != "embeddings":
            return self._rows.failed(request, model, str(error))
        middle = len(request.items) // 2
        rows: list[Row] = []
        for items in (request.items[:middle], request.items[middle:]):
            body = {**request.body, "input": [item.text for item in items]}
            rows += await self._send(Request(items, body))
        return rows

    async def _call(self, model: str, body: dict[str, Any]) -> Answer:
        if self._job.kind == "embeddings":
            return await self._service.embed(model, body)
        return await self._service.chat(model, body, stream=self._job.spec.run.stream)


class _Failed(Exception):
    """An attempt failed on ``model`` with a retryable or row error."""

    def __init__(self, model: str, error: RetryableError | RowError) -> None:
        super().__init__(str(error))
        self.model = model
        self.error = error


def _flatten(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The errors of a group, fatal ones first."""
    flat: list[Exception] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            flat += _flatten(error)
        else:
            flat.append(error)
    return sorted(flat, key=lambda e: not isinstance(e, FatalError))
