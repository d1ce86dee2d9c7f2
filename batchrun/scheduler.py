"""``Scheduler.run()``: read → build requests → pace → call → write, with bounded queues.

::

    feed ──todo (bounded)──▶ workers × concurrency ──done (bounded)──▶ writer ──▶ Store
     │                          │ pacer slot per attempt                 │ journal, parts,
     └ skips done ids           └ retry with backoff                     └ progress bar

The queues give back-pressure, so memory stays flat on any input size. Only the writer touches
the store and the progress bar. A fatal answer (401/403/404) cancels the feed and the workers at
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
from batchrun.pacing import Pacer
from batchrun.payloads import Item, PayloadBuilder, Request
from batchrun.progress import Progress
from batchrun.results import chat_row, embedding_row, failed_row
from batchrun.retry import RetryPolicy, backoff_delay
from batchrun.sources import read_records
from batchrun.stats import RunStats
from batchrun.store import Store

Row = dict[str, Any]
Sleep = Callable[[float], Awaitable[None]]


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
    grace_s: float = 10.0
    part_rows: int = 20_000
    part_seconds: float = 300.0


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
    ) -> None:
        self._plan = plan
        self._job = plan.job
        self._service = service
        self._store = store
        self._stats = stats
        self._progress = progress
        self._sleep = sleep
        self._rng = rng or random.Random()
        run = plan.job.spec.run
        self._policy = RetryPolicy(
            run.max_attempts, run.backoff_base_s, run.backoff_max_s, run.server_error_wait_s
        )
        self._concurrency = run.concurrency
        self._todo: asyncio.Queue[Request | None] = asyncio.Queue(2 * self._concurrency)
        self._done: asyncio.Queue[list[Row] | None] = asyncio.Queue(4 * self._concurrency)
        self._pacers: dict[str, Pacer] = {}
        self._feeder: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._next_model = 0
        vector = plan.schema.field("embedding").type if "embedding" in plan.schema.names else None
        self._dimensions: int | None = getattr(vector, "list_size", None)

    async def run(self) -> None:
        """Do every row of the plan; raise FatalError (after writing what is done) on a fatal
        answer."""
        self._pacers = {name: Pacer(self._job.rps[name]) for name in self._job.models}
        errors: list[Exception] = []
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write())
            group.create_task(self._produce(errors))
        if errors:
            raise errors[0]

    def request_stop(self) -> None:
        """First call: take no new rows, let requests in flight finish within ``grace_s``.
        Second call: cancel requests in flight now. Answered rows are written either way."""
        loop = asyncio.get_running_loop()
        if not self._stopping:
            self._stopping = True
            if self._feeder is not None:
                self._feeder.cancel()
            loop.call_later(self._plan.grace_s, self._cancel_workers)
        else:
            self._cancel_workers()

    @property
    def stopped(self) -> bool:
        return self._stopping

    def _cancel_workers(self) -> None:
        for worker in self._workers:
            worker.cancel()

    async def _produce(self, errors: list[Exception]) -> None:
        """Feed and workers; their first error is kept for ``run()`` to raise after the writer
        has written every row already answered."""
        try:
            async with asyncio.TaskGroup() as group:
                self._feeder = group.create_task(self._feed())
                self._workers = [group.create_task(self._work()) for _ in range(self._concurrency)]
        except* Exception as group_error:
            errors.extend(_flatten(group_error))
        finally:
            await self._done.put(None)

    async def _feed(self) -> None:
        try:
            for requests, unsendable in self._requests():
                if unsendable:
                    await self._done.put([self._failed(i, None, why) for i, why in unsendable])
                for request in requests:
                    await self._todo.put(request)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            while not self._todo.empty():  # not sent: the next run does these rows
                self._todo.get_nowait()
        for _ in range(self._concurrency):
            await self._todo.put(None)

    def _requests(self) -> Iterator[tuple[list[Request], list[tuple[Item, str]]]]:
        """Requests for the rows not yet done, up to the plan's limit."""
        plan, builder = self._plan, PayloadBuilder(self._job)
        left = plan.limit if plan.limit is not None else -1
        id_column = self._job.spec.input.id
        for records in read_records(plan.files, id_column, self._job.input_columns):
            todo = [r for r in records if r.id not in plan.done_ids]
            self._stats.rows_skipped += len(records) - len(todo)
            if left >= 0:
                todo, left = todo[:left], left - min(left, len(todo))
            if todo:
                yield builder.build(todo)
            if left == 0:
                return

    async def _work(self) -> None:
        while (request := await self._todo.get()) is not None:
            rows = await self._send(request)
            await self._done.put(rows)

    async def _send(self, request: Request) -> list[Row]:
        """Try ``request`` until it is answered, fails for good, or its attempts run out."""
        model = self._pick_model()
        stats = self._stats.model(model)
        while True:
            await self._pacers[model].slot()
            request.attempts += 1
            stats.requests += 1
            started = time.monotonic()
            try:
                answer = await self._call(model, request.body)
            except RetryableError as exc:
                self._stats.retryable(model, exc)
                if request.attempts >= self._policy.max_attempts:
                    error = f"gave up after {request.attempts} attempts: {exc}"
                    return [self._failed(i, model, error, request.attempts) for i in request.items]
                stats.retries += 1
                await self._sleep(backoff_delay(request.attempts, self._policy, self._rng, exc))
                continue
            except RowError as exc:
                stats.errors[str(exc.status)] += 1
                return await self._row_error(request, model, exc)
            stats.answered += 1
            return self._rows(request, model, answer, time.monotonic() - started)

    async def _row_error(self, request: Request, model: str, error: RowError) -> list[Row]:
        """A 400 fails a single row; a packed embeddings request is split in halves to find
        the inputs the service rejects, so the others still get their vectors."""
        if len(request.items) == 1 or self._job.kind != "embeddings":
            return [self._failed(i, model, str(error), request.attempts) for i in request.items]
        middle = len(request.items) // 2
        halves = (request.items[:middle], request.items[middle:])
        rows: list[Row] = []
        for items in halves:
            body = {**request.body, "input": [item.text for item in items]}
            rows += await self._send(Request(items, body))
        return rows

    def _pick_model(self) -> str:
        models = self._job.models
        self._next_model = (self._next_model + 1) % len(models)
        return models[self._next_model]

    async def _call(self, model: str, body: dict[str, Any]) -> ChatAnswer | EmbeddingAnswer:
        if self._job.kind == "embeddings":
            return await self._service.embed(model, body)
        return await self._service.chat(model, body, stream=self._job.spec.run.stream)

    def _rows(
        self, request: Request, model: str, answer: ChatAnswer | EmbeddingAnswer, latency: float
    ) -> list[Row]:
        schema, stats = self._plan.schema, self._stats.model(model)
        if isinstance(answer, ChatAnswer):
            stats.prompt_tokens += answer.prompt_tokens or 0
            stats.completion_tokens += answer.completion_tokens or 0
            return [chat_row(request.items[0], schema, model, answer, request.attempts, latency)]
        stats.prompt_tokens += answer.prompt_tokens or 0
        shares = _token_shares(answer.prompt_tokens, [item.text for item in request.items])
        wrong = [len(v) for v in answer.vectors if self._dimensions not in (None, len(v))]
        if wrong:
            error = f"the service sent {wrong[0]} numbers per vector, not {self._dimensions}"
            return [self._failed(i, model, error, request.attempts) for i in request.items]
        return [
            embedding_row(item, schema, model, vector, tokens, request.attempts)
            for item, vector, tokens in zip(request.items, answer.vectors, shares, strict=True)
        ]

    def _failed(self, item: Item, model: str | None, error: str, attempts: int = 0) -> Row:
        return failed_row(item, self._plan.schema, model, error, attempts)

    async def _write(self) -> None:
        """The only task that touches the store and the progress bar."""
        store, stats = self._store, self._stats
        sealed_at = time.monotonic()
        finished = False
        while not finished and (rows := await self._done.get()) is not None:
            while not self._done.empty():  # take whatever else is ready: fewer, larger writes
                more = self._done.get_nowait()
                if more is None:
                    finished = True
                    break
                rows += more
            store.append(rows)
            failed = sum(row["status"] == "failed" for row in rows)
            stats.rows_failed += failed
            stats.rows_ok += len(rows) - failed
            self._progress.advance(len(rows))
            if store.rows_in_journal >= self._plan.part_rows or (
                time.monotonic() - sealed_at >= self._plan.part_seconds
            ):
                await asyncio.to_thread(store.seal)
                sealed_at = time.monotonic()


def _flatten(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The errors of a group, fatal ones first."""
    flat: list[Exception] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            flat += _flatten(error)
        else:
            flat.append(error)
    return sorted(flat, key=lambda e: not isinstance(e, FatalError))


def _token_shares(total: int | None, texts: list[str]) -> list[int | None]:
    """A packed request's prompt tokens shared among its inputs by length."""
    if total is None:
        return [None] * len(texts)
    length = sum(len(t) for t in texts) or 1
    return [round(total * len(t) / length) for t in texts]
