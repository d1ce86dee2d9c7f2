"""Section ``window``: batchrun behind per-minute windows, as LiteLLM Proxy counts them.

The emulator runs with ``--window-s 60 --gateway litellm``: each model admits its limit × 60
requests per calendar minute, states the budget in ``x-ratelimit-*`` headers and answers a 429
with LiteLLM's ``llm_provider-retry-after: 60``. Two figures: a job set to 6 RPS by mistake
(time ÷ the time the real 2 RPS allows), and two shards of one job sharing the key without
Redis (their rate ÷ the quota).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from batchrun.bench.data import CHAT_MODEL, NEWS, run_summary, write_job, write_rows
from batchrun.bench.processes import Emulator, Run, run_batchrun
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace
from batchrun.job.catalog import MODELS

LIMIT = MODELS[CHAT_MODEL].rps
GATEWAY = ("--window-s", "60", "--gateway", "litellm")
SPECS = (
    Spec("window [5]: job at 6 RPS, time ÷ ideal at 2", "", 1.15, at_most=True),
    Spec("window: 2 shards on one key, no Redis: rate ÷ limit", "", 0.90),
)


def window(ws: Workspace) -> list[Figure]:
    """Both scenarios side by side, each with its own emulator (its own windows)."""
    with ThreadPoolExecutor(2) as pool:
        mistaken = pool.submit(_mistaken_rate, ws)
        shared = pool.submit(_shared_key, ws)
        return [mistaken.result(), shared.result()]


def _mistaken_rate(ws: Workspace) -> Figure:
    work = ws.directory("window-rps6")
    rows = ws.sizes.window_rows
    data = write_rows(work / "news.jsonl", rows, NEWS)
    ws.say(f"window: {rows} rows at 6 RPS behind a 120-a-minute window")
    with Emulator(work, options=GATEWAY) as emulator:
        job = write_job(
            work / "rps6.toml", kind="chat", base_url=emulator.base_url, input_path=data, rps=6
        )
        run = run_batchrun(job)
        seen = emulator.seen(CHAT_MODEL)
    ideal = rows / LIMIT
    note = f"{rows} rows in {run.wall_s:.1f} s (ideal {ideal:.0f} s); {seen.throttled} 429s"
    return Figure(SPECS[0], run.wall_s / ideal, note)


def _shared_key(ws: Workspace) -> Figure:
    work = ws.directory("window-shared")
    rows = 2 * ws.sizes.window_rows
    data = write_rows(work / "news.jsonl", rows, NEWS)
    ws.say(f"window: {rows} rows in 2 shards sharing one 120-a-minute window, no Redis")
    with Emulator(work, options=GATEWAY) as emulator:
        job = write_job(
            work / "shared.toml", kind="chat", base_url=emulator.base_url, input_path=data
        )
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda i: _shard(job, i), (1, 2)))
        seen = emulator.seen(CHAT_MODEL)
    ok = sum(int(run_summary(job, f"s{i}of2")["rows_ok"]) for i in (1, 2))
    wall = max(run.wall_s for run in runs)
    note = f"{ok} rows in {wall:.1f} s; {seen.throttled} 429s"
    return Figure(SPECS[1], ok / wall / LIMIT, note)


def _shard(job: Path, index: int) -> Run:
    return run_batchrun(job, "--shard", f"{index}/2", log=job.with_suffix(f".s{index}.log"))
