"""One run of a job: open the endpoint (the bundled emulator for ``local``), check the job
against it and the output, wire the pipeline (task, sender, writer, scheduler), print and save
the summary. ``run_job`` returns what happened (``RunOutcome``); ``batchrun.cli`` turns that
into an exit code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from batchrun.errors import JobError, OutputError
from batchrun.input.checks import open_input
from batchrun.input.index import InputCheck, bad_lines, duplicate_lines
from batchrun.job.checks import redis_url_problem
from batchrun.job.shards import Shard
from batchrun.job.spec import Job
from batchrun.output.archive import Archive
from batchrun.output.done import output_counts
from batchrun.output.events import EventLog
from batchrun.output.identity import Identity
from batchrun.output.layout import WHOLE_JOB, OutputLayout, new_token, write_json
from batchrun.output.rows import FAILED, OK
from batchrun.output.store import Store, move_aside
from batchrun.plan.diff import Changes, diff
from batchrun.plan.kept_index import kept_index
from batchrun.report.metrics import check_port, served_metrics
from batchrun.send.pacing import Pacer
from batchrun.send.progress import Progress
from batchrun.send.scheduler import Plan, Scheduler
from batchrun.send.sender import PacerFactory, Sender
from batchrun.send.stats import RunStats
from batchrun.send.writer import Writer
from batchrun.service.client import Api
from batchrun.service.endpoint import check_endpoint, open_endpoint
from batchrun.tasks import job_schema, task_for
from batchrun.tasks.base import Task
from batchrun.version import WRITTEN_BY

LIMITS_URL_ENV = "BATCHRUN_LIMITS_URL"
PART_SECONDS = 300.0
"""The journal becomes a part at least this often, whatever ``part_rows`` says."""


@dataclass(frozen=True)
class RunOptions:
    limit: int | None = None
    fresh: bool = False
    retry_failed: bool = False
    redo: bool = False
    prune: bool = False
    shard: Shard | None = None
    progress: bool = True
    metrics_port: int | None = None
    on_start: Callable[[Callable[[], None]], None] | None = None
    """Given a thread-safe "stop" once the run sends (``batchrun.run`` in a notebook's
    thread: Ctrl-C there stops the run gracefully)."""
    signals: bool = True
    """Whether SIGINT/SIGTERM stop the run (in the main thread); ``batchrun.arun`` runs in
    the caller's loop, whose signals are the caller's."""
    pacers: PacerFactory | None = None
    """The models' pacers, made by the caller (``batchrun serve`` shares each model's slots
    among its batches); None: per process, or the team's Redis, as the job says."""
    on_stats: Callable[[RunStats], None] | None = None
    """Given the run's live counters once it knows what is left to do."""


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: stopped by a signal, or finished with this many failed rows in the
    whole output."""

    interrupted: bool
    failed_rows: int
    stdout_closed: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    """What ``_summary.json`` says of the run."""

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failed_rows


class Console:
    """The run's printed lines. A closed stdout (``batchrun run ... | head``) does not stop
    the work: the lines are dropped, and the outcome says so (exit 141 once all is saved)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed = False

    def say(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, file=self._stream, flush=True)
        except BrokenPipeError:
            self.closed = True


async def run_job(job: Job, options: RunOptions, out: TextIO = sys.stdout) -> RunOutcome:
    """``batchrun run``: do what the input holds and the output does not (yet, or any more)."""
    console = Console(out)
    check_port(options.metrics_port)
    files, kept = open_input(job)
    schema = job_schema(job, kept)
    task = task_for(job, schema)
    output = Path(job.spec.output.path)
    if options.fresh and (aside := move_aside(output)):
        console.say(f"moved the old output aside to {aside}")
    _create(output)
    with kept_index(job, files, output, task) as (index, check):
        refuse_unfit(job, check, task)
        job = job.with_models(tuple(check.models)) if check.models else job
        stats = RunStats(prices=job.prices)
        progress = Progress(stats, enabled=options.progress)
        token = run_token(options.shard)
        async with (
            open_endpoint(job.spec.endpoint, job.spec.run) as api,
            team_pacing(job, progress, options.pacers) as make_pacer,
        ):
            job = await served_models(api, job, task)
            identity = Identity(
                job.name, job.kind, job.fingerprint(), schema.names, redo=options.redo
            )
            store = Store(output, schema, options.shard).open(identity)
            trace = EventLog(OutputLayout(output).event_log(token), job.spec.run.event_log)
            try:
                with (
                    served_metrics(options.metrics_port, stats, progress),
                    _changes(job, task, index, store, options, console) as changes,
                ):
                    stats.rows_skipped = changes.unchanged - changes.retried
                    progress.start(changes.todo_count)
                    sender = Sender.for_job(
                        job, task, api, stats, make_pacer=make_pacer, observe=trace.record,
                        on_wait=progress.waiting,
                    )  # fmt: skip
                    part_rows = job.spec.output.part_rows
                    writer = Writer(store, schema, stats, progress, part_rows, PART_SECONDS)
                    plan = Plan(job, files, changes.todo, options.limit)
                    scheduler = Scheduler(plan, task, sender, writer, stats)
                    if options.on_stats is not None:
                        options.on_stats(stats)
                    await _run_with_signals(scheduler, options.on_start, options.signals)
            finally:
                progress.close()
                trace.close()
                stats.finished = time.monotonic()
                store.close()
                summary = _summarise(job, output, stats, options.shard, console, token)
    failed = summary["output_rows"][FAILED]
    return RunOutcome(scheduler.stopped, failed, console.closed, summary)


