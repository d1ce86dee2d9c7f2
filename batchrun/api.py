"""batchrun from Python, for notebooks and scripts: the engine of ``batchrun run`` underneath.

    import batchrun
    job = batchrun.Job.from_dict({"kind": "chat", "model": "qwen3-32b-awq", ...})
    result = batchrun.run(job, limit=100)          # or, in async code: await batchrun.arun(job)
    frame = batchrun.read(job)

``run`` works in a plain script and inside a running event loop (Jupyter): there the job runs
in a thread with a loop of its own and the call returns when it is done. ``arun`` runs the job
in the caller's own loop (several at once with ``asyncio.gather`` or a TaskGroup); cancelling
it stops the run, saving what is answered. ``progress=False`` prints nothing: the summary is
in the result (``summary``, ``text``). Problems raise the
package's exceptions (``JobError``, ``OutputError``, ``FatalError``), never exit codes; Ctrl-C
stops the run gracefully (what is answered is saved) and raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa

from batchrun.errors import JobError
from batchrun.job.spec import Job, load_job
from batchrun.output.catalogue import checked_reading
from batchrun.output.done import settled_parts
from batchrun.output.parts import read_part
from batchrun.output.rows import OK
from batchrun.runner import RunOptions, RunOutcome, run_job

T = TypeVar("T")


@dataclass(frozen=True)
class RunResult:
    """What one run did, and where its output is."""

    output: Path
    rows_ok: int
    """Rows answered ok by this run."""
    rows_failed: int
    rows_skipped: int
    """Rows the output already held (done by earlier runs)."""
    output_ok: int
    """Ids answered ok in the whole output."""
    output_failed: int
    prompt_tokens: int
    completion_tokens: int
    interrupted: bool
    summary: dict[str, Any]
    """The run's ``_summary.json``: requests, 429s, retries and tokens per model."""
    text: str = ""
    """What the run printed (or, with ``progress=False``, would have): the plan's line and
    the summary's."""

    @property
    def ok(self) -> bool:
        """Whether the run finished and every row of the output is ok."""
        return not self.interrupted and self.output_failed == 0

    @classmethod
    def of(cls, job: Job, outcome: RunOutcome, text: str = "") -> RunResult:
        summary = outcome.summary
        models = summary.get("models", {}).values()
        return cls(
            output=Path(job.spec.output.path),
            rows_ok=summary.get("rows_ok", 0),
            rows_failed=summary.get("rows_failed", 0),
            rows_skipped=summary.get("rows_skipped_done", 0),
            output_ok=summary.get("output_rows", {}).get(OK, 0),
            output_failed=outcome.failed_rows,
            prompt_tokens=sum(model["prompt_tokens"] for model in models),
            completion_tokens=sum(model["completion_tokens"] for model in models),
            interrupted=outcome.interrupted,
            summary=summary,
            text=text,
        )


def run(
    job: Job | str | Path, *, limit: int | None = None, fresh: bool = False, progress: bool = True
) -> RunResult:
    """Run (or resume) ``job``, a ``Job`` or the path of a job file; at most ``limit`` rows
    of what is left; ``fresh`` moves an old output aside first; ``progress=False`` prints
    nothing."""
    job, options = _prepared(job, limit, fresh, progress)
    stop: list[Callable[[], None]] = []
    printed = _Printed(progress)
    started = dataclasses.replace(options, on_start=stop.append)
    outcome = _complete(run_job(job, started, printed), stop)
    return _result(job, outcome, printed)


async def arun(
    job: Job | str | Path, *, limit: int | None = None, fresh: bool = False, progress: bool = True
) -> RunResult:
    """``run`` in the running event loop: ``await batchrun.arun(job)``. Jobs on different
    outputs may run at once (``asyncio.gather``); signals stay the caller's (cancel the task
    to stop the run: what is answered is saved)."""
    job, options = _prepared(job, limit, fresh, progress)
    printed = _Printed(progress)
    outcome = await run_job(job, dataclasses.replace(options, signals=False), printed)
    return _result(job, outcome, printed)


def _prepared(
    job: Job | str | Path, limit: int | None, fresh: bool, progress: bool
) -> tuple[Job, RunOptions]:
    job = job if isinstance(job, Job) else load_job(job)
    if limit is not None and limit < 1:
        raise JobError(f"limit must be a positive number of rows, got {limit}")
    return job, RunOptions(limit=limit, fresh=fresh, progress=progress)


def _result(job: Job, outcome: RunOutcome, printed: _Printed) -> RunResult:
    if outcome.interrupted:  # what was answered is saved; the caller must not go on
        raise KeyboardInterrupt(f"{job.name}: interrupted; run it again to resume")
    return RunResult.of(job, outcome, printed.getvalue())


class _Printed(io.StringIO):
    """What a run prints: kept for the result, and shown on stdout unless quiet."""

    def __init__(self, shown: bool) -> None:
        super().__init__()
        self._shown = shown

    def write(self, text: str) -> int:
        if self._shown:
            sys.stdout.write(text)
        return super().write(text)

    def flush(self) -> None:
        if self._shown:
            sys.stdout.flush()


def read(job: Job | str | Path) -> pl.DataFrame:
    """The job's output as one DataFrame (every part, every shard), every page verified."""
    job = job if isinstance(job, Job) else load_job(job)
    output = Path(job.spec.output.path)
    with checked_reading(output):
        parts = [read_part(part) for part in settled_parts(output)]
    frame = pl.from_arrow(pa.concat_tables(parts, promote_options="default"))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _complete(work: Coroutine[Any, Any, T], stop: list[Callable[[], None]]) -> T:
    """Run ``work`` to its end: here, or in a thread of its own when this thread already
    runs an event loop (a notebook's). Ctrl-C while it runs there asks it to stop (through
    ``stop``) and waits for what is answered to be saved."""
    # Asked outside an ``except`` block, so that the job's own errors carry no chained
    # "no running event loop" error.
    if not _in_running_loop():
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchrun") as pool:
        future = pool.submit(asyncio.run, work)
        try:
            return future.result()
        except KeyboardInterrupt:
            for request_stop in stop:
                request_stop()
            return future.result()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
