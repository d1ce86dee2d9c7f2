"""The run's trace: attempts with the quota their answers stated, and the pacers' holds with
their reasons; traces written before those columns still read."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrun.errors import RetryableError
from batchrun.input.readers import input_files
from batchrun.job.spec import load_job
from batchrun.output.events import Attempt, EventLog, Hold, read_events, read_holds
from batchrun.output.layout import OutputLayout
from batchrun.output.store import Store
from batchrun.send import pacing
from batchrun.send.pacing import Pacer
from batchrun.send.progress import Progress
from batchrun.send.scheduler import Plan, Scheduler
from batchrun.send.sender import Sender
from batchrun.send.stats import RunStats
from batchrun.send.writer import Writer
from batchrun.service.answers import ChatAnswer, EmbeddingAnswer, RawAnswer
from batchrun.service.ratelimits import Quota
from batchrun.tasks import job_schema, task_for
from tests.support import FakeClock, news_rows


class WindowService:
    """A gateway with a per-minute window: every answer states what is left; the second
    call finds the window spent (LiteLLM's 429: retry after a whole window)."""

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, model: str, body: dict[str, Any], *, stream: bool = False) -> ChatAnswer:
        self.calls += 1
        if self.calls == 2:
            raise RetryableError("429 window", 429, window_reset=60.0)
        return ChatAnswer("a summary", None, "stop", 5, 3, Quota(120, 120 - self.calls))

    async def embed(self, model: str, body: dict[str, Any]) -> EmbeddingAnswer:
        raise NotImplementedError("a chat job")

    async def post(self, path: str, model: str, body: dict[str, Any]) -> RawAnswer:
        raise NotImplementedError("a chat job")


async def test_a_run_traces_each_answers_quota_and_each_hold_with_its_reason(
    make_job: Callable[..., Path],
) -> None:
    job = load_job(make_job(news_rows(3)))
    schema = job_schema(job, {"title": pa.string()})
    store = Store(Path(job.spec.output.path), schema).open()
    stats, clock, task = RunStats(), FakeClock(), task_for(job, schema)
    trace = EventLog(OutputLayout(Path("out")).event_log("run1"))
    sender = Sender.for_job(
        job, task, WindowService(), stats, rng=random.Random(1), sleep=clock.sleep,
        make_pacer=lambda model, rps: Pacer(rps, clock=clock, sleep=clock.sleep),
        observe=trace.record,
    )  # fmt: skip
    writer = Writer(store, schema, stats, Progress(stats, enabled=False), 100, 300.0)
    try:
        await Scheduler(
            Plan(job, input_files(job.spec.input.path)), task, sender, writer, stats
        ).run()
    finally:
        trace.close()
        store.close()

    attempts, holds = read_events(Path("out")), read_holds(Path("out"))
    answered = attempts.filter(attempts["outcome"] == "ok")
    assert answered["quota_limit"].to_list() == [120, 120, 120]
    assert sorted(answered["quota_remaining"].to_list()) == [116, 117, 119]
    assert attempts.filter(attempts["outcome"] == "429").height == 1
    assert holds["reason"].to_list() == [pacing.PROBE]  # no window start seen: a probe
    assert holds["hold_s"].to_list() == [pacing.PROBE_S]


def test_a_trace_written_before_the_pacing_columns_still_reads(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path / "out")
    layout.event_log("old").parent.mkdir(parents=True)
    old = pa.schema([("sent_at", pa.float64()), ("model", pa.string()), ("outcome", pa.string())])
    with pa.ipc.new_stream(str(layout.event_log("old")), old) as writer:
        writer.write_batch(pa.record_batch([[1.0], ["m"], ["ok"]], schema=old))
    log = EventLog(layout.event_log("new"))
    log.record(Attempt(2.0, 0.1, "m", "ok", 1, 5, 3, 1, 120, 7, None, 12.5))
    log.record(Hold(3.0, "m", 12.5, pacing.SPENT))
    log.close()

    attempts = read_events(tmp_path / "out")

    assert attempts["outcome"].to_list() == ["ok", "ok"]
    assert attempts["quota_remaining"].to_list() == [None, 7]
    assert attempts["window_left_s"].to_list() == [None, 12.5]
    assert read_holds(tmp_path / "out").select("model", "hold_s", "reason").rows() == [
        ("m", 12.5, pacing.SPENT)
    ]


def test_a_damaged_batch_of_a_trace_ends_its_reading(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path / "out")
    layout.state.mkdir(parents=True)
    log = EventLog(layout.event_log("run"))
    log.record(Attempt(1.0, 0.1, "alpha", "ok", 1, 5, 3, 1))
    log.flush()
    first_end = layout.event_log("run").stat().st_size
    log.record(Attempt(2.0, 0.1, "bravo", "ok", 1, 5, 3, 1))
    log.close()
    trace = bytearray(layout.event_log("run").read_bytes())
    middle = (first_end + len(trace) - 8) // 2  # (the stream ends with 8 bytes of its own)
    trace[middle - 4 : middle + 4] = bytes(b ^ 0xFF for b in trace[middle - 4 : middle + 4])
    layout.event_log("run").write_bytes(bytes(trace))

    assert read_events(tmp_path / "out")["model"].to_list() == ["alpha"]