def run_token(shard: Shard | None) -> str:
    """The name of one run's files: ``<owner>-<start, ns, hex>-<pid>``."""
    return new_token(shard.name if shard else WHOLE_JOB)


def _create(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        OutputLayout(output).claim_state()
    except OSError as exc:
        raise OutputError(f"{output}: cannot create the output directory ({exc})") from None


def refuse_unfit(job: Job, check: InputCheck, task: Task[Any]) -> None:
    """JobError for an input a run cannot take: duplicate ids, no rows at all, or (a batch
    file) lines that cannot be sent."""
    if check.duplicate_count:
        raise JobError("\n".join(duplicate_lines(check)))
    if check.unsendable and task.refuses_unsendable:
        raise JobError("\n".join(bad_lines(job, check)))
    if not check.rows:
        raise JobError(f"[input].path: {job.spec.input.path} holds no rows")


async def served_models(api: Api, job: Job, task: Task[Any]) -> Job:
    """Check that the endpoint serves the job's models (FatalError if not). A batch file run
    line by line (``[input].bad_lines = "fail-line"``) only fails the lines naming a model
    it does not serve; the job then sends to the others."""
    if job.spec.input.bad_lines != "fail-line":
        await check_endpoint(api, job.models_named_by)
        return job
    served = await check_endpoint(api)
    unknown = [model for model in job.models if served and model not in served]
    task.unserved(unknown, served)
    kept = tuple(model for model in job.models if model not in unknown)
    return job.with_models(kept) if unknown and kept else job


def _changes(
    job: Job, task: Task[Any], index: Path, store: Store, options: RunOptions, out: Console
) -> Changes:
    """``--prune``, then what is left to do; say it in the run's first line."""
    output = Path(job.spec.output.path)
    if options.prune:
        pruned = store.prune(index)
        out.say(f"--prune: removed {pruned} rows no longer in the input")
    changes = diff(
        index, output, retry_failed=options.retry_failed, shard=options.shard,
        limit=options.limit, reuse=task.reuses_answers, redo=options.redo,
    )  # fmt: skip
    if changes.reusable:
        task.reuse_answers(Archive(output), changes.reusable)
    out.say(changes.summary())
    if changes.legacy:
        out.say(
            f"note: {changes.legacy} rows were written before batchrun recorded request "
            "hashes; they count as done for their ids (--redo sends them again)"
        )
    return changes


@asynccontextmanager
async def team_pacing(
    job: Job, progress: Progress, given: PacerFactory | None = None
) -> AsyncIterator[PacerFactory]:
    """Pacers for the job's models: ``given``, per process, or drawn from the team's limiter
    in Redis when ``[limits].shared`` (or ``BATCHRUN_LIMITS_URL``, which wins) names one."""
    if given is not None:
        yield given
        return
    from_env = os.environ.get(LIMITS_URL_ENV)
    if from_env and (problem := redis_url_problem(from_env)):
        raise JobError(f"{LIMITS_URL_ENV}: {problem}")
    url = from_env or job.spec.limits.shared
    if not url:
        yield lambda model, rps: Pacer(rps)
        return
    from batchrun.send.teampacing import (  # redis's client: loaded when used (6 MB)
        TeamLimiter,
        TeamSlots,
        default_workspace,
    )

    workspace = job.spec.limits.workspace or default_workspace(job.spec.endpoint.base_url)

    def lost(now_lost: bool) -> None:
        progress.notice("shared limiter unreachable: paused, reconnecting" if now_lost else None)

    limiter = TeamLimiter(url, workspace, on_lost=lost)
    try:
        await limiter.check()
        yield lambda model, rps: Pacer(rps, TeamSlots(model, limiter))
    finally:
        await limiter.close()


async def _run_with_signals(
    scheduler: Scheduler,
    on_start: Callable[[Callable[[], None]], None] | None = None,
    signals: bool = True,
) -> None:
    """Run the scheduler; SIGINT/SIGTERM ask it to stop (a second one: at once)."""
    loop = asyncio.get_running_loop()
    if on_start is not None:

        def request_stop() -> None:
            with suppress(RuntimeError):  # the loop is closed: the run has ended already
                loop.call_soon_threadsafe(scheduler.request_stop)

        on_start(request_stop)
    handled = signals and threading.current_thread() is threading.main_thread()  # (batchrun.run
    # from a notebook runs the job in a thread of its own: signals are the notebook's there)
    for sig in (signal.SIGINT, signal.SIGTERM) if handled else ():
        loop.add_signal_handler(sig, scheduler.request_stop)
    try:
        await scheduler.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM) if handled else ():
            loop.remove_signal_handler(sig)


def _summarise(
    job: Job, output: Path, stats: RunStats, shard: Shard | None, out: Console, token: str
) -> dict[str, Any]:
    """Save the run's summary beside the parts (the last run's, and this run's for good),
    then print it with the whole output's counts (saved first: a closed stdout, ``| head``,
    must not cost the file)."""
    whole = output_counts(output)
    summary: dict[str, Any] = {"job": job.name, "output": str(output), "run": token}
    summary |= {"written_by": WRITTEN_BY, **stats.as_dict()}
    summary |= {"output_rows": whole, "limits": job.rps}
    lines = stats.lines()
    lines.append(f"output {output}: {whole[OK]} ok, {whole[FAILED]} failed (whole job)")
    layout = OutputLayout(output)
    try:
        write_json(layout.run_record(token), summary)
        write_json(layout.summary(shard.name if shard else None), summary)
    except OSError as exc:
        lines.append(f"could not save the summary in {output}: {exc}")
    out.say("\n".join(lines))
    return summary
