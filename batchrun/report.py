"""``validate`` and ``status``: what a job would do, and how far it got, without a request."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.compute as pc

from batchrun.inputs import check_input, open_input
from batchrun.job import Job
from batchrun.results import FAILED, OK
from batchrun.store import read_columns


def validate_lines(job: Job) -> tuple[list[str], bool]:
    """The plan of a job, and whether the input is fit to run (no duplicate ids)."""
    files, _ = open_input(job)
    check = check_input(job, files)
    output = Path(job.spec.output.path)
    done = set(read_columns(output, ["id"]).column("id").to_pylist())
    todo = check.rows - len(done)
    requests = todo if job.kind == "chat" else math.ceil(todo / job.spec.run.batch_size)
    rate = sum(job.rps.values())
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
        lines.append(f"duplicate ids: {check.duplicate_count} rows repeat an earlier id, e.g.:")
        lines += [f"  {id_!r} at {', '.join(places)}" for id_, places in check.duplicates.items()]
        lines.append("make every id unique (each row's answer is stored under its id)")
    return lines, not check.duplicate_count


def status_lines(job: Job) -> list[str]:
    """Rows done / failed / left, read from the output alone."""
    output = Path(job.spec.output.path)
    table = read_columns(output, ["id", "status"])
    ok = int(pc.sum(pc.equal(table.column("status"), OK)).as_py() or 0)
    failed = int(pc.sum(pc.equal(table.column("status"), FAILED)).as_py() or 0)
    files, _ = open_input(job)
    total = check_input(job, files).rows
    return [
        f"job {job.name}: output {output}",
        f"{ok} ok, {failed} failed, {max(total - ok - failed, 0)} left of {total} rows",
    ]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
