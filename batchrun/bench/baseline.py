"""The plain baseline: the same chat job sent by the ``openai`` client (``AsyncOpenAI``) with
a semaphore of 8 and the client's default retries, as a team would write it in a notebook.

batchrun and the baseline each get a fresh emulator with the same settings; both are timed by
the wall time of the whole job (batchrun's includes starting its process).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import openai
import orjson

from batchrun.bench.data import (
    CHAT_MODEL,
    NEWS,
    PARAMS,
    SYSTEM,
    USER,
    run_summary,
    write_job,
    write_rows,
)
from batchrun.bench.processes import TOKEN, Emulator, run_batchrun
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace

CONCURRENCY = 8
LATENCY_S = 0.05

SPECS = (
    Spec("baseline: ok rows/s, batchrun ÷ openai"),
    Spec("baseline: openai failed rows", "rows"),
    Spec("baseline: openai 429s"),
)


@dataclass(frozen=True)
class Outcome:
    """How the baseline did: rows answered, rows that failed after the client's retries."""

    ok: int
    failed: int
    wall_s: float


def baseline(ws: Workspace) -> list[Figure]:
    """Section ``baseline``: batchrun, then the plain client, on the same chat job."""
    work = ws.directory("baseline")
    rows = ws.sizes.chat_rows
    data = write_rows(work / "news.jsonl", rows, NEWS)
    ws.say(f"baseline: batchrun on {rows} rows at 2 RPS, latency {LATENCY_S:g} s")
    with Emulator(work, latency_s=LATENCY_S, name="emulator-batchrun") as emulator:
        job = write_job(
            work / "chat.toml", kind="chat", base_url=emulator.base_url, input_path=data
        )
        run = run_batchrun(job)
    ours = int(run_summary(job)["rows_ok"])
    ws.say(f"baseline: openai.AsyncOpenAI with a semaphore of {CONCURRENCY} on the same rows")
    with Emulator(work, latency_s=LATENCY_S, name="emulator-openai") as emulator:
        theirs = asyncio.run(send_all(emulator.base_url, texts_of(data)))
        seen = emulator.seen(CHAT_MODEL)
    if not theirs.ok:
        raise ValueError(f"the openai baseline got no row answered ({theirs.failed} failed)")
    ratio = (ours / run.wall_s) / (theirs.ok / theirs.wall_s)
    total = seen.accepted + seen.throttled
    return [
        Figure(
            SPECS[0],
            ratio,
            f"batchrun {ours} ok in {run.wall_s:.1f} s; openai {theirs.ok} ok in "
            f"{theirs.wall_s:.1f} s",
        ),
        Figure(SPECS[1], theirs.failed, f"of {rows} (each tried 3 times at most)"),
        Figure(SPECS[2], seen.throttled, f"{100 * seen.throttled_share:.0f} % of {total} requests"),
    ]


def texts_of(path: Path) -> list[str]:
    """The ``text`` of every row of a JSONL input."""
    with path.open("rb") as lines:
        return [str(orjson.loads(line)["text"]) for line in lines if line.strip()]


async def send_all(base_url: str, texts: list[str]) -> Outcome:
    """Send one chat request per text through ``AsyncOpenAI``, ``CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    async with openai.AsyncOpenAI(base_url=base_url, api_key=TOKEN) as client:

        async def one(text: str) -> None:
            async with gate:
                try:
                    await client.chat.completions.create(
                        model=CHAT_MODEL,
                        messages=[
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": USER.format(text=text)},
                        ],
                        temperature=PARAMS["temperature"],
                        max_tokens=PARAMS["max_tokens"],
                    )
                except openai.OpenAIError:
                    counts["failed"] += 1
                else:
                    counts["ok"] += 1

        async with asyncio.TaskGroup() as group:
            for text in texts:
                group.create_task(one(text))
    return Outcome(counts["ok"], counts["failed"], time.monotonic() - started)
