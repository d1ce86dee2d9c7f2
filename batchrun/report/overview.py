"""``validate`` and ``status``, a job's overview: what it would do, and how far it got, without a
request."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from batchrun.errors import FatalError, JobError
from batchrun.input.checks import open_input
from batchrun.input.index import SHOWN, InputCheck, bad_lines, duplicate_lines
from batchrun.job.spec import Job
from batchrun.output.done import output_counts
from batchrun.output.rows import FAILED, OK
from batchrun.plan.diff import Changes, diff
from batchrun.plan.estimate import estimate_line
from batchrun.plan.kept_index import kept_index
from batchrun.service.endpoint import Unreachable, api_token, check_endpoint, open_endpoint
from batchrun.tasks import job_schema, task_for
from batchrun.tasks.base import Task


async def validate(job: Job) -> tuple[list[str], bool]:
    """``batchrun validate``: the plan, and whether the endpoint serves the job's models."""
    api_token(job.spec.endpoint)  # a key that cannot be sent is an error (none: not asked)
    lines, fit, job = _plan(job)
    models, served = await model_lines(job)
    return lines + models, fit and served


def validate_lines(job: Job) -> tuple[list[str], bool]:
    """The plan of a job, and whether the input is fit to run (no duplicate ids, no row
    that cannot be sent, at least one row)."""
    lines, fit, _ = _plan(job)
    return lines, fit


def _plan(job: Job) -> tuple[list[str], bool, Job]:
    """The plan's lines, whether the input is fit, and the job with the models its rows name
    (a batch file's)."""
    files, check, changes, task = _against_output(job)
    job = job.with_models(tuple(check.models)) if check.models else job
    requests = task.requests_for(changes.todo_count)
    rate = sum(job.rps[model] for model in job.models) or math.inf
    models = ", ".join(f"{m} at {job.rps[m]:g} RPS" for m in job.models)
    with changes:
        estimate = estimate_line(job, files, changes, requests, task.max_answer_tokens)
    lines = [
        f"job {job.name}: {job.kind}, {models}",
        f"input: {len(files)} file(s), {check.rows} rows, columns "
        f"{', '.join(job.input_columns)} present",
        f"output: {job.spec.output.path}: {changes.summary()}",
        f"to do: {changes.todo_count} rows in {requests} requests; the rate limit allows that "
        f"in no less than {_duration(requests / rate)}",
        estimate,
    ]
    if check.duplicate_count:
        lines += duplicate_lines(check)
    if check.unsendable and job.kind == "openai-batch":
        lines += bad_lines(job, check)[:-1]
        lines.append(
            "`run` refuses the file until they are fixed"
            if task.refuses_unsendable
            else "`run` writes each as a failed row with its reason and runs the rest"
        )
    elif check.unsendable:
        lines.append(
            f"{check.unsendable} rows cannot be sent, e.g. at "
            f"{', '.join(check.unsendable_at[:SHOWN])}; `run` writes them as failed"
        )
    if not check.rows:
        lines.append("the input holds no rows: point [input].path at your data")
    refused = check.unsendable and job.spec.input.bad_lines != "fail-line"
    fit = not check.duplicate_count and not refused and check.rows > 0
    return lines, fit, job


def _against_output(job: Job) -> tuple[list[Path], InputCheck, Changes, Task[Any]]:
    """The input's whole-input check and its diff against the output (no request sent)."""
    files, kept = open_input(job)
    task = task_for(job, job_schema(job, kept))
    output = Path(job.spec.output.path)
    with kept_index(job, files, output, task) as (index, check):
        changes = diff(index, output) if not check.duplicate_count else Changes()
    return files, check, changes, task


async def model_lines(job: Job) -> tuple[list[str], bool]:
    """Whether the endpoint serves every model the job names (without sending a row); an
    endpoint that cannot be asked is said plainly, and is not a failure of the job."""
    lenient = job.spec.input.bad_lines == "fail-line"  # unknown models fail their lines
    try:
        async with open_endpoint(job.spec.endpoint, job.spec.run) as api:
            served = await check_endpoint(api, None if lenient else job.models_named_by)
    except (JobError, Unreachable) as exc:  # no API key in the environment, or no answer
        return [f"models not checked: {exc}"], True
    except FatalError as exc:
        return [f"models: {exc}"], False
    if not served:
        return ["models not checked: the endpoint did not list its models"], True
    where = "the bundled emulator" if job.spec.endpoint.is_local else api.base_url
    known = [model for model in job.models_named_by if model in served]
    lines = [f"models: {', '.join(known)} served by {where}"] if known else []
    if unknown := [model for model in job.models_named_by if model not in served]:
        names = ", ".join(repr(model) for model in unknown)
        lines.append(f"models: {names} not served by {where}: their lines are written as failed")
    return lines, True


def status_lines(job: Job) -> list[str]:
    """Rows ok / failed in the output, and new / changed / unchanged / removed against the
    current input."""
    output = Path(job.spec.output.path)
    counts = output_counts(output)
    _, _, changes, _ = _against_output(job)
    changes.todo.close()
    return [
        f"job {job.name}: output {output}",
        f"{counts[OK]} ok, {counts[FAILED]} failed, {changes.todo_count} left of "
        f"{changes.total} rows",
        f"input: {changes.summary()}",
    ]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "forever"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
