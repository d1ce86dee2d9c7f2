"""One request's lifecycle: an in-flight place, a model, its pacing slot, the call, and after
a failure what ``send.retry.decide`` says: retry after a delay (perhaps on the fallback
model), split a rejected packed request to find the rows at fault, or give up and write the
rows as failed. Fatal errors (401/403/404) pass through and stop the run.

Every attempt is counted in ``RunStats``, traced (``observe``: the run's event log) and fed
back: a 429 slows the model's pacer, an answer's latency sizes the in-flight limit (Little's
law). A model pool sends each attempt to the model whose next slot is nearest. An answer the
task cannot use (``Reask``: not valid against the job's schema) is asked again, each re-ask
an attempt with its own pacing slot, up to ``[run].max_reasks`` times (re-asks do not use up
``max_attempts``, which counts the tries that failed); then the rows fail with the reason.

``stop()`` (the first Ctrl-C) drops every request not yet sent: one waiting for an in-flight
place, a pacing slot or a retry's delay raises ``NotSent``; requests in flight may finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic

from batchrun.clock import Sleep
from batchrun.errors import ApiError, FatalError, RetryableError, RowError
from batchrun.job.spec import Job
from batchrun.output.events import ANSWERED, INVALID, Attempt, Hold
from batchrun.output.rows import OutputRow
from batchrun.send.inflight import InFlight
from batchrun.send.pacing import Pacer
from batchrun.send.rejections import RejectionWatch
from batchrun.send.retry import Action, RetryPolicy, decide
from batchrun.send.stats import RunStats
from batchrun.service.ratelimits import Quota
from batchrun.service.statuses import THROTTLED, falls_back
from batchrun.tasks.base import AnswerT, Reask, Request, Service, Task

PacerFactory = Callable[[str, float], Pacer]


class NotSent(Exception):
    """A stop came before the request was sent: it is not sent, its rows not written (the
    next run does them)."""


class Sender(Generic[AnswerT]):
    """Sends requests of one task to one service, under the job's pacing and retry policy."""

    def __init__(
        self,
        task: Task[AnswerT],
        service: Service,
        pacers: Mapping[str, Pacer],
        gate: InFlight,
        *,
        models: tuple[str, ...],
        fallback: str | None,
        policy: RetryPolicy,
        stats: RunStats,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        rejections: RejectionWatch | None = None,
        max_reasks: int = 0,
        observe: Callable[[Attempt | Hold], None] = lambda attempt: None,
        on_wait: Callable[[str, float, float], None] = lambda model, asked, wait: None,
    ) -> None:
        self._task, self._service = task, service
        self._on_wait = on_wait
        """Told (model, seconds asked, seconds waited) when the service says how long to
        wait (``Retry-After``): the bar and a line say why the model waits."""
        self._pacers, self._gate = pacers, gate
        self._models, self._fallback = models, fallback
        self._policy, self._stats = policy, stats
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rejections = rejections or RejectionWatch({})
        self._max_reasks = max_reasks
        self._observe = observe
        self._stopped = False
        self._waiting: set[asyncio.Task[Any]] = set()
        """Tasks waiting to send a request (a place, a slot, a retry's delay)."""
        for model, pacer in pacers.items():
            pacer.on_hold = functools.partial(_traced_hold, observe, model)

    @classmethod
    def for_job(
        cls,
        job: Job,
        task: Task[AnswerT],
        service: Service,
        stats: RunStats,
        *,
        make_pacer: PacerFactory = lambda model, rps: Pacer(rps),
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        observe: Callable[[Attempt | Hold], None] = lambda attempt: None,
        on_wait: Callable[[str, float, float], None] = lambda model, asked, wait: None,
    ) -> Sender[AnswerT]:
        """A sender with a pacer per model of ``job`` and its in-flight gate."""
        run = job.spec.run
        pacers = {name: make_pacer(name, rps) for name, rps in job.rps.items()}
        pool = [pacers[name] for name in job.models]
        gate = InFlight(pool, run.max_in_flight, run.fixed_in_flight)
        policy = RetryPolicy.from_run(run)
        return cls(
            task, service, pacers, gate, models=job.models, fallback=job.fallback,
            policy=policy, stats=stats, sleep=sleep, rng=rng,
            rejections=RejectionWatch(job.spec.params), max_reasks=run.max_reasks,
            observe=observe, on_wait=on_wait,
        )  # fmt: skip

    async def send(self, request: Request) -> list[OutputRow]:
        """Try ``request`` until it is answered, fails for good, or its attempts run out."""
        streak, pinned = 0, None
        while True:
            try:
                return await self._attempt(request, pinned)
            except Reask as reask:
                if request.reasks >= self._max_reasks:
                    error = f"{reask.reason} (after {request.reasks} re-asks)"
                    return self._task.failed(request, reask.model, error)
                request.reasks += 1
                self._stats.model(reask.model or self._models[0]).reasks += 1
                request.body = reask.body
                continue
            except (RetryableError, RowError) as error:
                failure = error
            model = failure.model or request.model or self._models[0]  # (_attempt names it)
            if isinstance(failure, RetryableError) and failure.window_reset is not None:
                _check_quota_left(model, failure.window_reset)
                request.attempts -= 1  # a window ran out: not this request's fault
            streak = streak + 1 if falls_back(failure) else 0
            halves = self._task.split(request) if isinstance(failure, RowError) else []
            decision = decide(
                failure, request.attempts - request.reasks, streak, self._policy, self._rng,
                splittable=bool(halves),
            )  # fmt: skip
            if decision.action is Action.GIVE_UP:
                if isinstance(failure, RowError):
                    self._rejections.rejected(model, failure)
                return self._task.failed(request, model, decision.reason)
            if decision.action is Action.SPLIT:
                return await self._send_halves(halves)
            if decision.fallback and self._fallback:
                pinned = self._fallback
            await self._before_retry(model, failure, decision.delay)

    async def _before_retry(self, model: str, failure: ApiError, delay: float) -> None:
        """Count the retry, say a wait the service asked for, and wait (a stop meanwhile
        drops the request: it is not sent again)."""
        self._stats.model(model).retries += 1
        if isinstance(failure, RetryableError) and failure.retry_after is not None:
            self._on_wait(model, failure.retry_after, delay)
        with self._unsent():
            await self._sleep(delay)

    async def _send_halves(self, halves: list[Request]) -> list[OutputRow]:
        """The rows of each half in turn; after a stop, those of the halves already done."""
        rows: list[OutputRow] = []
        for half in halves:
            try:
                rows += await self.send(half)
            except NotSent:
                if not rows:
                    raise
                break
        return rows

    async def _attempt(self, request: Request, pinned: str | None) -> list[OutputRow]:
        """One try: an in-flight place, then the pool's model with the nearest slot (or the
        pinned one), its pacing slot, the call; counted, traced and fed back. A failure
        raises the service's error with ``model`` set."""
        async with contextlib.AsyncExitStack() as stack:
            with self._unsent():
                sent = await stack.enter_async_context(self._gate.permit())
                model = pinned or request.model or self._choose()
                pacer, stats = self._pacers[model], self._stats.model(model)
                await pacer.slot()
            sent()
            request.attempts += 1
            sent_at, started = time.time(), time.monotonic()
            stats.sent(started)
            self._stats.in_flight += 1
            try:
                answer = await self._task.call(self._service, model, request.body)
            except ApiError as error:
                error.model = error.model or model
                self._count_failure(pacer, error)
                outcome = str(error.status) if error.status else "no answer"
                self._trace(request, model, sent_at, time.monotonic() - started, outcome)
                raise
            finally:
                self._stats.in_flight -= 1
            latency = time.monotonic() - started
        pacer.answered(answer.quota)
        self._rejections.answered(model)
        self._gate.observe(latency)
        stats.answered += 1
        stats.rate = pacer.rate
        stats.prompt_tokens += answer.prompt_tokens or 0
        stats.completion_tokens += answer.completion_tokens or 0
        tokens = (answer.prompt_tokens, answer.completion_tokens)
        quota = _quota_fields(answer.quota, pacer.window_left())
        try:
            rows = self._task.answered(request, model, answer, latency)
        except Reask as reask:
            reask.model = model
            self._trace(request, model, sent_at, latency, INVALID, tokens, quota)
            raise
        self._trace(request, model, sent_at, latency, ANSWERED, tokens, quota)
        return rows

    def _trace(
        self,
        request: Request,
        model: str,
        sent_at: float,
        latency: float,
        outcome: str,
        tokens: tuple[int | None, int | None] = (None, None),
        quota: QuotaFields = (None, None, None, None),
    ) -> None:
        limit, remaining, reset_s, window_left = quota
        attempt = Attempt(
            sent_at, latency, model, outcome, request.attempts, *tokens, len(request.items),
            limit, remaining, reset_s, window_left,
        )  # fmt: skip
        self._observe(attempt)

    def _count_failure(self, pacer: Pacer, error: ApiError) -> None:
        assert error.model is not None
        if isinstance(error, RetryableError):
            self._stats.retryable(error.model, error)
            if error.status == THROTTLED:
                pacer.throttled(error.window_reset)
        elif isinstance(error, RowError):
            self._stats.model(error.model).errors[str(error.status)] += 1

    def _choose(self) -> str:
        """The pool's model whose next send slot is nearest."""
        if len(self._models) == 1:
            return self._models[0]
        return min(self._models, key=lambda name: self._pacers[name].expected_wait())

    def stop(self) -> None:
        """A stop (the first Ctrl-C): requests not yet sent are not sent. Those waiting for an
        in-flight place, a pacing slot or a retry's delay raise ``NotSent`` now; the rest
        raise it when they would wait. Requests already sent are left to finish."""
        self._stopped = True
        for task in self._waiting:
            task.cancel()

    @contextlib.contextmanager
    def _unsent(self) -> Iterator[None]:
        """A wait before a request is sent, which a stop ends with ``NotSent``."""
        if self._stopped:
            raise NotSent
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            yield
        except asyncio.CancelledError:
            # Ours (a stop) unless the task is cancelled for another reason too.
            if not self._stopped or task.uncancel() > 0:
                raise
            raise NotSent from None
        finally:
            self._waiting.discard(task)

    def settled_rates(self) -> dict[str, float]:
        """The pacing rate each model settled on."""
        return {name: pacer.rate for name, pacer in self._pacers.items()}


QuotaFields = tuple[int | None, int | None, float | None, float | None]
"""An answer's stated limit, remaining and reset, and the window end the pacer estimated."""


def _quota_fields(quota: Quota | None, window_left: float | None) -> QuotaFields:
    if quota is None:
        return (None, None, None, window_left)
    return (quota.limit, quota.remaining, quota.reset_s, window_left)


def _traced_hold(
    observe: Callable[[Attempt | Hold], None], model: str, seconds: float, reason: str
) -> None:
    """A pacer's hold, into the run's trace."""
    observe(Hold(time.time(), model, seconds, reason))


QUOTA_SPENT_S = 600.0
"""A window that resets further out than this is a spent quota (a day's, say), not a pause."""


def _check_quota_left(model: str, reset_s: float) -> None:
    """Stop the run (nothing is lost) when the service says the quota is spent for long."""
    if reset_s > QUOTA_SPENT_S:
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + reset_s))
        raise FatalError(
            f"the service's quota for {model} is spent until about {until}; run the same "
            "command again then (what is done is kept)"
        )
