"""Section ``team`` (issue 6): three runner processes at once on one model, at its real limit
(qwen3-32b-awq, 2 RPS): job ``alpha`` in one process and job ``beta`` split in two shards
(``--shard 1/2``, ``--shard 2/2``), each process configured at the model's full 2 RPS.

Measured twice, each time with a fresh emulator: first with the shared limiter (a throwaway
``redis-server`` named by ``BATCHRUN_LIMITS_URL``), then, for contrast, with each process
pacing alone. Everything is read at the emulator: the admitted rate over the limit, the 429
share and the most requests admitted in any 1-second window.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from batchrun.bench.data import CHAT_MODEL, NEWS, write_job, write_rows
from batchrun.bench.processes import Emulator, Run, Seen, child_env, run_batchrun
from batchrun.bench.redisserver import RedisServer
from batchrun.bench.table import Figure, Spec, skipped
from batchrun.bench.workspace import Workspace
from batchrun.job.catalog import MODELS
from batchrun.runner import LIMITS_URL_ENV

LATENCY_S = 0.05
LIMIT = MODELS[CHAT_MODEL].rps
PROCESSES = 3

SPECS = (
    Spec(f"team [4]: {PROCESSES} processes, one limit: rate ÷ limit", "", 0.95),
    Spec("  429 share, shared limiter", "%", 0.5, at_most=True),
    Spec("  most requests in a 1 s window, shared", "req", LIMIT, at_most=True),
    Spec(f"  429 share, {PROCESSES} processes pacing alone", "%"),
)


@dataclass(frozen=True)
class Launch:
    """One runner process: its job file, options and log."""

    job: Path
    options: tuple[str, ...]
    log: Path


@dataclass(frozen=True)
class Outcome:
    """What the emulator saw of the three processes, and how each of them ended."""

    seen: Seen
    runs: tuple[Run, ...]

    @property
    def note(self) -> str:
        walls = "/".join(f"{run.wall_s:.0f}" for run in self.runs)
        codes = "/".join(str(run.code) for run in self.runs)
        return f"walls (alpha, beta 1/2, 2/2) {walls} s, exits {codes}"


def team(ws: Workspace) -> list[Figure]:
    """Section ``team``: the three processes with the shared limiter, then without it."""
    work = ws.directory("team")
    rows = ws.sizes.team_rows
    inputs = (
        write_rows(work / "alpha.jsonl", rows // 2, NEWS),
        write_rows(work / "beta.jsonl", rows - rows // 2, NEWS),
    )
    return [*_shared(ws, work / "shared", inputs), _alone(ws, work / "alone", inputs)]


def _shared(ws: Workspace, work: Path, inputs: Sequence[Path]) -> list[Figure]:
    """The first three figures: the processes drawing from one limiter in Redis."""
    binary = shutil.which("redis-server")
    if binary is None:
        ws.say("team: redis-server is not on PATH: shared-limiter figures skipped")
        return skipped(SPECS[:3], "redis-server not on PATH")
    work.mkdir()
    with RedisServer(binary, work) as redis:
        ws.say(f"team: {PROCESSES} processes, 2 jobs, one limit in Redis (port {redis.port})")
        done = _run_all(work, inputs, {**_env(), LIMITS_URL_ENV: redis.url})
    seen, total = done.seen, done.seen.accepted + done.seen.throttled
    rate = seen.admitted_rate
    return [
        Figure(SPECS[0], rate / LIMIT, f"{rate:.3f} req/s admitted; {done.note}"),
        Figure(SPECS[1], 100 * seen.throttled_share, f"{seen.throttled} of {total} requests"),
        Figure(SPECS[2], seen.max_in_window, f"the model's limit: {LIMIT:g} per 1 s"),
    ]


def _alone(ws: Workspace, work: Path, inputs: Sequence[Path]) -> Figure:
    """The contrast: the same processes, each with its own pacer."""
    work.mkdir()
    ws.say(f"team: the same {PROCESSES} processes, each pacing alone")
    done = _run_all(work, inputs, _env())
    seen, total = done.seen, done.seen.accepted + done.seen.throttled
    note = f"{seen.throttled} of {total}; rate {seen.admitted_rate / LIMIT:.2f} of the limit, "
    note += f"window peak {seen.max_in_window}; {done.note}"
    return Figure(SPECS[3], 100 * seen.throttled_share, note)


def _env() -> dict[str, str]:
    """The runners' environment, without any shared limiter the bench's own may name."""
    env = child_env()
    env.pop(LIMITS_URL_ENV, None)
    return env


def _run_all(work: Path, inputs: Sequence[Path], env: Mapping[str, str]) -> Outcome:
    """Start the three processes at once against a fresh emulator; wait for all of them."""
    with Emulator(work, latency_s=LATENCY_S) as emulator:
        launches = _launches(work, emulator.base_url, inputs)
        with ThreadPoolExecutor(len(launches), thread_name_prefix="team") as pool:
            runs = pool.map(
                lambda it: run_batchrun(it.job, *it.options, env=env, log=it.log), launches
            )
            done = tuple(runs)
        return Outcome(emulator.seen(CHAT_MODEL), done)


def _launches(work: Path, base_url: str, inputs: Sequence[Path]) -> list[Launch]:
    """Job ``alpha`` in one process, job ``beta`` in two shards; each at the full limit."""
    alpha, beta = (
        write_job(work / f"{name}.toml", kind="chat", base_url=base_url, input_path=data, rps=LIMIT)
        for name, data in zip(("alpha", "beta"), inputs, strict=True)
    )
    return [
        Launch(alpha, (), work / "alpha.log"),
        Launch(beta, ("--shard", "1/2"), work / "beta-1of2.log"),
        Launch(beta, ("--shard", "2/2"), work / "beta-2of2.log"),
    ]
