"""``validate`` and ``status``: what a job would do, and how far it got, without a request."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from batchrun.endpoint import check_endpoint, open_endpoint
from batchrun.errors import FatalError, JobError
from batchrun.input.checks import check_input, duplicate_lines, open_input, rows_without_text
from batchrun.job import Job
from batchrun.output.parts import read_columns
from batchrun.output.rows import OK
from batchrun.tasks import job_schema, task_for


def validate_lines(job: Job) -> tuple[list[str], bool]:
    """The plan of a job, and whether the input is fit to run (no duplicate ids)."""
    files, kept = open_input(job)
    task = task_for(job, job_schema(job, kept))
    check = check_input(job, files)
    output = Path(job.spec.output.path)
    done = set(read_columns(output, ["id"]).column("id").to_pylist())
    todo = check.rows - len(done)
    requests = task.requests_for(todo)
    rate = sum(job.rps[model] for model in job.models)
    models = ", ".join(f"{m} at {job.rps[m]:g} RPS" for m in job.models)
    lines = [
        f"job {job.name}: {job.kind}, {models}",
        f"input: {len(files)} file(s), {check.rows} rows, columns "
        f"{', '.join(job.input_columns)} present",
        f"output: {output}: {len(done)} rows already there",
        f"to do: {todo} rows in {requests} requests; the rate limit allows that in no less "
        f"than {_duration(requests / rate)}",
    ]
    if check.duplicate_count:
        lines += duplicate_lines(check)
    missing, places = rows_without_text(job, files)
    if missing:
        lines.append(
            f"{missing} rows have no text to send ({', '.join(job.text_columns)} null, empty or "
            f"not text), e.g. at {', '.join(places)}; `run` writes them as failed"
        )
    if not check.rows:
        lines.append("the input holds no rows: point [input].path at your data")
    return lines, not check.duplicate_count and not missing and check.rows > 0


async def model_lines(job: Job) -> tuple[list[str], bool]:
    """Whether the endpoint serves every model the job names (without sending a row); an
    endpoint that cannot be asked is said plainly, and is not a failure of the job."""
    try:
        async with open_endpoint(job.spec.endpoint, job.spec.run) as api:
            served = await check_endpoint(api, job.model_keys)
    except JobError as exc:  # no API key in the environment
        return [f"models not checked: {exc}"], True
    except FatalError as exc:
        if str(exc).startswith("cannot reach"):
            return [f"models not checked: {exc}"], True
        return [f"models: {exc}"], False
    if not served:
        return ["models not checked: the endpoint did not list its models"], True
    where = "the bundled emulator" if job.spec.endpoint.is_local else api.base_url
    return [f"models: {', '.join(job.model_keys)} served by {where}"], True


def status_lines(job: Job) -> list[str]:
    """Rows done / failed / left, read from the output alone."""
    output = Path(job.spec.output.path)
    rows = pl.from_arrow(read_columns(output, ["id", "status"]))
    assert isinstance(rows, pl.DataFrame)
    answered = rows.group_by("id").agg(ok=(pl.col("status") == OK).any())
    ok = int(answered["ok"].sum())
    failed = len(answered) - ok
    files, _ = open_input(job)
    total = check_input(job, files).rows
    return [
        f"job {job.name}: output {output}",
        f"{ok} ok, {failed} failed, {max(total - ok - failed, 0)} left of {total} rows",
    ]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "forever"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
