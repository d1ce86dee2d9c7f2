"""Section ``trace``: what the event log (``[run].event_log``, the trace ``batchrun report``
draws) costs the runner. The lifted chat job runs once to warm up, then three times with the
log and three without, in turn (so that a machine's drift cancels), each over a fresh output;
the figure is the extra runner CPU of a run with the log, as a share of the runner CPU
without it (medians). Single runs of this job vary by about 5 % here, hence the repeats.
"""

from __future__ import annotations

import shutil
import statistics

from batchrun.bench.data import NEWS, output_of, write_job, write_rows
from batchrun.bench.processes import Emulator, run_batchrun
from batchrun.bench.scale import LIFTED
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace

ROUNDS = 3
SPECS = (Spec("trace: event log's share of the runner's CPU", "%", 5.0, at_most=True),)


def trace(ws: Workspace) -> list[Figure]:
    work = ws.directory("trace")
    rows = ws.sizes.lifted_chat_rows
    data = write_rows(work / "news.jsonl", rows, NEWS)
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for logged in (False, *(True, False) * ROUNDS):
        ws.say(f"trace: chat, {rows:,} rows, limit lifted, event log {'on' if logged else 'off'}")
        with Emulator(work, rps_scale=LIFTED, name=f"emulator-{len(cpu[logged])}") as emulator:
            job = write_job(
                work / "trace.toml", kind="chat", base_url=emulator.base_url, input_path=data,
                rps=LIFTED, run={"event_log": logged},
            )  # fmt: skip
            shutil.rmtree(output_of(job), ignore_errors=True)
            cpu[logged].append(run_batchrun(job).cpu_s)
    off, on = statistics.median(cpu[False][1:]), statistics.median(cpu[True])
    per_1000 = f"{1000 * off / rows:.3f} s without, {1000 * on / rows:.3f} s with it"
    note = f"runner CPU per 1,000 rows: {per_1000} ({rows:,} rows, medians of {ROUNDS})"
    return [Figure(SPECS[0], 100 * (on - off) / off, note)]
