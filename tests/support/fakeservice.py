"""A scripted service in place of the client, and the whole pipeline (plan, sender, writer,
scheduler) run against it in the test's directory with the sleep injected: no HTTP, no real
waiting."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrun.input.readers import input_files
from batchrun.job.spec import Job
from batchrun.output.store import Store
from batchrun.send.progress import Progress
from batchrun.send.scheduler import Plan, Scheduler
from batchrun.send.sender import Sender
from batchrun.send.stats import RunStats
from batchrun.send.writer import Writer
from batchrun.service.answers import ChatAnswer, EmbeddingAnswer, RawAnswer
from batchrun.tasks import job_schema, task_for
from tests.support.outputs import read_columns

Script = Callable[[str, dict[str, Any], int], Any]


class FakeService:
    """Answers by a script: ``script(model, body, call_number)`` returns an answer or an
    exception to raise."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []

    async def _answer(self, model: str, body: dict[str, Any]) -> Any:
        self.calls.append(body)
        outcome = self.script(model, body, len(self.calls))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def chat(self, model: str, body: dict[str, Any], *, stream: bool = False) -> ChatAnswer:
        answer: ChatAnswer = await self._answer(model, body)
        return answer

    async def embed(self, model: str, body: dict[str, Any]) -> EmbeddingAnswer:
        answer: EmbeddingAnswer = await self._answer(model, body)
        return answer

    async def post(self, path: str, model: str, body: dict[str, Any]) -> RawAnswer:
        answer: RawAnswer = await self._answer(model, body)
        return answer


class Sleeps:
    """The sender's sleep: notes each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def run_fake(
    job: Job, service: FakeService, sleeps: Sleeps | None = None, **sender_options: Any
) -> pa.Table:
    """Run ``job`` against ``service`` (``sender_options`` go to ``Sender.for_job``); the
    output it wrote, sorted by id."""
    schema = job_schema(job, {"title": pa.string()})
    store = Store(Path(job.spec.output.path), schema).open()
    stats = RunStats()
    plan = Plan(job, input_files(job.spec.input.path))
    task = task_for(job, schema)
    sleep = sleeps or Sleeps()
    sender = Sender.for_job(
        job, task, service, stats, sleep=sleep, rng=random.Random(1), **sender_options
    )
    writer = Writer(store, schema, stats, Progress(stats, enabled=False), 20_000, 300.0)
    scheduler = Scheduler(plan, task, sender, writer, stats)
    try:
        await scheduler.run()
    finally:
        store.close()
    return read_columns(Path(job.spec.output.path), list(schema.names)).sort_by("id")
