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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from batchrun.endpoint import check_endpoint, open_endpoint
from batchrun.errors import JobError
from batchrun.input.checks import check_input, duplicate_lines, input_signature, open_input
from batchrun.job import Job
from batchrun.output.identity import check_identity
from batchrun.output.layout import OutputLayout, read_json, write_json
from batchrun.output.parts import done_ids, output_counts
from batchrun.output.store import Store, move_aside
from batchrun.output.writer import Writer
from batchrun.progress import Progress
from batchrun.scheduler import Plan, Scheduler
from batchrun.sender import PacerFactory, Sender
from batchrun.service.pacing import Pacer
from batchrun.service.teampacing import TeamLimiter, TeamSlots, default_workspace
from batchrun.shards import Shard
from batchrun.stats import RunStats
from batchrun.tasks import job_schema, task_for

LIMITS_URL_ENV = "BATCHRUN_LIMITS_URL"
PART_SECONDS = 300.0
"""The journal becomes a part at least this often, whatever ``part_rows`` says."""


@dataclass(frozen=True)
class RunOptions:
    limit: int | None = None
    fresh: bool = False
    retry_failed: bool = False
    shard: Shard | None = None
    progress: bool = True


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: stopped by a signal, or finished with this many failed rows in the
    whole output."""

    interrupted: bool
    failed_rows: int

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failed_rows


async def run_job(job: Job, options: RunOptions, out: TextIO = sys.stdout) -> RunOutcome:
    """``batchrun run``: do or resume the job."""
    files, kept = open_input(job)
    schema = job_schema(job, kept)
    output = Path(job.spec.output.path)
    if options.fresh and (aside := move_aside(output)):
        print(f"moved the old output aside to {aside}", file=out)
    rows = input_rows(job, files, output)
    stats = RunStats()
    progress = Progress(stats, enabled=options.progress)
    async with (
        open_endpoint(job.spec.endpoint, job.spec.run) as api,
        team_pacing(job, progress) as make_pacer,
    ):
        await check_endpoint(api, job.model_keys)
        store = Store(output, schema, options.shard).open()  # lock, then seal what was left
        try:
            check_identity(output, job.name, job.kind, job.fingerprint())
            done = done_ids(output, include_failed=not options.retry_failed)
            plan = Plan(job, files, done, options.limit, options.shard)
            progress.start(_rows_to_do(rows, len(done), options))
            task = task_for(job, schema)
            sender = Sender.for_job(job, task, api, stats, make_pacer=make_pacer)
            part_rows = job.spec.output.part_rows
            writer = Writer(store, schema, stats, progress, part_rows, PART_SECONDS)
            scheduler = Scheduler(plan, task, sender, writer, stats)
            await _run_with_signals(scheduler)
        finally:
            progress.close()
            stats.finished = time.monotonic()
            store.close()
            _report(job, output, stats, options.shard, out)
    return RunOutcome(scheduler.stopped, output_counts(output)["failed"])


def _rows_to_do(rows: int, done: int, options: RunOptions) -> int:
    left = max(rows - done, 0)
    if options.shard is not None:
        left = -(-left // options.shard.count)  # about a shard's share
    return min(left, options.limit) if options.limit is not None else left


@asynccontextmanager
async def team_pacing(job: Job, progress: Progress) -> AsyncIterator[PacerFactory]:
    """Pacers for the job's models: per process, or drawn from the team's limiter in Redis
    when ``[limits].shared`` (or ``BATCHRUN_LIMITS_URL``, which wins) names one."""
    url = os.environ.get(LIMITS_URL_ENV) or job.spec.limits.shared
    if not url:
        yield lambda model, rps: Pacer(rps)
        return
    workspace = job.spec.limits.workspace or default_workspace(job.spec.endpoint.base_url)

    def lost(now_lost: bool) -> None:
        progress.notice("shared limiter unreachable: paused, reconnecting" if now_lost else None)

    limiter = TeamLimiter(url, workspace, on_lost=lost)
    try:
        await limiter.check()
        yield lambda model, rps: Pacer(rps, TeamSlots(model, limiter))
    finally:
        await limiter.close()


def input_rows(job: Job, files: list[Path], output: Path) -> int:
    """The input's row count, after checking it has rows and no duplicate ids. The result is
    remembered beside the output (``_input.json``) for as long as the files do not change,
    so a resumed run does not read the whole input twice."""
    signature = input_signature(files)
    layout = OutputLayout(output)
    remembered = read_json(layout.input_file)
    if remembered and remembered.get("files") == signature:
        return int(remembered["rows"])
    check = check_input(job, files)
    if check.duplicate_count:
        raise JobError("\n".join(duplicate_lines(check)))
    if not check.rows:
        raise JobError(f"[input].path: {job.spec.input.path} holds no rows")
    if output.is_dir():
        write_json(layout.input_file, {"files": signature, "rows": check.rows})
    return check.rows


async def _run_with_signals(scheduler: Scheduler) -> None:
    """Run the scheduler; SIGINT/SIGTERM ask it to stop (a second one: at once)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, scheduler.request_stop)
    try:
        await scheduler.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _report(job: Job, output: Path, stats: RunStats, shard: Shard | None, out: TextIO) -> None:
    """Save the run's summary beside the parts, then print it with the whole output's counts
    (saved first: a closed stdout, ``| head``, must not cost the file)."""
    whole = output_counts(output)
    summary = {"job": job.name, "output": str(output), **stats.as_dict(), "output_rows": whole}
    lines = stats.lines()
    lines.append(f"output {output}: {whole['ok']} ok, {whole['failed']} failed (whole job)")
    try:
        write_json(OutputLayout(output).summary(shard.name if shard else None), summary)
    except OSError as exc:
        lines.append(f"could not save the summary in {output}: {exc}")
    print("\n".join(lines), file=out, flush=True)
