"""Figures at the service's real limits: chat utilisation at two answer latencies, embeddings
packing, and the adaptive rate when the limit is half what the job believes.

Each figure is measured at the emulator: utilisation is the rate it admitted
((accepted - 1) / (last - first admission)) over the model's limit, so the runner's own
accounting is never trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchrun.bench.data import (
    CHAT_MODEL,
    EMBED_MODEL,
    NEWS,
    PASSAGE,
    run_summary,
    write_job,
    write_rows,
)
from batchrun.bench.processes import Emulator, run_batchrun
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace
from batchrun.job.catalog import MODELS

LATENCIES_S = (0.05, 5.0)
BATCH = 64
QUIET_S = 10.0
"""Convergence: the first 429 after which no other 429 comes within this many seconds."""


def chat_specs() -> tuple[Spec, ...]:
    specs: list[Spec] = []
    for latency in LATENCIES_S:
        specs.append(Spec(f"chat utilisation [1], latency {latency:g} s", "", 0.97))
        specs.append(Spec(f"  429 share, latency {latency:g} s", "%", 0.5, at_most=True))
    return tuple(specs)


def chat_utilisation(ws: Workspace) -> list[Figure]:
    """Section ``chat``: a chat job at the real limit, once per answer latency."""
    figures: list[Figure] = []
    specs = chat_specs()
    for number, latency in enumerate(LATENCIES_S):
        figures += _chat_at(ws, latency, specs[2 * number : 2 * number + 2])
    return figures


def _chat_at(ws: Workspace, latency: float, specs: Sequence[Spec]) -> list[Figure]:
    work = ws.directory(f"chat-{latency:g}")
    rows = ws.sizes.chat_rows
    data = write_rows(work / "news.jsonl", rows, NEWS)
    ws.say(f"chat: {rows} rows at 2 RPS, answer latency {latency:g} s")
    with Emulator(work, latency_s=latency) as emulator:
        job = write_job(
            work / "chat.toml", kind="chat", base_url=emulator.base_url, input_path=data
        )
        run = run_batchrun(job)
        seen = emulator.seen(CHAT_MODEL)
    rate = seen.admitted_rate
    total = seen.accepted + seen.throttled
    return [
        Figure(
            specs[0],
            rate / MODELS[CHAT_MODEL].rps,
            f"{rate:.3f} req/s admitted; wall {run.wall_s:.1f} s for {rows} rows",
        ),
        Figure(specs[1], 100 * seen.throttled_share, f"{seen.throttled} of {total} requests"),
    ]


EMBED_SPECS = (Spec(f"embeddings texts/s ÷ (7 RPS × {BATCH})", "", 0.95),)


def embeddings(ws: Workspace) -> list[Figure]:
    """Section ``embed``: distinct texts packed ``BATCH`` to a request at the real limit."""
    work = ws.directory("embed")
    texts = ws.sizes.embed_texts
    data = write_rows(work / "texts.jsonl", texts, PASSAGE)
    ws.say(f"embed: {texts} texts, batch {BATCH}, at 7 RPS")
    with Emulator(work) as emulator:
        job = write_job(
            work / "embed.toml",
            kind="embeddings",
            base_url=emulator.base_url,
            input_path=data,
            run={"batch_size": BATCH},
        )
        run = run_batchrun(job)
        seen = emulator.seen(EMBED_MODEL)
    per_request = texts / seen.accepted
    rate = seen.admitted_rate * per_request
    ceiling = MODELS[EMBED_MODEL].rps * BATCH
    note = f"{rate:.0f} texts/s at the server, {seen.accepted} requests, wall {run.wall_s:.1f} s"
    return [Figure(EMBED_SPECS[0], rate / ceiling, note)]


ADAPTIVE_SPECS = (
    Spec("adaptive: 429 share (job 4 RPS, limit 2)", "%", 5.0, at_most=True),
    Spec("adaptive: time to converge [3]", "s", 30.0, at_most=True),
    Spec("adaptive: rate settled on (paced_rps)", "req/s"),
)


def adaptive(ws: Workspace) -> list[Figure]:
    """Section ``adaptive``: the job believes 4 RPS, the emulator allows 2."""
    work = ws.directory("adaptive")
    rows = ws.sizes.adaptive_rows
    data = write_rows(work / "news.jsonl", rows, NEWS)
    ws.say(f"adaptive: {rows} rows configured at 4 RPS against a 2 RPS limit")
    with Emulator(work) as emulator:
        job = write_job(
            work / "adaptive.toml",
            kind="chat",
            base_url=emulator.base_url,
            input_path=data,
            rps=2 * MODELS[CHAT_MODEL].rps,
        )
        run = run_batchrun(job)
        seen = emulator.seen(CHAT_MODEL, times=True)
    if seen.first is None:
        raise ValueError("the emulator admitted no request")
    settled = run_summary(job)["models"][CHAT_MODEL]["paced_rps"]
    converged = convergence_s(seen.first, seen.throttled_at)
    after = sum(t > seen.first + converged for t in seen.throttled_at)
    total = seen.accepted + seen.throttled
    return [
        Figure(
            ADAPTIVE_SPECS[0],
            100 * seen.throttled_share,
            f"{seen.throttled} of {total}; wall {run.wall_s:.1f} s",
        ),
        Figure(ADAPTIVE_SPECS[1], converged, f"{after} isolated 429s after it"),
        Figure(ADAPTIVE_SPECS[2], float(settled), "limit 2 req/s; from _summary.json"),
    ]


def convergence_s(first_admitted: float, throttled_at: Sequence[float]) -> float:
    """Seconds from the first admission to the end of the first cluster of 429s: the first
    429 after which no other comes within ``QUIET_S`` (0 when there was no 429)."""
    times = sorted(throttled_at)
    for now, following in zip(times, [*times[1:], math.inf], strict=True):
        if following - now > QUIET_S:
            return max(now - first_admitted, 0.0)
    return 0.0
