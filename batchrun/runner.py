"""One command's worth of work: open the endpoint (the bundled emulator for ``local``), check
the job against it and the output, run the scheduler, print and save the summary.

Exit codes: 0 every row ok; 1 finished but some rows failed; 2 bad job file, input or output;
3 fatal service error (401/403/404, unreachable endpoint); 130 interrupted (resumable).
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

import pyarrow.compute as pc

from batchrun.client import Api
from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import FatalError, JobError, RetryableError
from batchrun.inputs import check_input, duplicate_lines, input_signature, open_input
from batchrun.job import EndpointSpec, Job, RunSpec
from batchrun.parts import done_ids, read_columns
from batchrun.progress import Progress
from batchrun.results import FAILED, output_schema
from batchrun.scheduler import Plan, Scheduler
from batchrun.stats import RunStats
from batchrun.store import Store, check_identity, move_aside, read_json, write_json

EXIT_OK, EXIT_ROWS_FAILED, EXIT_BAD_JOB, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LOCAL_TOKEN = "local-emulator"


@dataclass(frozen=True)
class RunOptions:
    limit: int | None = None
    fresh: bool = False
    retry_failed: bool = False
    progress: bool = True


@asynccontextmanager
async def open_endpoint(endpoint: EndpointSpec, run: RunSpec) -> AsyncIterator[Api]:
    """An Api for an endpoint; for ``base_url = "local"`` the bundled emulator is started on a
    free 127.0.0.1 port for as long as the Api is used."""
    if endpoint.is_local:
        async with running_emulator(EmulatorConfig()) as base_url:
            token = os.environ.get(endpoint.api_key_env) or LOCAL_TOKEN
            async with _api(endpoint, run, base_url, token) as api:
                yield api
        return
    token = os.environ.get(endpoint.api_key_env, "").strip()
    if not token:
        raise JobError(
            f"no API key: set the environment variable {endpoint.api_key_env} to your SciBox "
            f"token for {endpoint.base_url} (it is never read from a file)"
        )
    async with _api(endpoint, run, endpoint.base_url, token) as api:
        yield api


def _api(endpoint: EndpointSpec, run: RunSpec, base_url: str, token: str) -> Api:
    return Api(
        base_url,
        token,
        timeout_s=run.timeout_s,
        idle_timeout_s=run.idle_timeout_s,
        key_env=endpoint.api_key_env,
        max_connections=run.max_in_flight if run.concurrency == "auto" else run.concurrency,
    )


async def check_endpoint(api: Api, models: tuple[str, ...] = ()) -> list[str]:
    """The served models; FatalError when the endpoint cannot be reached or lacks a model."""
    try:
        served = await api.list_models()
    except RetryableError as exc:
        if exc.status is not None:  # 5xx or 429 on the listing: the run itself will retry
            return []
        raise FatalError(
            f"cannot reach {api.base_url}: {exc}; check [endpoint].base_url and the network"
        ) from None
    missing = [m for m in models if served and m not in served]
    if missing:
        raise FatalError(
            f"{api.base_url} does not serve {', '.join(missing)} (it serves: {', '.join(served)}); "
            "fix `model` in the job file"
        )
    return served


async def run_job(job: Job, options: RunOptions, out: TextIO = sys.stdout) -> int:
    """``batchrun run``: do or resume the job; return the exit code."""
    files, kept = open_input(job)
    output = Path(job.spec.output.path)
    if options.fresh and (aside := move_aside(output)):
        print(f"moved the old output aside to {aside}", file=out)
    rows = input_rows(job, files, output)
    schema = output_schema(job.kind, kept, job.models)
    stats = RunStats()
    async with open_endpoint(job.spec.endpoint, job.spec.run) as api:
        await check_endpoint(api, job.models)
        check_identity(output, job.name, job.kind, job.fingerprint())
        store = Store(output, schema).open()
        try:
            done = done_ids(output, include_failed=not options.retry_failed)
            todo = min(rows - len(done), options.limit or rows)
            plan = Plan(job, files, schema, done, options.limit, job.spec.output.part_rows)
            progress = Progress(max(todo, 0), stats, enabled=options.progress)
            scheduler = Scheduler(plan, api, store, stats, progress)
            try:
                await _run_with_signals(scheduler)
            finally:
                progress.close()
        finally:
            stats.finished = time.monotonic()
            store.close()
            _report(job, output, stats, out)
    if scheduler.stopped:
        print("interrupted: run the same command again to resume", file=out)
        return EXIT_INTERRUPTED
    return EXIT_ROWS_FAILED if _failed_rows(output) else EXIT_OK


def input_rows(job: Job, files: list[Path], output: Path) -> int:
    """The input's row count, after checking it has rows and no duplicate ids. The result is
    remembered beside the output (``_input.json``) for as long as the files do not change,
    so a resumed run does not read the whole input twice."""
    signature = input_signature(files)
    remembered = read_json(output / "_input.json")
    if remembered and remembered.get("files") == signature:
        return int(remembered["rows"])
    check = check_input(job, files)
    if check.duplicate_count:
        raise JobError("\n".join(duplicate_lines(check)))
    if not check.rows:
        raise JobError(f"[input].path: {job.spec.input.path} holds no rows")
    if output.is_dir():
        write_json(output / "_input.json", {"files": signature, "rows": check.rows})
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


def _failed_rows(output: Path) -> int:
    status = read_columns(output, ["status"]).column("status")
    return int(pc.sum(pc.equal(status, FAILED)).as_py() or 0)


def _report(job: Job, output: Path, stats: RunStats, out: TextIO) -> None:
    """Print the run's summary and save it beside the parts."""
    for line in stats.lines():
        print(line, file=out)
    summary = {"job": job.name, "output": str(output), **stats.as_dict()}
    try:
        write_json(output / "_summary.json", summary)
    except OSError as exc:
        print(f"could not save the summary in {output}: {exc}", file=out)
